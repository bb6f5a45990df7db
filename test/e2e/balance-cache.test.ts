import net from "node:net";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Balance, ReleaseReason } from "../../src/client/index.js";
import { TEST_DATABASE_URL } from "../support/env.js";
import { newAccountId, newKey, startTestService, type TestService } from "../support/harness.js";
import { counterOf, sampleOf, scrape } from "../support/prometheus.js";

/**
 * The GetBalance cache, through real servers on one database: A and B cache (the defaults),
 * C runs with BALANCE_CACHE_ENTRIES=0. A write on one server must reach every other server's
 * cache through LISTEN/NOTIFY, a server's own writes must show at once, and nothing may be served
 * from the cache while the change feed is lost or after something on the account fell due.
 * A reaches Postgres through a proxy that holds back, by NOTIFY_DELAY_MS, everything sent to its
 * listening connection: A hears of its own writes through NOTIFY only late, so read-your-writes
 * on A can only come from the direct eviction of its own writes (PostgresChangeFeed.publish).
 */

const LISTENER = "credit-service-listener";
const NOTIFY_DELAY_MS = 300;
let proxy: net.Server;
let a: TestService;
let b: TestService;
let c: TestService;
let sql: pg.Client;

/** Waits until every server that caches listens: until then GetBalance never hits. */
async function feedsUp(...servers: TestService[]): Promise<void> {
  for (const t of servers) expect(await eventually(() => feedUp(t), (up) => up === 1, 5000)).toBe(1);
}

/** A proxy to the test Postgres that delays what the server sends to listening connections. */
async function slowListenerProxy(): Promise<{ server: net.Server; url: string }> {
  const target = new URL(TEST_DATABASE_URL);
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port || 5432), target.hostname);
    let slow = false;
    // The startup message (sent first, in clear on loopback) carries the application_name.
    client.once("data", (first) => (slow = first.includes(LISTENER)));
    client.pipe(upstream);
    upstream.on("data", (chunk) => (slow ? setTimeout(() => client.destroyed || client.write(chunk), NOTIFY_DELAY_MS) : client.write(chunk)));
    upstream.on("close", () => setTimeout(() => client.destroy(), slow ? NOTIFY_DELAY_MS : 0));
    client.on("close", () => upstream.destroy());
    for (const s of [client, upstream]) s.on("error", () => s.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = new URL(TEST_DATABASE_URL);
  url.host = `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  return { server, url: url.toString() };
}

beforeAll(async () => {
  const slow = await slowListenerProxy();
  proxy = slow.server;
  [a, b, c] = await Promise.all([
    startTestService({ DATABASE_URL: slow.url }),
    startTestService(),
    startTestService({ BALANCE_CACHE_ENTRIES: "0" }),
  ]);
  sql = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await sql.connect();
  await feedsUp(a, b);
});
afterAll(async () => {
  await sql?.end();
  await Promise.all([a?.stop(), b?.stop(), c?.stop()]);
  await new Promise((resolve) => proxy?.close(resolve));
});

/** Polls `read` every 20 ms until `done` or `ms` pass; the last value read. */
async function eventually<T>(read: () => Promise<T>, done: (value: T) => boolean, ms: number): Promise<T> {
  const deadline = performance.now() + ms;
  for (;;) {
    const value = await read();
    if (done(value) || performance.now() > deadline) return value;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function lookups(t: TestService): Promise<{ hit: number; miss: number }> {
  const text = await scrape(t.service.metricsPort);
  const of = (result: string) => counterOf(text, "credit_balance_cache_lookups_total", { result });
  return { hit: of("hit"), miss: of("miss") };
}

const feedUp = async (t: TestService) => sampleOf(await scrape(t.service.metricsPort), "credit_change_feed_up");
const balanceOn = async (t: TestService, accountId: string): Promise<Balance> => (await t.credit.getBalance({ accountId })).balance!;
const amounts = (balance: Balance) => ({ available: balance.available, held: balance.held });

async function fund(t: TestService, accountId: string, amount: bigint): Promise<void> {
  await t.admin.adjustCredits({ accountId, amount, reason: "balance cache test", idempotencyKey: newKey("fund") });
}

function reserve(t: TestService, accountId: string, amount: bigint, ttlSeconds = 600n) {
  return t.credit.reserve({ accountId, idempotencyKey: newKey("res"), cost: { case: "amount", value: amount }, ttl: { seconds: ttlSeconds } });
}

/**
 * Reads the account on `t` until a read is answered from the cache (a hit counted) and returns
 * that answer. More than one try is needed only when the NOTIFY of an earlier write reaches `t`
 * after its first read was cached (all servers share this process's event loop).
 */
async function cacheOn(t: TestService, accountId: string): Promise<Balance> {
  const deadline = performance.now() + 2000;
  let first = await balanceOn(t, accountId);
  for (;;) {
    const before = await lookups(t);
    const second = await balanceOn(t, accountId);
    const after = await lookups(t);
    if (after.hit === before.hit + 1 || performance.now() > deadline) {
      expect(after, "a read is answered from the cache").toEqual({ hit: before.hit + 1, miss: before.miss });
      expect(second).toEqual(first);
      return second;
    }
    first = second;
  }
}

describe("balance cache across servers", () => {
  // Proves another server's write evicts B's cached answer through NOTIFY (well before max age).
  it("a write on A reaches B's cached balance within 2 s, and B then agrees with A", async () => {
    const accountId = newAccountId("cache");
    await fund(a, accountId, 500n);
    expect(amounts(await cacheOn(b, accountId))).toEqual({ available: 500n, held: 0n });

    await reserve(a, accountId, 120n);
    const seen = await eventually(() => balanceOn(b, accountId), (x) => x.held === 120n, 2000);
    expect(amounts(seen)).toEqual({ available: 380n, held: 120n });
    expect(seen).toEqual(await balanceOn(a, accountId));
  });

  // Proves a server drops its own writes' entries before answering: no polling, and A's own
  // NOTIFY arrives NOTIFY_DELAY_MS late, so only the direct eviction can make this pass.
  it("read-your-writes on one server: GetBalance right after a Reserve shows the hold", async () => {
    const accountId = newAccountId("cache-ryw");
    await fund(a, accountId, 500n);
    // Let the late NOTIFY of the funding pass, so it cannot evict what is cached next.
    await new Promise((resolve) => setTimeout(resolve, 2 * NOTIFY_DELAY_MS));
    await cacheOn(a, accountId);
    const reserved = await reserve(a, accountId, 10n);
    const read = await balanceOn(a, accountId);
    expect(amounts(read)).toEqual({ available: 490n, held: 10n });
    expect(read).toEqual(reserved.balance);
  });

  // Proves a server keeps the books it committed: the first read after its own write is a hit,
  // and its own NOTIFY (arriving NOTIFY_DELAY_MS late) does not evict it; another server's does.
  it("the server that wrote answers the next read from the book it committed, until another server writes", async () => {
    const accountId = newAccountId("cache-warm");
    await fund(a, accountId, 500n);
    const before = await lookups(a);
    const reserved = await reserve(a, accountId, 25n);
    await new Promise((resolve) => setTimeout(resolve, 2 * NOTIFY_DELAY_MS)); // A's own NOTIFY has come and gone
    const read = await balanceOn(a, accountId);
    expect(await lookups(a), "answered from the cache").toEqual({ hit: before.hit + 1, miss: before.miss });
    expect(amounts(read)).toEqual({ available: 475n, held: 25n });
    expect(read).toEqual(reserved.balance);

    await reserve(b, accountId, 5n);
    const seen = await eventually(() => balanceOn(a, accountId), (x) => x.held === 30n, 2000);
    expect(amounts(seen)).toEqual({ available: 470n, held: 30n });
  });

  // Proves the book a server keeps after its own write is what Postgres holds: after each kind of
  // write, A's answer (from the cache) equals C's (no cache: read from Postgres), as_of aside.
  it("after every kind of write, the writer's cached answer equals a fresh read from Postgres", async () => {
    const accountId = newAccountId("cache-same");
    const sameOnAandC = async (step: string) => {
      const before = await lookups(a);
      const cached = await balanceOn(a, accountId);
      expect((await lookups(a)).hit, `${step}: A answered from its cache`).toBe(before.hit + 1);
      const fresh = await balanceOn(c, accountId);
      expect({ ...cached, asOf: undefined }, step).toEqual({ ...fresh, asOf: undefined });
    };
    await a.credit.purchaseTopUp({ accountId, pack: { case: "packId", value: "topup-500" }, paymentReference: newKey("pay") });
    await sameOnAandC("top-up");
    await fund(a, accountId, 300n);
    await sameOnAandC("adjustment");
    const r1 = (await reserve(a, accountId, 650n)).reservation!.reservationId;
    await sameOnAandC("reserve across two buckets");
    await a.credit.commit({ reservationId: r1, idempotencyKey: newKey(), actual: { case: "amount", value: 420n } });
    await sameOnAandC("partial commit");
    const r2 = (await reserve(a, accountId, 100n)).reservation!.reservationId;
    await a.credit.release({ reservationId: r2, idempotencyKey: newKey(), reason: ReleaseReason.CANCELLED, detail: "test" });
    await sameOnAandC("release");
    await a.credit.changePlan({ accountId, planId: "basic-monthly", idempotencyKey: newKey() });
    await sameOnAandC("subscribe");
    await reserve(a, accountId, 50n);
    await sameOnAandC("reserve with a subscription");
  });

  // Proves a lost feed turns B's cache off (the write's NOTIFY is lost with it), and that B
  // listens again within seconds, after which it caches and is invalidated as before.
  it("with its listener terminated B answers exactly from Postgres, then reconnects and caches again", async () => {
    const accountId = newAccountId("cache-lost");
    await fund(a, accountId, 500n);
    await cacheOn(b, accountId);

    const listeners = await sql.query<{ pid: number }>(
      `select pid from pg_stat_activity where application_name = $1 and datname = current_database()`,
      [LISTENER],
    );
    expect(listeners.rows, "A and B listen; C (cache off) does not").toHaveLength(2);
    // With a timeout, pg_terminate_backend waits until each backend has exited, so the FATAL
    // and the closed socket are already on B's listening connection before A writes below:
    // B learns of the loss asynchronously, but before the next request can reach it, so no poll.
    const killed = await sql.query<{ done: boolean }>(`select pg_terminate_backend(pid, 5000) as done from unnest($1::int[]) as pid`, [
      listeners.rows.map((r) => r.pid),
    ]);
    expect(killed.rows.map((r) => r.done)).toEqual([true, true]);

    // The loss itself drops B's entries; the second round shows B also keeps nothing while down.
    const before = await lookups(b);
    for (const [amount, available, held] of [[200n, 300n, 200n], [50n, 250n, 250n]] as const) {
      await reserve(a, accountId, amount);
      expect(amounts(await balanceOn(b, accountId))).toEqual({ available, held });
    }
    expect(await lookups(b), "not answered from the cache").toEqual({ hit: before.hit, miss: before.miss + 2 });
    // Still 0 after the reads, so they happened while the feed was down (the retry waits 1 s).
    expect(await feedUp(b)).toBe(0);

    await feedsUp(b, a);
    expect(amounts(await cacheOn(b, accountId))).toEqual({ available: 250n, held: 250n });
    // The new connection LISTENs: A's next write still reaches B's cache.
    await reserve(a, accountId, 50n);
    const seen = await eventually(() => balanceOn(b, accountId), (x) => x.held === 300n, 2000);
    expect(amounts(seen)).toEqual({ available: 200n, held: 300n });
  });

  // Proves BALANCE_CACHE_ENTRIES=0 serves nothing from a cache: no hit, and another server's
  // write shows at once (C has no listener, so a cached answer could only be stale).
  it("with BALANCE_CACHE_ENTRIES=0 no hit is ever counted and answers stay exact", async () => {
    const accountId = newAccountId("cache-off");
    await fund(a, accountId, 500n);
    const before = await lookups(c);
    for (let i = 0; i < 3; i++) expect(amounts(await balanceOn(c, accountId))).toEqual({ available: 500n, held: 0n });

    await reserve(a, accountId, 40n);
    expect(amounts(await balanceOn(c, accountId))).toEqual({ available: 460n, held: 40n });
    await reserve(c, accountId, 60n);
    expect(amounts(await balanceOn(c, accountId))).toEqual({ available: 400n, held: 100n });
    // These five reads: each one a miss, and C never counted a hit at all.
    expect(await lookups(c)).toEqual({ hit: 0, miss: before.miss + 5 });
    expect(await feedUp(c), "C does not listen, and has no feed gauge").toBeNull();
  });

  // Proves a cached answer ends at its hold's expiry, with no write and no notification: B
  // answers from the cache 1 ms before, and shows the hold released at the expiry instant.
  // Each server has its own FakeClock; both move together so they keep agreeing on time.
  it("a cached balance with an open hold ends when the hold expires", async () => {
    const accountId = newAccountId("cache-expiry");
    await fund(a, accountId, 500n);
    await reserve(a, accountId, 70n, 60n);
    expect(amounts(await cacheOn(b, accountId))).toEqual({ available: 430n, held: 70n });

    const advance = (ms: number) => [a, b].forEach((t) => t.clock.advance(ms));
    advance(60_000 - 1);
    const before = await lookups(b);
    expect(amounts(await balanceOn(b, accountId))).toEqual({ available: 430n, held: 70n });
    expect((await lookups(b)).hit, "still cached just before the expiry").toBe(before.hit + 1);

    advance(1);
    expect(amounts(await balanceOn(b, accountId))).toEqual({ available: 500n, held: 0n });
    expect((await lookups(b)).hit, "not served from the cache at the expiry").toBe(before.hit + 1);
    expect(amounts(await balanceOn(a, accountId))).toEqual({ available: 500n, held: 0n });
  });
});
