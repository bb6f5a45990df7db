import { format } from "node:util";
import { logVerbosity as LogVerbosity, setLogger, setLogVerbosity } from "@grpc/grpc-js";
import { type DestinationStream, type Level, type Logger, pino } from "pino";

/** Where a credential could sit in a structured log line; censored wherever it appears. */
const REDACTED_PATHS = [
  "authorization",
  "*.authorization",
  "headers.authorization",
  "*.headers.authorization",
  "metadata.authorization",
  "*.metadata.authorization",
];

/** The service's logger: JSON lines, with credentials censored from structured fields. */
export function createLogger(destination?: DestinationStream): Logger {
  return pino({ base: { service: "credit" }, redact: { paths: REDACTED_PATHS, censor: "[REDACTED]" } }, destination);
}

/**
 * grpc-js writes header values verbatim into its messages: a value it cannot accept ("Failed to
 * add metadata entry authorization: Bearer\t…", twice), and every header of every call in its
 * traces. A token's own characters (TABs, quotes, dots) cannot be trusted to mark where it ends,
 * so everything from the first mention of an authorization header or a bearer scheme is dropped.
 */
const CREDENTIAL = /(authorization|bearer)[\s\S]*$/i;

export function scrubCredentials(text: string): string {
  return text.replace(CREDENTIAL, "$1 [REDACTED]");
}

/** How much grpc-js itself should say at each pino level (GRPC_TRACE tracers speak at debug). */
function verbosityFor(level: Level | "silent"): LogVerbosity {
  if (level === "silent") return LogVerbosity.NONE;
  if (level === "trace" || level === "debug") return LogVerbosity.DEBUG;
  return level === "info" ? LogVerbosity.INFO : LogVerbosity.ERROR;
}

/**
 * grpc-js's own messages (it writes them to stderr with console.error by default) go through
 * `log`, scrubbed of credentials, at `log`'s level; GRPC_VERBOSITY no longer applies.
 */
export function routeGrpcLogs(log: Logger): void {
  const grpcLog = log.child({ component: "grpc-js" });
  const write =
    (level: "error" | "info" | "debug") =>
    (...args: unknown[]): void => {
      grpcLog[level](scrubCredentials(format(...args)));
    };
  setLogger({ error: write("error"), info: write("info"), debug: write("debug") });
  setLogVerbosity(verbosityFor(log.level as Level | "silent"));
}
