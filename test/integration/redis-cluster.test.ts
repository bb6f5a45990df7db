import { toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Cluster, Redis } from "ioredis";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CommitResponseSchema, PurchaseTopUpResponseSchema, type ReserveResponse, ReserveResponseSchema } from "../../src/client/index.js";
import { parseConfig } from "../../src/config.js";
import { ErrorInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "../../src/gen/grpc/health/v1/health_pb.js";
import { RedisIdempotencyCache } from "../../src/idempotency/redis-cache.js";
import { createRedisConnection, waitReady } from "../../src/idempotency/redis-client.js";
import { REDIS_HEALTH } from "../../src/service.js";
import { failureOf } from "../support/e2e.js";
import { TEST_DATABASE_URL } from "../support/env.js";
import { newAccountId, newKey, startTestService, type TestService } from "../support/harness.js";
import { type RedisClusterProcess, startRedisCluster } from "../support/redis-cluster.js";

/**
 * The idempotency behaviours of test/e2e/idempotency.test.ts against a real 3-node Redis Cluster
 * (REDIS_CLUSTER_NODES): one key, one effect; the keys really land in the cluster, spread over
 * its nodes by scope; and with a node killed, Postgres still allows one effect per key.
 */

let cluster: RedisClusterProcess;
let t: TestService;
let db: pg.Pool;
/** A separate cluster client, to read what the service wrote. */
let inspect: Cluster;
/** One direct (not cluster-routed) connection per node, to see which node holds which key. */
const direct = new Map<number, Redis>();

beforeAll(async () => {
  cluster = await startRedisCluster();
  // REDIS_URL points nowhere: were REDIS_CLUSTER_NODES ignored, no key would reach the cluster.
  t = await startTestService({ REDIS_CLUSTER_NODES: cluster.nodesEnv, REDIS_URL: "redis://127.0.0.1:1" });
  db = new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 4 });
  inspect = new Cluster([...cluster.startupNodes]);
  inspect.on("error", () => undefined); // the killed node's errors, at the end
  for (const port of cluster.ports) {
    const node = new Redis({ host: "127.0.0.1", port, maxRetriesPerRequest: 0 });
    node.on("error", () => undefined);
    direct.set(port, node);
  }
  expect(await waitReady(inspect, 10_000)).toBe(true);
});
afterAll(async () => {
  await t?.stop();
  await db?.end();
  inspect?.disconnect();
  for (const node of direct.values()) node.disconnect();
  await cluster?.stop();
});

// ---------------------------------------------------------------------------------------------
// helpers (the ledger checks of test/e2e/idempotency.test.ts, reduced to what this file asserts)

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");

async function count(sql: string, params: unknown[]): Promise<number> {
  const res = await db.query<{ n: string }>(sql, params);
  return Number(res.rows[0]!.n);
}

async function rowsOf(accountId: string) {
  const [buckets, reservations, holds, captures] = await Promise.all([
    count(`select count(*) as n from buckets where account_id = $1`, [accountId]),
    count(`select count(*) as n from reservations where account_id = $1`, [accountId]),
    count(`select count(*) as n from ledger_entries where account_id = $1 and kind = 'HOLD'`, [accountId]),
    count(`select count(*) as n from ledger_entries where account_id = $1 and kind = 'CAPTURE'`, [accountId]),
  ]);
  return { buckets, reservations, holds, captures };
}

const operationsWithKey = (accountId: string, key: string) =>
  count(`select count(*) as n from operations where account_id = $1 and idempotency_key = $2`, [accountId, key]);

async function balance(accountId: string): Promise<{ available: bigint; held: bigint }> {
  const b = await t.credit.getBalance({ accountId });
  return { available: b.balance!.available, held: b.balance!.held };
}

async function fundedAccount(pack = "topup-1000"): Promise<{ accountId: string; paymentReference: string }> {
  const accountId = newAccountId("cluster");
  const paymentReference = newKey("pay");
  await t.credit.purchaseTopUp({ accountId, pack: { case: "packId", value: pack }, paymentReference });
  return { accountId, paymentReference };
}

const reserveRequest = (accountId: string, key: string, amount: bigint) => ({
  accountId,
  idempotencyKey: key,
  cost: { case: "amount" as const, value: amount },
  metadata: { model: "img-v2", job_id: "job-1" },
});

const commitRequest = (reservationId: string, key: string, amount: bigint) => ({
  reservationId,
  idempotencyKey: key,
  actual: { case: "amount" as const, value: amount },
});

/** Every settled call either returned the one response or was ABORTED with IDEMPOTENCY_KEY_IN_USE. */
function oneResponse<T>(settled: PromiseSettledResult<T>[], bytes: (r: T) => Uint8Array): string {
  const ok = settled.filter((s) => s.status === "fulfilled").map((s) => s.value);
  expect(ok.length).toBeGreaterThanOrEqual(1);
  const first = hex(bytes(ok[0]!));
  for (const r of ok) expect(hex(bytes(r))).toBe(first);
  for (const s of settled) {
    if (s.status === "fulfilled") continue;
    const e = ConnectError.from(s.reason);
    expect(e.code, e.message).toBe(Code.Aborted);
    expect(e.findDetails(ErrorInfoSchema)[0]?.reason).toBe("IDEMPOTENCY_KEY_IN_USE");
  }
  return first;
}

const reserveBytes = (r: ReserveResponse) => toBinary(ReserveResponseSchema, r);

/** The keys matching `pattern` on each running node, read node by node (no cluster routing). */
async function keysByNode(pattern: string, ports: readonly number[] = cluster.ports): Promise<Map<number, string[]>> {
  const found = new Map<number, string[]>();
  for (const port of ports) {
    const node = direct.get(port)!;
    const keys: string[] = [];
    let cursor = "0";
    do {
      const [next, batch] = await node.scan(cursor, "MATCH", pattern, "COUNT", 1000);
      cursor = next;
      keys.push(...batch);
    } while (cursor !== "0");
    found.set(port, keys.sort());
  }
  return found;
}

/** The one node holding every key of `scope` (an account's, or with `r:` a reservation's); fails if they are spread or missing. */
async function nodeOfScope(scope: string, ports: readonly number[] = cluster.ports, kind = ""): Promise<{ port: number; keys: string[] }> {
  const holders = [...(await keysByNode(`credit:idem:${kind}{${scope}}:*`, ports))].filter(([, keys]) => keys.length > 0);
  expect(holders.length, `nodes holding keys of ${scope}`).toBe(1);
  const [port, keys] = holders[0]!;
  return { port, keys };
}

const keySlot = async (key: string) => Number(await inspect.cluster("KEYSLOT", key));

// ---------------------------------------------------------------------------------------------

describe("the service on a 3-node Redis Cluster", () => {
  it("the cluster is really three masters sharing the slots, and the service reports Redis SERVING", async () => {
    const masters = await Promise.all(cluster.ports.map(async (port) => (await direct.get(port)!.cluster("INFO")).includes("cluster_state:ok")));
    expect(masters).toEqual([true, true, true]);
    const slots = (await inspect.cluster("SLOTS")) as [number, number, ...unknown[]][];
    expect(slots.reduce((n, [from, to]) => n + (to - from + 1), 0)).toBe(16384);
    const owners = new Set(slots.map((range) => (range[2] as [string, number])[1]));
    expect(owners).toEqual(new Set(cluster.ports));

    const health = createClient(Health, createGrpcTransport({ baseUrl: `http://127.0.0.1:${t.service.port}` }));
    expect((await health.check({ service: REDIS_HEALTH })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
  });
});

describe("same key, same request", () => {
  it("twenty sequential Reserve calls with one key hold once and return identical bytes; the response sits in the cluster", async () => {
    const { accountId } = await fundedAccount();
    const key = newKey("reserve");
    const req = reserveRequest(accountId, key, 100n);

    const responses = [];
    for (let i = 0; i < 20; i++) {
      responses.push(await t.credit.reserve(req));
      t.clock.advance(1_000); // a second execution would stamp a different as_of / expires_at
    }
    const first = hex(reserveBytes(responses[0]!));
    for (const r of responses) expect(hex(reserveBytes(r))).toBe(first);

    expect(await balance(accountId)).toEqual({ available: 900n, held: 100n });
    expect(await rowsOf(accountId)).toMatchObject({ reservations: 1, holds: 1 });
    expect(await operationsWithKey(accountId, key)).toBe(1);
    const stored = await inspect.get(RedisIdempotencyCache.key(accountId, key));
    expect(stored?.startsWith("D|")).toBe(true);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });

  it("thirty concurrent Reserve calls with one key have exactly one effect", async () => {
    const { accountId } = await fundedAccount();
    const key = newKey("reserve");
    const req = reserveRequest(accountId, key, 70n);

    const settled = await Promise.allSettled(Array.from({ length: 30 }, () => t.credit.reserve(req)));
    const first = oneResponse(settled, reserveBytes);
    expect(hex(reserveBytes(await t.credit.reserve(req)))).toBe(first); // a retry after the storm
    expect((await inspect.get(RedisIdempotencyCache.key(accountId, key)))?.startsWith("D|")).toBe(true);

    expect(await balance(accountId)).toEqual({ available: 930n, held: 70n });
    expect(await rowsOf(accountId)).toMatchObject({ reservations: 1, holds: 1 });
    expect(await operationsWithKey(accountId, key)).toBe(1);
  });
});

describe("same key, different request", () => {
  it("Reserve with a used key and another amount is INVALID_ARGUMENT IDEMPOTENCY_KEY_REUSED and changes nothing", async () => {
    const { accountId } = await fundedAccount();
    const key = newKey("reserve");
    const original = await t.credit.reserve(reserveRequest(accountId, key, 100n));
    const before = await rowsOf(accountId);

    expect(await inspect.exists(RedisIdempotencyCache.key(accountId, key))).toBe(1); // answered by the cluster
    const failure = await failureOf(t.credit.reserve(reserveRequest(accountId, key, 101n)));
    expect([failure.code, failure.reason]).toEqual([Code.InvalidArgument, "IDEMPOTENCY_KEY_REUSED"]);

    expect(await rowsOf(accountId)).toEqual(before);
    expect(await balance(accountId)).toEqual({ available: 900n, held: 100n });
    const again = await t.credit.reserve(reserveRequest(accountId, key, 100n));
    expect(hex(reserveBytes(again))).toBe(hex(reserveBytes(original)));
  });
});

describe("where the keys land", () => {
  it("each scope's keys share one slot (its hash tag) on one node, and different accounts use more than one node", async () => {
    const accounts = await Promise.all(
      Array.from({ length: 12 }, async () => {
        const { accountId, paymentReference } = await fundedAccount();
        const adjustKey = newKey("adjust");
        await t.admin.adjustCredits({ accountId, amount: 5n, reason: "cluster test", idempotencyKey: adjustKey });
        const reserveKey = newKey("reserve");
        const reserved = await t.credit.reserve(reserveRequest(accountId, reserveKey, 50n));
        const reservationId = reserved.reservation!.reservationId;
        const extendKey = newKey("extend");
        await t.credit.extendReservation({ reservationId, idempotencyKey: extendKey, ttl: { seconds: 600n } });
        const commitKey = newKey("commit");
        await t.credit.commit(commitRequest(reservationId, commitKey, 20n));
        // Commit and ExtendReservation keys are the reservation's account's, like the others.
        return { accountId, keys: [paymentReference, adjustKey, reserveKey, extendKey, commitKey] };
      }),
    );

    const accountNodes = new Set<number>();
    for (const a of accounts) {
      const expected = a.keys.map((k) => RedisIdempotencyCache.key(a.accountId, k)).sort();
      const { port, keys: found } = await nodeOfScope(a.accountId, cluster.ports, "");
      expect(found).toEqual(expected);
      // One slot per scope, and it is the slot of the scope itself: the hash tag is in effect.
      const slots = new Set(await Promise.all(expected.map(keySlot)));
      expect(slots).toEqual(new Set([await keySlot(a.accountId)]));
      for (const key of expected) expect((await inspect.get(key))?.startsWith("D|")).toBe(true);
      accountNodes.add(port);
    }
    // Twelve random account ids all on one of three nodes: odds about 1 in 180,000.
    expect(accountNodes.size).toBeGreaterThan(1);
  });

  it("a failed call's claim is removed from its node by the single-key abandon script", async () => {
    const accounts = await Promise.all(Array.from({ length: 6 }, () => fundedAccount("topup-500")));
    const keys = accounts.map(() => newKey("reserve"));
    const failures = await Promise.all(accounts.map(({ accountId }, i) => failureOf(t.credit.reserve(reserveRequest(accountId, keys[i]!, 800n)))));
    for (const f of failures) expect([f.code, f.reason]).toEqual([Code.FailedPrecondition, "INSUFFICIENT_CREDITS"]);
    for (const [i, { accountId }] of accounts.entries()) {
      // The claim would otherwise live IDEMPOTENCY_LOCK_SECONDS (10 s) and answer IDEMPOTENCY_KEY_IN_USE.
      expect(await inspect.exists(RedisIdempotencyCache.key(accountId, keys[i]!))).toBe(0);
      expect(await operationsWithKey(accountId, keys[i]!)).toBe(0);
      await t.credit.purchaseTopUp({ accountId, pack: { case: "packId", value: "topup-500" }, paymentReference: newKey("pay") });
      const retried = await t.credit.reserve(reserveRequest(accountId, keys[i]!, 800n));
      expect(retried.balance!.available).toBe(200n);
    }
  });

  it("the cache itself: begin claims on the scope's node, abandon (EVAL) deletes only its own claim, on every node", async () => {
    const redis = createRedisConnection(parseConfig({ REDIS_CLUSTER_NODES: cluster.nodesEnv }));
    expect(redis).toBeInstanceOf(Cluster);
    try {
      expect(await waitReady(redis, 10_000)).toBe(true);
      const cache = new RedisIdempotencyCache(redis, { ttlMs: 60_000, lockMs: 60_000, now: Date.now, secret: "cluster-test-secret-of-at-least-32-chars", onAvailability: () => undefined });
      // Scopes until each node holds at least one claim, so the script runs on all three.
      const portsUsed = new Set<number>();
      for (let i = 0; i < 60 && portsUsed.size < cluster.ports.length; i++) {
        const scope = { kind: "account" as const, id: newAccountId("cache") };
        const claim = { key: newKey("k"), method: "Reserve", requestHash: Buffer.from(newKey("hash")) };
        const begun = await cache.begin(scope, claim);
        expect(begun.kind).toBe("claimed");
        const { port, keys } = await nodeOfScope(scope.id);
        expect(keys).toEqual([RedisIdempotencyCache.keyOf(scope, claim.key)]);
        expect(await direct.get(port)!.get(keys[0]!)).toMatch(/^P\|/);
        await cache.abandon(scope, claim, "someone-else");
        expect(await direct.get(port)!.exists(keys[0]!)).toBe(1);
        await cache.abandon(scope, claim, begun.kind === "claimed" ? begun.token : "");
        expect(await direct.get(port)!.exists(keys[0]!)).toBe(0);
        portsUsed.add(port);
      }
      expect(portsUsed).toEqual(new Set(cluster.ports));
    } finally {
      redis.disconnect();
    }
  });

  it("waitReady gives up on a cluster that never answers", async () => {
    const redis = createRedisConnection(parseConfig({ REDIS_CLUSTER_NODES: "127.0.0.1:1" }));
    redis.on("error", () => undefined);
    try {
      const started = Date.now();
      expect(await waitReady(redis, 300)).toBe(false);
      expect(Date.now() - started).toBeLessThan(2_000);
    } finally {
      redis.disconnect();
    }
  });
});

describe("the cluster loses its keys (Postgres backstop)", () => {
  const flushAll = () => Promise.all(cluster.ports.map((port) => direct.get(port)!.flushall()));

  it("Reserve, Commit and PurchaseTopUp repeated after FLUSHALL on every node have one effect and the same response", async () => {
    const { accountId } = await fundedAccount();
    const reserveKey = newKey("reserve");
    const reserved = await t.credit.reserve(reserveRequest(accountId, reserveKey, 300n));
    const commitKey = newKey("commit");
    const committed = await t.credit.commit(commitRequest(reserved.reservation!.reservationId, commitKey, 200n));
    const topUp = { accountId, pack: { case: "packId" as const, value: "topup-500" }, paymentReference: newKey("pay") };
    const toppedUp = await t.credit.purchaseTopUp(topUp);

    const cached = [
      RedisIdempotencyCache.key(accountId, reserveKey),
      RedisIdempotencyCache.key(accountId, commitKey),
      RedisIdempotencyCache.key(accountId, topUp.paymentReference),
    ];
    expect(await Promise.all(cached.map((k) => inspect.exists(k)))).toEqual([1, 1, 1]);
    await flushAll();
    expect([...(await keysByNode("credit:idem:*")).values()].flat()).toEqual([]);
    t.clock.advance(5_000);

    expect(hex(reserveBytes(await t.credit.reserve(reserveRequest(accountId, reserveKey, 300n))))).toBe(hex(reserveBytes(reserved)));
    const commitAgain = await t.credit.commit(commitRequest(reserved.reservation!.reservationId, commitKey, 200n));
    expect(hex(toBinary(CommitResponseSchema, commitAgain))).toBe(hex(toBinary(CommitResponseSchema, committed)));
    const topUpAgain = await t.credit.purchaseTopUp(topUp);
    expect(hex(toBinary(PurchaseTopUpResponseSchema, topUpAgain))).toBe(hex(toBinary(PurchaseTopUpResponseSchema, toppedUp)));

    expect(await rowsOf(accountId)).toEqual({ buckets: 2, reservations: 1, holds: 1, captures: 1 });
    expect(await balance(accountId)).toEqual({ available: 1300n, held: 0n });
    const reused = await failureOf(t.credit.reserve(reserveRequest(accountId, reserveKey, 301n)));
    expect([reused.code, reused.reason]).toEqual([Code.InvalidArgument, "IDEMPOTENCY_KEY_REUSED"]);
    expect(await t.service.store.reconcile(accountId)).toEqual([]);
  });
});

// Destructive: runs last in this file.
describe("a cluster node killed (Postgres backstop for its slots)", () => {
  it("every key still has one effect, a reused key is still refused, and the other nodes keep their keys", async () => {
    const accounts = await Promise.all(
      Array.from({ length: 9 }, async () => {
        const { accountId } = await fundedAccount();
        const key = newKey("reserve");
        const first = await t.credit.reserve(reserveRequest(accountId, key, 100n));
        return { accountId, key, first, port: (await nodeOfScope(accountId)).port };
      }),
    );
    // Kill the node holding the most of these accounts (at least one, by pigeonhole three).
    const victim = cluster.ports.toSorted((a, b) => accounts.filter((x) => x.port === b).length - accounts.filter((x) => x.port === a).length)[0]!;
    const survivors = cluster.ports.filter((p) => p !== victim);
    const onVictim = accounts.filter((a) => a.port === victim);
    expect(onVictim.length).toBeGreaterThanOrEqual(3);
    await cluster.kill(victim);
    t.clock.advance(5_000);

    // The same calls again: identical responses, no second hold, wherever their key lived.
    const again = await Promise.all(accounts.map((a) => t.credit.reserve(reserveRequest(a.accountId, a.key, 100n))));
    for (const [i, a] of accounts.entries()) {
      expect(hex(reserveBytes(again[i]!))).toBe(hex(reserveBytes(a.first)));
      expect(await balance(a.accountId)).toEqual({ available: 900n, held: 100n });
      expect(await rowsOf(a.accountId)).toMatchObject({ reservations: 1, holds: 1 });
      expect(await operationsWithKey(a.accountId, a.key)).toBe(1);
    }

    // On the dead node's slots: reuse is still refused, and a concurrent storm has one effect.
    const lost = onVictim[0]!;
    const reused = await failureOf(t.credit.reserve(reserveRequest(lost.accountId, lost.key, 150n)));
    expect([reused.code, reused.reason]).toEqual([Code.InvalidArgument, "IDEMPOTENCY_KEY_REUSED"]);
    const stormKey = newKey("storm");
    const storm = await Promise.allSettled(Array.from({ length: 10 }, () => t.credit.reserve(reserveRequest(lost.accountId, stormKey, 40n))));
    oneResponse(storm, reserveBytes);
    expect(await balance(lost.accountId)).toEqual({ available: 860n, held: 140n });
    expect(await rowsOf(lost.accountId)).toMatchObject({ reservations: 2, holds: 2 });
    expect(await operationsWithKey(lost.accountId, stormKey)).toBe(1);
    expect(await t.service.store.reconcile(lost.accountId)).toEqual([]);

    // The surviving nodes still hold their accounts' responses: only the dead node's slots fell back.
    for (const a of accounts.filter((x) => x.port !== victim)) {
      expect((await nodeOfScope(a.accountId, survivors)).keys).toContain(RedisIdempotencyCache.key(a.accountId, a.key));
    }
  });
});
