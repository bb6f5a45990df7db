import { durationFromMs, timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import pg from "pg";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { type BalanceUpdate, ConnectError, createCreditClients, type CreditClients, CreditService } from "../../src/client/index.js";
import { TEST_DATABASE_URL } from "../support/env.js";
import { spawnServer } from "../support/server-process.js";
import { newAccountId, newKey, startSystemClockService, startTestService, type TestService } from "../support/harness.js";
import { StreamRecorder } from "../support/watch.js";

/**
 * WatchBalance through the real server and the generated client: the first message, then one
 * after every change in sequence order, from this server, from another server on the same
 * database, and from what falls due with no call at all (measured against the due instant).
 */

const open: StreamRecorder[] = [];
afterEach(() => {
  for (const r of open.splice(0)) r.cancel();
});

function watch(c: CreditClients, accountId: string): StreamRecorder {
  const abort = new AbortController();
  const recorder = new StreamRecorder(c.credit.watchBalance({ accountId }, { signal: abort.signal, timeoutMs: 0 }), abort);
  open.push(recorder);
  return recorder;
}

function fund(c: CreditClients, accountId: string, amount: bigint, expiresAt?: Date) {
  return c.admin.adjustCredits({
    accountId,
    amount,
    reason: "watch test funding",
    idempotencyKey: newKey("fund"),
    ...(expiresAt && { expiresAt: timestampFromDate(expiresAt) }),
  });
}

function reserve(c: CreditClients, accountId: string, amount: bigint, ttlSeconds = 60n) {
  return c.credit.reserve({ accountId, idempotencyKey: newKey("res"), cost: { case: "amount", value: amount }, ttl: { seconds: ttlSeconds } });
}

/** Sequences strictly increase from one message to the next. */
function expectIncreasing(r: StreamRecorder): void {
  const sequences = r.messages.map((m) => m.sequence);
  for (let i = 1; i < sequences.length; i++) expect(sequences[i]!, `message ${i} of ${sequences.join(",")}`).toBeGreaterThan(sequences[i - 1]!);
}

describe("WatchBalance on one server", () => {
  let t: TestService;
  beforeAll(async () => {
    t = await startTestService();
  });
  afterAll(async () => {
    await t.stop();
  });

  it("sends the current balance and its sequence first", async () => {
    const accountId = newAccountId("watch");
    await fund(t, accountId, 500n);
    await reserve(t, accountId, 20n);
    const now = await t.credit.getBalance({ accountId });
    const w = watch(t, accountId);
    const first = (await w.until(() => true)).message;
    expect(first.sequence).toBe(now.sequence);
    expect(first.sequence).toBe(2n);
    expect([first.balance?.accountId, first.balance?.available, first.balance?.held]).toEqual([accountId, 480n, 20n]);
  });

  it("a Reserve and its Commit arrive in order, each with the next sequence", async () => {
    const accountId = newAccountId("watch");
    await fund(t, accountId, 1000n);
    const w = watch(t, accountId);
    await w.until((m) => m.sequence === 1n);
    const held = await reserve(t, accountId, 100n);
    const afterHold = await w.until((m) => m.sequence === 2n);
    expect([afterHold.message.balance?.available, afterHold.message.balance?.held]).toEqual([900n, 100n]);
    await t.credit.commit({ reservationId: held.reservation!.reservationId, idempotencyKey: newKey("commit"), actual: { case: "amount", value: 80n } });
    const afterCommit = await w.until((m) => m.sequence === 3n);
    expect([afterCommit.message.balance?.available, afterCommit.message.balance?.held]).toEqual([920n, 0n]);
    expect(w.messages.map((m) => m.sequence)).toEqual([1n, 2n, 3n]);
  });

  it("many watchers of one account share one upstream: each change is read once and reaches all of them", async () => {
    const accountId = newAccountId("watch-many");
    await fund(t, accountId, 1000n);
    const accountsBefore = t.service.watch.accounts;
    const watchers = Array.from({ length: 50 }, () => watch(t, accountId));
    await Promise.all(watchers.map((w) => w.until((m) => m.sequence === 1n)));
    expect(t.service.watch.accounts).toBe(accountsBefore + 1);
    const readsBefore = t.service.watch.reads;
    for (let i = 1n; i <= 5n; i++) await reserve(t, accountId, 10n);
    await Promise.all(watchers.map((w) => w.until((m) => m.sequence === 6n)));
    for (const w of watchers) {
      expectIncreasing(w);
      expect(w.messages.at(-1)?.balance?.held).toBe(50n);
    }
    // Five changes: at most one read each (fewer when changes come together), not one per watcher.
    expect(t.service.watch.reads - readsBefore).toBeLessThanOrEqual(5);
    for (const w of watchers) w.cancel();
    await Promise.all(watchers.map((w) => w.end()));
  });

  it("a watcher that stops reading delays nobody and, when it reads again, skips to the latest state", async () => {
    const accountId = newAccountId("watch-slow");
    await fund(t, accountId, 1_000_000n);
    // A client whose HTTP/2 stream window is tiny: a handful of unread messages fill it, and the
    // server's sends to it wait (its mailbox then keeps only the latest state).
    const transport = createGrpcTransport({ baseUrl: `http://127.0.0.1:${t.service.port}`, nodeOptions: { settings: { initialWindowSize: 512 } } });
    const slowAbort = new AbortController();
    const slow = createClient(CreditService, transport).watchBalance({ accountId }, { signal: slowAbort.signal, timeoutMs: 0 })[Symbol.asyncIterator]();
    try {
      expect((await slow.next()).value?.sequence).toBe(1n);
      const fast = watch(t, accountId);
      await fast.until((m) => m.sequence === 1n);
      const CHANGES = 150;
      for (let i = 0; i < CHANGES; i++) await fund(t, accountId, 1n);
      const last = BigInt(CHANGES + 1);
      // The fast watcher saw every change through while the slow one read nothing.
      await fast.until((m) => m.sequence === last);
      expectIncreasing(fast);

      const seen: bigint[] = [];
      for (;;) {
        const next = await slow.next();
        if (next.done) break;
        seen.push(next.value.sequence);
        if (next.value.sequence === last) break;
      }
      expect(seen.at(-1)).toBe(last);
      for (let i = 1; i < seen.length; i++) expect(seen[i]!).toBeGreaterThan(seen[i - 1]!);
      // What was already on its way, then the latest: most intermediate states were skipped.
      expect(seen.length).toBeLessThan(CHANGES / 2);
    } finally {
      slowAbort.abort();
    }
  });

  it("the account is let go when its last watcher leaves", async () => {
    const accountId = newAccountId("watch-leave");
    await fund(t, accountId, 10n);
    const before = t.service.watch.accounts;
    const w = watch(t, accountId);
    await w.until(() => true);
    expect(t.service.watch.accounts).toBe(before + 1);
    w.cancel();
    await w.end();
    // The server learns of the cancel asynchronously: wait for it, bounded.
    const deadline = Date.now() + 5000;
    while (t.service.watch.accounts !== before && Date.now() < deadline) await new Promise((r) => setImmediate(r));
    expect(t.service.watch.accounts).toBe(before);
  });

  it("AdvanceTestClock pushes the resulting balance: a hold its step made overdue is released", async () => {
    const accountId = newAccountId("watch-clock");
    await fund(t, accountId, 300n);
    await reserve(t, accountId, 100n, 60n);
    const w = watch(t, accountId);
    await w.until((m) => m.sequence === 2n && m.balance?.held === 100n);
    const stepped = await t.admin.advanceTestClock({ accountId, by: { seconds: 61n, nanos: 0 }, idempotencyKey: newKey("clock") });
    const after = await w.until((m) => m.balance?.held === 0n);
    expect(after.message.sequence).toBe(3n);
    expect(after.message.balance?.available).toBe(300n);
    expect(timestampDate(after.message.balance!.asOf!).getTime()).toBeGreaterThanOrEqual(timestampDate(stepped.now!).getTime());
    expectIncreasing(w);
  });

  it("an unknown account is NOT_FOUND and a malformed id INVALID_ARGUMENT, as GetBalance", async () => {
    const missing = watch(t, newAccountId("nobody"));
    expect((await missing.end())?.code).toBe(Code.NotFound);
    expect(missing.reason()).toBe("ACCOUNT_NOT_FOUND");
    const bad = watch(t, "not an id!");
    expect((await bad.end())?.code).toBe(Code.InvalidArgument);
    expect(bad.reason()).toBe("INVALID_FIELD");
    expect(missing.messages).toEqual([]);
  });
});

describe("WatchBalance limits", () => {
  it("one account's watchers on one server are capped (WATCH_MAX_PER_ACCOUNT): one more is RESOURCE_EXHAUSTED", async () => {
    const t = await startTestService({ WATCH_MAX_PER_ACCOUNT: "2" });
    try {
      const accountId = newAccountId("watch-cap");
      await fund(t, accountId, 10n);
      const [w1, w2] = [watch(t, accountId), watch(t, accountId)];
      await Promise.all([w1.until(() => true), w2.until(() => true)]);
      const third = watch(t, accountId);
      expect((await third.end())?.code).toBe(Code.ResourceExhausted);
      expect(third.reason()).toBe("TOO_MANY_WATCHERS");
      // Another account is not affected, and a place freed is taken again.
      const otherId = newAccountId("watch-cap");
      await fund(t, otherId, 10n);
      await watch(t, otherId).until(() => true);
      w1.cancel();
      await w1.end();
      const deadline = Date.now() + 5000;
      while (t.service.watch.watchers > 2 && Date.now() < deadline) await new Promise((r) => setImmediate(r));
      await watch(t, accountId).until(() => true);
    } finally {
      for (const r of open.splice(0)) r.cancel();
      await t.stop();
    }
  });
});

describe("WatchBalance across servers", () => {
  let a: TestService;
  let b: TestService;
  let sql: pg.Client;
  beforeAll(async () => {
    [a, b] = await Promise.all([startTestService(), startTestService()]);
    sql = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await sql.connect();
  });
  afterAll(async () => {
    await Promise.all([a.stop(), b.stop(), sql.end()]);
  });

  /** Cuts every server's listening connection in this database (each reconnects after 1 s). */
  async function cutFeeds(): Promise<void> {
    const killed = await sql.query<{ done: boolean }>(
      `select pg_terminate_backend(pid, 5000) as done from pg_stat_activity
        where application_name = 'credit-service-listener' and datname = current_database()`,
    );
    expect(killed.rows.length).toBeGreaterThan(0);
  }

  it("a lost feed, once back, re-sends the current state, and a change made while it was lost arrives", async () => {
    const accountId = newAccountId("watch-lost");
    await fund(a, accountId, 100n);
    const w = watch(a, accountId);
    await w.until((m) => m.sequence === 1n);
    await cutFeeds();
    // Nothing changed: the watcher is told the current state again once A listens again.
    const resent = await w.until((m) => m.sequence === 1n, 10_000, 1);
    expect(resent.message.balance?.available).toBe(100n);
    await cutFeeds();
    // B's write goes unnoticed by A's lost listener; A reads it when its feed is back.
    await reserve(b, accountId, 30n);
    const missed = await w.until((m) => m.sequence === 2n);
    expect(missed.message.balance?.held).toBe(30n);
    const sequences = w.messages.map((m) => m.sequence);
    for (let i = 1; i < sequences.length; i++) expect(sequences[i]!).toBeGreaterThanOrEqual(sequences[i - 1]!);
  });

  it("with the balance cache off a server still learns of other servers' changes for its watchers", async () => {
    const c = await startTestService({ BALANCE_CACHE_ENTRIES: "0" });
    try {
      const accountId = newAccountId("watch-uncached");
      await fund(a, accountId, 100n);
      const w = watch(c, accountId);
      await w.until((m) => m.sequence === 1n);
      await reserve(a, accountId, 10n);
      await reserve(b, accountId, 20n);
      expect((await w.until((m) => m.sequence === 3n)).message.balance?.held).toBe(30n);
      expectIncreasing(w);
    } finally {
      await c.stop();
    }
  });

  it("a change made on server B reaches a watcher on server A", async () => {
    const accountId = newAccountId("watch-ab");
    await fund(a, accountId, 400n);
    const w = watch(a, accountId);
    await w.until((m) => m.sequence === 1n);
    await reserve(b, accountId, 150n);
    const pushed = await w.until((m) => m.sequence === 2n);
    expect(pushed.message.balance?.held).toBe(150n);
    await fund(b, accountId, 5n);
    expect((await w.until((m) => m.sequence === 3n)).message.balance?.available).toBe(255n);
    expectIncreasing(w);
  });

  it("server shutdown ends its streams with UNAVAILABLE (SHUTTING_DOWN)", async () => {
    const c = await startTestService();
    const accountId = newAccountId("watch-stop");
    await fund(c, accountId, 10n);
    const w = watch(c, accountId);
    await w.until(() => true);
    await c.stop();
    expect((await w.end())?.code).toBe(Code.Unavailable);
    expect(w.reason()).toBe("SHUTTING_DOWN");
  });
});

describe("WatchBalance on what falls due with no call (system clock)", () => {
  let t: Omit<TestService, "clock">;
  beforeAll(async () => {
    // The background sweeper stays off (the harness default): only the watch's own due timer acts.
    t = await startSystemClockService();
  });
  afterAll(async () => {
    await t.stop();
  });

  it("a hold reaching its TTL is pushed within 2 s of its expiry", async () => {
    const accountId = newAccountId("watch-ttl");
    await fund(t, accountId, 100n);
    const held = await reserve(t, accountId, 40n, 1n);
    const expiresAt = timestampDate(held.reservation!.expiresAt!).getTime();
    const w = watch(t, accountId);
    const released = await w.until((m) => m.balance?.held === 0n);
    expect(released.message.balance?.available).toBe(100n);
    expect(released.message.sequence).toBe(3n);
    expect(released.receivedAtMs).toBeGreaterThanOrEqual(expiresAt);
    expect(released.receivedAtMs - expiresAt).toBeLessThanOrEqual(2000);
  });

  it("a bucket expiring a second ahead is pushed within 2 s of its expires_at", async () => {
    const accountId = newAccountId("watch-expiry");
    await fund(t, accountId, 70n);
    const expiresAt = new Date(Date.now() + 1000);
    await fund(t, accountId, 30n, expiresAt);
    const w = watch(t, accountId);
    await w.until((m) => m.balance?.available === 100n);
    const expired = await w.until((m) => m.balance?.available === 70n);
    expect(expired.message.sequence).toBe(3n);
    expect(expired.receivedAtMs).toBeGreaterThanOrEqual(expiresAt.getTime());
    expect(expired.receivedAtMs - expiresAt.getTime()).toBeLessThanOrEqual(2000);
  });

  it("a scheduled downgrade and the new period's allowance, due a second ahead on a test clock, are pushed within 2 s", async () => {
    const accountId = newAccountId("watch-period");
    await t.credit.changePlan({ accountId, planId: "pro-monthly", idempotencyKey: newKey("plan") });
    const scheduled = await t.credit.changePlan({ accountId, planId: "basic-monthly", idempotencyKey: newKey("plan") });
    const periodEnd = timestampDate(scheduled.balance!.subscription!.billingPeriodEnd!).getTime();
    const accountNow = timestampDate(scheduled.balance!.asOf!).getTime();
    // The account's clock to one second before its billing period ends: the account's time is
    // server time plus the step, so the change falls due a second from now by the server's clock.
    const stepMs = periodEnd - accountNow - 1000;
    await t.admin.advanceTestClock({ accountId, by: durationFromMs(stepMs), idempotencyKey: newKey("clock") });
    const dueAtServerMs = periodEnd - stepMs;
    const w = watch(t, accountId);
    const before = await w.until(() => true);
    expect(before.message.balance?.subscription?.planId).toBe("pro-monthly");
    const renewed = await w.until((m) => m.balance?.subscription?.planId === "basic-monthly");
    expect(renewed.message.balance?.available).toBe(1000n);
    expect(renewed.message.sequence).toBeGreaterThan(before.message.sequence);
    expect(renewed.receivedAtMs).toBeGreaterThanOrEqual(dueAtServerMs);
    expect(renewed.receivedAtMs - dueAtServerMs).toBeLessThanOrEqual(2000);
  });
});

describe("the SDK's watchBalance", () => {
  it("reconnects across a server restart and yields no sequence twice, nor an older one", async () => {
    let server = await startTestService();
    const other = await startTestService();
    const port = server.service.port;
    const sdk = createCreditClients({ baseUrl: `http://127.0.0.1:${port}`, caller: "watch-sdk", retry: { maxAttempts: 1 } });
    const accountId = newAccountId("watch-sdk");
    await fund(other, accountId, 1000n);
    const abort = new AbortController();
    const reconnects: (Code | null)[] = [];
    const updates = new StreamRecorder<BalanceUpdate>(
      sdk.watchBalance(accountId, { signal: abort.signal, initialBackoffMs: 20, maxBackoffMs: 200, onReconnect: (_n, err) => reconnects.push(err?.code ?? null) }),
      abort,
    );
    open.push(updates as unknown as StreamRecorder);
    try {
      await updates.until((u) => u.sequence === 1n);
      await reserve(other, accountId, 10n);
      await updates.until((u) => u.sequence === 2n);

      // The server goes (its streams end UNAVAILABLE); a change is made elsewhere meanwhile.
      await server.stop();
      await reserve(other, accountId, 20n);
      server = await startTestService({ GRPC_PORT: String(port) });
      const caughtUp = await updates.until((u) => u.sequence === 3n, 15_000);
      expect(caughtUp.message.balance.held).toBe(30n);
      await reserve(server, accountId, 40n);
      await updates.until((u) => u.sequence === 4n);

      // Once more with no change meanwhile: the restarted server's first message is the state the
      // consumer already has, and is dropped; the next change comes through.
      const before = reconnects.length;
      await server.stop();
      server = await startTestService({ GRPC_PORT: String(port) });
      // Reconnected once the new server holds the stream (nothing new is yielded to tell it).
      const deadline = Date.now() + 15_000;
      while (server.service.watch.watchers === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      expect(server.service.watch.watchers).toBe(1);
      await reserve(other, accountId, 5n);
      await updates.until((u) => u.sequence === 5n);

      expect(reconnects.length).toBeGreaterThan(before);
      expect(reconnects[0]).toBe(Code.Unavailable);
      const sequences = updates.messages.map((u) => u.sequence);
      expect(sequences).toEqual([1n, 2n, 3n, 4n, 5n]);
    } finally {
      abort.abort();
      await updates.end();
      await Promise.all([server.stop(), other.stop()]);
    }
  });

  it("reconnects after the server is killed (kill -9: the connection just drops) and resumes with no repeat", async () => {
    const writer = await startSystemClockService();
    let server = spawnServer({});
    try {
      const port = await server.listening;
      const sdk = createCreditClients({ baseUrl: `http://127.0.0.1:${port}`, caller: "watch-sdk", retry: { maxAttempts: 1 } });
      const accountId = newAccountId("watch-kill");
      await fund(writer, accountId, 100n);
      const abort = new AbortController();
      const updates = new StreamRecorder<BalanceUpdate>(sdk.watchBalance(accountId, { signal: abort.signal, initialBackoffMs: 50, maxBackoffMs: 500 }), abort);
      open.push(updates as unknown as StreamRecorder);
      await updates.until((u) => u.sequence === 1n);

      server.child.kill("SIGKILL");
      await server.exited;
      await reserve(writer, accountId, 25n);
      server = spawnServer({ GRPC_PORT: String(port) });
      await server.listening;
      expect((await updates.until((u) => u.sequence === 2n, 30_000)).message.balance.held).toBe(25n);
      await reserve(writer, accountId, 5n);
      await updates.until((u) => u.sequence === 3n);
      expect(updates.messages.map((u) => u.sequence)).toEqual([1n, 2n, 3n]);
      abort.abort();
      await updates.end();
    } finally {
      await server.stop();
      await writer.stop();
    }
  });

  it("ends with NOT_FOUND for an unknown account, and returns when the consumer breaks out", async () => {
    const t = await startTestService();
    try {
      const missing = newAccountId("watch-sdk-none");
      const err = await (async () => {
        try {
          for await (const _ of t.watchBalance(missing)) void _;
        } catch (e) {
          return ConnectError.from(e);
        }
        return null;
      })();
      expect(err?.code).toBe(Code.NotFound);

      const accountId = newAccountId("watch-sdk-break");
      await fund(t, accountId, 5n);
      let seen: BalanceUpdate | undefined;
      for await (const update of t.watchBalance(accountId)) {
        seen = update;
        break;
      }
      expect(seen?.balance.available).toBe(5n);
      // Breaking out cancelled the stream: the server lets the account go.
      const deadline = Date.now() + 5000;
      while (t.service.watch.watchers > 0 && Date.now() < deadline) await new Promise((r) => setImmediate(r));
      expect(t.service.watch.watchers).toBe(0);
    } finally {
      await t.stop();
    }
  });
});
