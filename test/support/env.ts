/**
 * Where the tests find Postgres and Redis (the real servers; never mocks). Each test run gets its
 * own database (see global-setup.ts), so concurrent runs on one machine do not disturb each other.
 */
const BASE_DATABASE_URL = process.env["TEST_DATABASE_BASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/credit_test";

export function runDatabaseUrl(runId: string): string {
  const url = new URL(BASE_DATABASE_URL);
  url.pathname = `${url.pathname}_${runId}`;
  return url.toString();
}

/** Set by global-setup.ts for the worker processes of this run. */
export const TEST_DATABASE_URL = process.env["TEST_DATABASE_URL"] ?? runDatabaseUrl("adhoc");
export const TEST_REDIS_URL = process.env["TEST_REDIS_URL"] ?? "redis://127.0.0.1:6379";
