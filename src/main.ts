import { configWarnings, loadConfig } from "./config.js";
import { systemClock } from "./domain/clock.js";
import { createLogger, routeGrpcLogs } from "./observability/logger.js";
import { startService } from "./service.js";

const log = createLogger();

async function main(): Promise<void> {
  const config = loadConfig();
  log.level = config.LOG_LEVEL;
  routeGrpcLogs(log);
  for (const warning of configWarnings(config)) log.warn({ environment: config.ENVIRONMENT }, warning);
  const service = await startService(config, systemClock, log);
  // The ready line is written whatever LOG_LEVEL says: scripts and operators wait for it.
  log.child({}, { level: "info" }).info({ port: service.port, metricsPort: service.metricsPort }, "credit service listening");

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "shutting down");
    service.stop().then(
      () => {
        log.info("stopped");
        process.exit(0);
      },
      (err: unknown) => {
        log.error({ err }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}

main().catch((err: unknown) => {
  log.fatal({ err }, "failed to start");
  process.exit(1);
});
