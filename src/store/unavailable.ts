import { FailureError } from "../domain/errors.js";

const CONNECTION_ERRNOS = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "ENOTFOUND", "EHOSTUNREACH", "EAI_AGAIN"]);

/**
 * True when an error means "Postgres cannot be reached or is going away", as opposed to a bug:
 * connection-level errnos, SQLSTATE class 08 (connection exception), 57P01-03 (shutdown,
 * crash, cannot connect now), 53300 (too many connections), and the pools' own time-outs.
 */
export function isStoreUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === "string") {
    // 08P01 (protocol violation) is a malformed message, not an outage: retrying cannot help.
    if (code === "08P01") return false;
    if (CONNECTION_ERRNOS.has(code) || code.startsWith("08") || ["57P01", "57P02", "57P03", "53300"].includes(code)) return true;
  }
  return /Timeout acquiring a connection|timeout exceeded when trying to connect|Connection terminated|connection is closed|is not queryable|Client has encountered a connection error|terminating connection/i.test(
    err.message,
  );
}

/** Rethrows an unavailable-store error as the STORE_UNAVAILABLE failure (gRPC UNAVAILABLE). */
export async function guardUnavailable<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (err) {
    if (isStoreUnavailable(err)) {
      throw new FailureError({
        reason: "STORE_UNAVAILABLE",
        message: "the ledger database is unavailable; retry later",
        metadata: {},
      });
    }
    throw err;
  }
}
