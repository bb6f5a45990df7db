import { createHash, timingSafeEqual } from "node:crypto";

export type Role = "runner" | "billing" | "support" | "admin";

/** A calling service: its name (recorded as the caller on ledger entries) and its role. */
export interface Principal {
  readonly name: string;
  readonly role: Role;
}

/** One configured token: the SHA-256 of the secret, never the secret itself. */
export interface TokenEntry extends Principal {
  readonly sha256: Buffer;
}

const CREDIT = "/credit.v1.CreditService/";
const ADMIN = "/credit.v1.CreditAdminService/";
const EVENTS = "/credit.v1.CreditEventService/";
/** The event feed: billing, support and admin read it; runners have no use for it. */
const FEED = [`${EVENTS}ListEvents`, `${EVENTS}StreamEvents`];

const READS = [
  `${CREDIT}GetBalance`,
  `${CREDIT}WatchBalance`,
  `${CREDIT}GetSpendLimits`,
  `${CREDIT}GetUsage`,
  `${CREDIT}ForecastBalance`,
  `${CREDIT}GetReservation`,
  `${CREDIT}Quote`,
  `${CREDIT}GetRateCard`,
  `${CREDIT}ListPlans`,
  `${ADMIN}ListLedgerEntries`,
  `${ADMIN}Reconcile`,
  `${ADMIN}GetAutoTopUp`,
];

const TEAM_SETTINGS = [`${ADMIN}SetBalanceAlert`, `${ADMIN}SetConcurrencyLimit`, `${ADMIN}SetSpendLimit`, `${ADMIN}RemoveSpendLimit`];

/** Which methods each role may call; admin may call everything. */
const GRANTS: Readonly<Record<Exclude<Role, "admin">, ReadonlySet<string>>> = {
  runner: new Set(
    ["Reserve", "Commit", "Release", "ExtendReservation", "GetReservation", "GetBalance", "WatchBalance", "GetSpendLimits", "GetUsage", "ForecastBalance", "Quote", "GetRateCard"].map((m) => CREDIT + m),
  ),
  // Billing sets a customer's balance alert from the dashboard's settings; support sets one for a customer who asks.
  // Caps on running holds and spend limits are team settings too (the dashboard, through billing; support on request).
  billing: new Set([
    ...["ChangePlan", "PurchaseTopUp", "CompleteAutoTopUp", "FailAutoTopUp", "GetBalance", "WatchBalance", "GetSpendLimits", "GetUsage", "ForecastBalance", "ListPlans"].map((m) => CREDIT + m),
    ...TEAM_SETTINGS,
    ...FEED,
    // Auto top-up buys credits with the customer's card: the dashboard sets the rule through billing, which also answers its requests.
    `${ADMIN}SetAutoTopUp`,
    `${ADMIN}GetAutoTopUp`,
  ]),
  support: new Set([...READS, `${ADMIN}AdjustCredits`, ...TEAM_SETTINGS, ...FEED]),
};

export function mayCall(role: Role, path: string): boolean {
  return role === "admin" || GRANTS[role].has(path);
}

export function sha256(token: string): Buffer {
  return createHash("sha256").update(token, "utf8").digest();
}

/**
 * Parses AUTH_TOKENS: comma-separated `name:role:sha256hex` entries (hash a token with
 * `npm run cli -- hash-token <token>`). Throws naming the bad entry, and when there is no entry
 * at all: a value that holds no token must not read as "authentication off".
 */
export function parseTokens(value: string): TokenEntry[] {
  const entries = value
    .split(",")
    .map((e) => e.trim())
    .filter((e) => e.length > 0);
  if (entries.length === 0) throw new Error("AUTH_TOKENS holds no token: expected name:role:sha256hex,…");
  const parsed = entries.map((entry, i) => {
    const [name, role, hex, ...rest] = entry.split(":");
    if (!name || !/^[A-Za-z0-9._-]{1,64}$/.test(name) || rest.length > 0) throw new Error(`AUTH_TOKENS entry ${i + 1}: expected name:role:sha256hex`);
    if (role !== "runner" && role !== "billing" && role !== "support" && role !== "admin") {
      throw new Error(`AUTH_TOKENS entry ${i + 1} (${name}): role must be runner, billing, support or admin`);
    }
    if (!hex || !/^[0-9a-f]{64}$/i.test(hex)) throw new Error(`AUTH_TOKENS entry ${i + 1} (${name}): expected a 64-digit hex SHA-256`);
    return { name, role, sha256: Buffer.from(hex, "hex") } satisfies TokenEntry;
  });
  const seen = new Set<string>();
  for (const [i, p] of parsed.entries()) {
    if (seen.has(p.name)) throw new Error(`AUTH_TOKENS entry ${i + 1} (${p.name}): the name is already used`);
    seen.add(p.name);
  }
  return parsed;
}

/**
 * The principal a bearer token belongs to, or null. The token's hash is compared with every
 * configured hash in constant time (no early exit), so timing tells nothing about which matched.
 */
export function identify(tokens: readonly TokenEntry[], authorization: string | undefined): Principal | null {
  const match = /^Bearer\s+(\S{1,512})$/i.exec(authorization ?? "");
  if (!match) return null;
  const digest = sha256(match[1]!);
  let found: Principal | null = null;
  for (const entry of tokens) {
    if (timingSafeEqual(entry.sha256, digest) && found === null) found = { name: entry.name, role: entry.role };
  }
  return found;
}
