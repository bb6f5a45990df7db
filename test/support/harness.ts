import { randomUUID } from "node:crypto";
import { pino } from "pino";
import { type CreditClients, createCreditClients } from "../../src/client/index.js";
import { type Config, parseConfig } from "../../src/config.js";
import { type Clock, FakeClock, systemClock } from "../../src/domain/clock.js";
import { type RunningService, startService } from "../../src/service.js";
import { TEST_DATABASE_URL, TEST_REDIS_URL } from "./env.js";

export interface TestService extends CreditClients {
  readonly service: RunningService;
  readonly clock: FakeClock;
  readonly config: Config;
  stop(): Promise<void>;
}

/** 2030-01-15T12:00:00Z: far from month ends, so month arithmetic in tests is unambiguous. */
export const TEST_EPOCH = new Date("2030-01-15T12:00:00.000Z");

/**
 * A real server on a free port, with a fake clock, against the test Postgres and Redis; called
 * through the generated client. The background sweeper is off unless asked for: tests sweep
 * explicitly with `service.sweep()`.
 */
export async function startTestService(env: Record<string, string> = {}, start = TEST_EPOCH): Promise<TestService> {
  const clock = new FakeClock(start);
  return { ...(await startOn(clock, env)), clock };
}

/**
 * As startTestService, on the system clock: for what must happen in real time (a hold reaching
 * its TTL, a bucket expiring, with nobody calling).
 */
export function startSystemClockService(env: Record<string, string> = {}): Promise<Omit<TestService, "clock">> {
  return startOn(systemClock, env);
}

async function startOn(clock: Clock, env: Record<string, string>): Promise<Omit<TestService, "clock">> {
  const config = parseConfig({
    DATABASE_URL: TEST_DATABASE_URL,
    REDIS_URL: TEST_REDIS_URL,
    GRPC_HOST: "127.0.0.1",
    GRPC_PORT: "0",
    DB_MIGRATE: "false",
    SWEEPER_ENABLED: "false",
    SHUTDOWN_GRACE_MS: "2000",
    METRICS_HOST: "127.0.0.1",
    METRICS_PORT: "0",
    ...env,
  });
  const log = pino({ level: process.env["TEST_LOG_LEVEL"] ?? "silent" });
  const service = await startService(config, clock, log);
  // Plain clients: no generated keys and no retries, so tests see exactly what the server answers.
  const clients = createCreditClients({
    baseUrl: `http://127.0.0.1:${service.port}`,
    caller: "test-suite",
    generateIdempotencyKeys: false,
    retry: { maxAttempts: 1 },
  });
  return { ...clients, service, config, stop: () => service.stop() };
}

/** A new account id for each test, so tests sharing one database never see each other's state. */
export function newAccountId(prefix = "acct"): string {
  return `${prefix}-${randomUUID()}`;
}

export function newKey(prefix = "key"): string {
  return `${prefix}-${randomUUID()}`;
}
