import { randomUUID } from "node:crypto";
import { durationFromMs, timestampFromDate } from "@bufbuild/protobuf/wkt";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Balance, Code, ConnectError, PlanChangeKind, ReleaseReason } from "../../src/client/index.js";
import { startTestService, TEST_EPOCH, type TestService } from "../support/harness.js";
import { reconcileAll } from "./support/checks.js";
import { reasonOf } from "./support/load.js";
import { byScale, Figures } from "./support/report.js";
import { Stack } from "./support/stack.js";

/**
 * Scenario 5 — model-based test. fast-check command sequences run against a small pure reference
 * model and, through the real gRPC API, against a server (in-process, own Postgres and Redis).
 * Each run uses a fresh account whose test clock (AdvanceTestClock, a per-account offset) starts
 * at TEST_EPOCH, so a run depends on nothing but its commands: a failing run prints
 * RELIABILITY_SEED / RELIABILITY_PATH, and setting them replays exactly that sequence.
 *
 * Model scope: catalog monthly plans (free, basic, pro), catalog packs, adjustments with and
 * without expiry, holds by raw amount. Checked after each command: the answer (code, reason,
 * plan-change kind, reservation state) and available/held of every balance returned.
 */
const RUNS = Number(process.env["RELIABILITY_MODEL_RUNS"] ?? byScale(1000, 3000));
const SEED = process.env["RELIABILITY_SEED"] ? Number(process.env["RELIABILITY_SEED"]) : undefined;
const PATH = process.env["RELIABILITY_PATH"];
const DAY = 86_400_000;

// ---------------------------------------------------------------------------------------------
// The reference model

type Kind = "TOP_UP" | "ADJUSTMENT" | "SUBSCRIPTION";
const RANK: Record<Kind, number> = { TOP_UP: 0, ADJUSTMENT: 1, SUBSCRIPTION: 2 };
interface MBucket {
  kind: Kind;
  remaining: bigint;
  held: bigint;
  expiresAt: number | null;
  createdAt: number;
  seq: number;
}
type HoldState = "HELD" | "COMMITTED" | "RELEASED" | "EXPIRED";
interface MHold {
  id: string;
  amount: bigint;
  alloc: { bucket: MBucket; amount: bigint }[];
  state: HoldState;
  expiresAt: number;
  captured: bigint;
}
const PLANS = { free: 50n, "basic-monthly": 1000n, "pro-monthly": 5000n } as const;
type PlanId = keyof typeof PLANS;
const PACKS = { "topup-500": 500n, "topup-1000": 1000n } as const;

function addMonths(anchor: number, months: number): number {
  const a = new Date(anchor);
  const m = a.getUTCMonth() + months;
  const y = a.getUTCFullYear() + Math.floor(m / 12);
  const mm = ((m % 12) + 12) % 12;
  const last = new Date(Date.UTC(y, mm + 1, 0)).getUTCDate();
  return Date.UTC(y, mm, Math.min(a.getUTCDate(), last), a.getUTCHours(), a.getUTCMinutes(), a.getUTCSeconds(), a.getUTCMilliseconds());
}

class Model {
  exists = false;
  now = TEST_EPOCH.getTime();
  buckets: MBucket[] = [];
  holds: MHold[] = [];
  sub: { plan: PlanId; anchor: number; bucket: MBucket | null; scheduled: PlanId | null } | null = null;
  private seq = 0;

  expired(b: MBucket): boolean {
    return b.expiresAt !== null && b.expiresAt <= this.now;
  }
  /** Free credits of expired buckets expire (held ones stay with their hold until returned). */
  private expireBuckets(): void {
    for (const b of this.buckets) if (this.expired(b)) b.remaining = b.held;
  }
  private periodIndex(anchor: number): number {
    let k = 0;
    while (addMonths(anchor, k + 1) <= this.now) k += 1;
    return k;
  }
  grant(kind: Kind, amount: bigint, expiresAt: number | null): MBucket {
    const b: MBucket = { kind, remaining: amount, held: 0n, expiresAt, createdAt: this.now, seq: this.seq++ };
    this.buckets.push(b);
    return b;
  }
  /** Due work before any command reads the account: overdue holds, expired buckets, period roll-over. */
  applyDue(): void {
    for (const h of this.holds) if (h.state === "HELD" && h.expiresAt <= this.now) this.settle(h, 0n, "EXPIRED");
    this.expireBuckets();
    const sub = this.sub;
    if (sub && sub.bucket && sub.bucket.expiresAt !== null && sub.bucket.expiresAt <= this.now) {
      const k = this.periodIndex(sub.anchor);
      if (sub.scheduled && addMonths(sub.anchor, this.periodOf(sub) + 1) <= this.now) {
        sub.plan = sub.scheduled;
        sub.scheduled = null;
      }
      sub.bucket = this.grant("SUBSCRIPTION", PLANS[sub.plan], addMonths(sub.anchor, k + 1));
    }
  }
  private periodOf(sub: { bucket: MBucket | null; anchor: number }): number {
    // index of the period the current bucket belongs to
    let k = 0;
    while (addMonths(sub.anchor, k + 1) < (sub.bucket?.expiresAt ?? 0)) k += 1;
    return k;
  }
  ordered(): MBucket[] {
    return [...this.buckets].sort((a, b) => RANK[a.kind] - RANK[b.kind] || (a.expiresAt ?? Infinity) - (b.expiresAt ?? Infinity) || a.createdAt - b.createdAt || a.seq - b.seq);
  }
  available(): bigint {
    return this.buckets.filter((b) => !this.expired(b)).reduce((s, b) => s + b.remaining - b.held, 0n);
  }
  heldTotal(): bigint {
    return this.holds.filter((h) => h.state === "HELD").reduce((s, h) => s + h.alloc.reduce((t, a) => t + a.amount, 0n), 0n);
  }
  take(amount: bigint): { bucket: MBucket; amount: bigint }[] {
    const alloc: { bucket: MBucket; amount: bigint }[] = [];
    let left = amount;
    for (const b of this.ordered()) {
      if (left === 0n) break;
      if (this.expired(b)) continue;
      const free = b.remaining - b.held;
      if (free <= 0n) continue;
      const n = free < left ? free : left;
      b.held += n;
      alloc.push({ bucket: b, amount: n });
      left -= n;
    }
    return alloc;
  }
  /** Captures `capture` from the allocations in order, returns the rest, sets the final state. */
  settle(h: MHold, capture: bigint, state: HoldState): void {
    let c = capture;
    for (const a of h.alloc) {
      const n = c < a.amount ? c : a.amount;
      a.bucket.held -= a.amount;
      a.bucket.remaining -= n;
      c -= n;
    }
    h.state = state;
    h.captured = capture;
    this.expireBuckets();
  }
}

// ---------------------------------------------------------------------------------------------
// Commands

interface Real {
  t: TestService;
  accountId: string;
  ids: string[];
  log: string[];
}

function failure(err: unknown): { code: Code; reason: string } {
  const e = ConnectError.from(err);
  return { code: e.code, reason: reasonOf(e) };
}
function checkBalance(m: Model, b: Balance | undefined, what: string): void {
  expect(b, `${what}: balance`).toBeDefined();
  expect({ available: b!.available, held: b!.held }, `${what}: balance`).toEqual({ available: m.available(), held: m.heldTotal() });
}
async function expectFailure(p: Promise<unknown>, code: Code, reason: string | null, what: string): Promise<void> {
  const r = await p.then(
    () => null,
    (e: unknown) => failure(e),
  );
  expect(r, `${what} should fail ${Code[code]} ${reason ?? ""}`).not.toBeNull();
  expect(r!.code, `${what}: code (${r!.reason})`).toBe(code);
  if (reason) expect(r!.reason, `${what}: reason`).toBe(reason);
}
const key = () => `m-${randomUUID()}`;

type Cmd = fc.AsyncCommand<Model, Real>;

class TopUp implements Cmd {
  constructor(readonly pack: keyof typeof PACKS) {}
  check = () => true;
  async run(m: Model, r: Real) {
    const res = await r.t.credit.purchaseTopUp({ accountId: r.accountId, pack: { case: "packId", value: this.pack }, paymentReference: key() });
    m.exists = true;
    m.applyDue();
    m.grant("TOP_UP", PACKS[this.pack], addMonths(m.now, 2));
    checkBalance(m, res.balance, this.toString());
  }
  toString = () => `TopUp(${this.pack})`;
}
class Adjust implements Cmd {
  constructor(readonly amount: bigint, readonly days: number | null) {}
  check = () => true;
  async run(m: Model, r: Real) {
    const expires = this.days === null ? null : m.now + this.days * DAY;
    const res = await r.t.admin.adjustCredits({ accountId: r.accountId, amount: this.amount, reason: "model", idempotencyKey: key(), expiresAt: expires === null ? undefined : timestampFromDate(new Date(expires)) });
    m.exists = true;
    m.applyDue();
    m.grant("ADJUSTMENT", this.amount, expires);
    checkBalance(m, res.balance, this.toString());
  }
  toString = () => `Adjust(${this.amount}, ${this.days ?? "no expiry"})`;
}
class ChangePlan implements Cmd {
  constructor(readonly plan: PlanId) {}
  check = () => true;
  async run(m: Model, r: Real) {
    const call = r.t.credit.changePlan({ accountId: r.accountId, planId: this.plan, idempotencyKey: key() });
    if (m.exists) m.applyDue();
    const sub = m.sub;
    let expected: PlanChangeKind;
    if (!sub) {
      expected = PlanChangeKind.SUBSCRIBED;
      m.exists = true;
      m.sub = { plan: this.plan, anchor: m.now, bucket: null, scheduled: null };
      m.sub.bucket = m.grant("SUBSCRIPTION", PLANS[this.plan], addMonths(m.now, 1));
    } else if (this.plan === sub.plan) {
      if (!sub.scheduled) return expectFailure(call, Code.FailedPrecondition, "ALREADY_ON_PLAN", this.toString());
      expected = PlanChangeKind.SCHEDULED_CHANGE_CANCELLED;
      sub.scheduled = null;
    } else if (PLANS[this.plan] > PLANS[sub.plan]) {
      expected = PlanChangeKind.UPGRADED;
      const diff = PLANS[this.plan] - PLANS[sub.plan];
      sub.bucket!.remaining += diff;
      sub.plan = this.plan;
      sub.scheduled = null;
    } else {
      expected = PlanChangeKind.DOWNGRADE_SCHEDULED;
      sub.scheduled = this.plan;
    }
    const res = await call;
    expect(res.change, this.toString()).toBe(expected);
    checkBalance(m, res.balance, this.toString());
  }
  toString = () => `ChangePlan(${this.plan})`;
}
class Reserve implements Cmd {
  constructor(readonly amount: bigint, readonly ttlMs: number) {}
  check = () => true;
  async run(m: Model, r: Real) {
    const call = r.t.credit.reserve({ accountId: r.accountId, idempotencyKey: key(), cost: { case: "amount", value: this.amount }, ttl: durationFromMs(this.ttlMs) });
    if (!m.exists) return expectFailure(call, Code.NotFound, "ACCOUNT_NOT_FOUND", this.toString());
    m.applyDue();
    if (m.available() < this.amount) return expectFailure(call, Code.FailedPrecondition, "INSUFFICIENT_CREDITS", this.toString());
    const res = await call;
    const id = res.reservation!.reservationId;
    m.holds.push({ id, amount: this.amount, alloc: m.take(this.amount), state: "HELD", expiresAt: m.now + this.ttlMs, captured: 0n });
    r.ids.push(id);
    checkBalance(m, res.balance, this.toString());
  }
  toString = () => `Reserve(${this.amount}, ttl ${this.ttlMs / 1000}s)`;
}
class Commit implements Cmd {
  constructor(readonly pick: number, readonly actual: bigint) {}
  check = (m: Readonly<Model>) => m.holds.length > 0;
  async run(m: Model, r: Real) {
    const h = m.holds[this.pick % m.holds.length]!;
    const call = r.t.credit.commit({ reservationId: h.id, idempotencyKey: key(), actual: { case: "amount", value: this.actual } });
    m.applyDue();
    const what = `${this.toString()} on ${h.state} hold of ${h.amount}`;
    if (h.state === "EXPIRED") return expectFailure(call, Code.FailedPrecondition, "RESERVATION_EXPIRED", what);
    if (h.state === "RELEASED") return expectFailure(call, Code.FailedPrecondition, "RESERVATION_NOT_HELD", what);
    if (h.state === "COMMITTED") {
      if (h.captured !== this.actual) return expectFailure(call, Code.FailedPrecondition, "RESERVATION_NOT_HELD", what);
      const res = await call;
      expect(res.reservation!.capturedAmount).toBe(this.actual);
      return checkBalance(m, res.balance, what);
    }
    if (this.actual > h.amount) {
      const extra = this.actual - h.amount;
      if (m.available() < extra) return expectFailure(call, Code.FailedPrecondition, "INSUFFICIENT_CREDITS", what);
      h.alloc.push(...m.take(extra));
    }
    m.settle(h, this.actual, "COMMITTED");
    const res = await call;
    expect(res.reservation!.capturedAmount, what).toBe(this.actual);
    checkBalance(m, res.balance, what);
  }
  toString = () => `Commit(#${this.pick}, ${this.actual})`;
}
class Release implements Cmd {
  constructor(readonly pick: number) {}
  check = (m: Readonly<Model>) => m.holds.length > 0;
  async run(m: Model, r: Real) {
    const h = m.holds[this.pick % m.holds.length]!;
    const call = r.t.credit.release({ reservationId: h.id, idempotencyKey: key(), reason: ReleaseReason.CANCELLED });
    m.applyDue();
    const what = `${this.toString()} on ${h.state} hold`;
    if (h.state === "COMMITTED") return expectFailure(call, Code.FailedPrecondition, "RESERVATION_NOT_HELD", what);
    if (h.state === "HELD") m.settle(h, 0n, "RELEASED");
    const res = await call;
    checkBalance(m, res.balance, what);
  }
  toString = () => `Release(#${this.pick})`;
}
class Extend implements Cmd {
  constructor(readonly pick: number, readonly ttlMs: number) {}
  check = (m: Readonly<Model>) => m.holds.length > 0;
  async run(m: Model, r: Real) {
    const h = m.holds[this.pick % m.holds.length]!;
    const call = r.t.credit.extendReservation({ reservationId: h.id, idempotencyKey: key(), ttl: durationFromMs(this.ttlMs) });
    m.applyDue();
    const what = `${this.toString()} on ${h.state} hold`;
    if (h.state === "EXPIRED") return expectFailure(call, Code.FailedPrecondition, "RESERVATION_EXPIRED", what);
    if (h.state !== "HELD") return expectFailure(call, Code.FailedPrecondition, "RESERVATION_NOT_HELD", what);
    h.expiresAt = Math.max(h.expiresAt, m.now + this.ttlMs);
    const res = await call;
    expect(res.reservation!.expiresAt!.seconds * 1000n + BigInt(Math.floor(res.reservation!.expiresAt!.nanos / 1e6)), what).toBe(BigInt(h.expiresAt));
  }
  toString = () => `Extend(#${this.pick}, ${this.ttlMs / 1000}s)`;
}
class AdvanceClock implements Cmd {
  constructor(readonly byMs: number) {}
  check = (m: Readonly<Model>) => m.exists;
  async run(m: Model, r: Real) {
    const res = await r.t.admin.advanceTestClock({ accountId: r.accountId, by: durationFromMs(this.byMs), idempotencyKey: key() });
    m.now += this.byMs;
    m.applyDue();
    // The response's balance is not compared here: it misses holds that fall due inside the step
    // (a known bug, asserted on its own by the "AdvanceTestClock response" test below), and
    // comparing it would stop every run at that bug instead of exploring the rest.
    expect(res.now, this.toString()).toBeDefined();
  }
  toString = () => `AdvanceClock(${this.byMs / 1000}s)`;
}
class GetBalance implements Cmd {
  check = () => true;
  async run(m: Model, r: Real) {
    const call = r.t.credit.getBalance({ accountId: r.accountId });
    if (!m.exists) return expectFailure(call, Code.NotFound, "ACCOUNT_NOT_FOUND", "GetBalance");
    m.applyDue();
    checkBalance(m, (await call).balance, "GetBalance");
  }
  toString = () => "GetBalance";
}

const ttl = fc.constantFrom(60_000, 600_000, 3_600_000);
const commands = [
  fc.constantFrom("topup-500", "topup-1000" as const).map((p) => new TopUp(p)),
  fc.tuple(fc.bigInt({ min: 1n, max: 800n }), fc.option(fc.integer({ min: 1, max: 70 }))).map(([a, d]) => new Adjust(a, d)),
  fc.constantFrom<PlanId>("free", "basic-monthly", "pro-monthly").map((p) => new ChangePlan(p)),
  fc.tuple(fc.bigInt({ min: 1n, max: 1500n }), ttl).map(([a, t]) => new Reserve(a, t)),
  fc.tuple(fc.nat(), fc.bigInt({ min: 0n, max: 1600n })).map(([p, a]) => new Commit(p, a)),
  fc.nat().map((p) => new Release(p)),
  fc.tuple(fc.nat(), ttl).map(([p, t]) => new Extend(p, t)),
  fc.constantFrom(1000, 59_000, 61_000, 600_000, 3_600_000, DAY, 7 * DAY, 20 * DAY, 31 * DAY, 45 * DAY).map((ms) => new AdvanceClock(ms)),
  fc.constant(new GetBalance()),
];

// ---------------------------------------------------------------------------------------------

const stack = new Stack();
const figures = new Figures("5 model-based");
let t: TestService;

beforeAll(async () => {
  await stack.start(0);
  t = await startTestService({ DATABASE_URL: stack.databaseUrl, REDIS_URL: stack.redis.url, DB_MIGRATE: "true" });
});
afterAll(async () => {
  await t?.stop();
  await stack.stop();
});

describe("AdvanceTestClock response", () => {
  it("expires holds that fall due inside the step (found by the model-based test)", async () => {
    const accountId = `advance-${randomUUID()}`;
    await t.credit.purchaseTopUp({ accountId, pack: { case: "packId", value: "topup-1000" }, paymentReference: key() });
    const r = await t.credit.reserve({ accountId, idempotencyKey: key(), cost: { case: "amount", value: 500n }, ttl: durationFromMs(60_000) });
    const advanced = await t.admin.advanceTestClock({ accountId, by: durationFromMs(120_000), idempotencyKey: key() });
    const { rows } = await stack.db.query<{ state: string }>(`select state from reservations where reservation_id = $1`, [r.reservation!.reservationId]);
    const got = `available ${advanced.balance!.available}, held ${advanced.balance!.held}, hold ${rows[0]!.state}`;
    figures.check("AdvanceTestClock(120 s) over a 60 s hold of 500 on 1000: response balance, hold state", got, "available 1000, held 0, hold EXPIRED", got === "available 1000, held 0, hold EXPIRED");
    expect(got).toBe("available 1000, held 0, hold EXPIRED");
  });
});

describe("model-based: the server agrees with a pure reference model", () => {
  it(`${RUNS} random command sequences`, async () => {
    const accounts: string[] = [];
    let commandsRun = 0;
    const t0 = performance.now();
    let failureText = "";
    try {
      await fc.assert(
        fc.asyncProperty(fc.commands(commands, { maxCommands: 25, size: "+1" }), async (cmds) => {
          const accountId = `model-${randomUUID()}`;
          accounts.push(accountId);
          const real: Real = { t, accountId, ids: [], log: [] };
          await fc.asyncModelRun(() => ({ model: new Model(), real }), cmds);
          commandsRun += [...cmds].length;
        }),
        { numRuns: RUNS, seed: SEED, path: PATH, endOnFailure: true },
      );
    } catch (err) {
      const cause = err instanceof Error && err.cause instanceof Error ? `\ncause: ${err.cause.message}` : "";
      failureText = String(err instanceof Error ? err.message : err) + cause;
      const seed = /seed: (-?\d+)/.exec(failureText)?.[1];
      const path = /path: "([^"]+)"/.exec(failureText)?.[1];
      console.log(`model-based failure — replay with: RELIABILITY_SEED=${seed} RELIABILITY_PATH="${path}" npm run test:reliability -- test/reliability/5-model.rel.ts\n${failureText.slice(0, 4000)}`);
    }
    const { rows } = await stack.db.query<{ id: string }>(`select account_id as id from accounts where account_id = any($1)`, [accounts]);
    const reconciled = await reconcileAll(t, rows.map((r) => r.id));
    figures.info("runs × commands (max 25 per run)", `${RUNS} runs, ${commandsRun} commands, ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    figures.check("runs where the server disagreed with the model", failureText ? 1 : 0, "0", !failureText);
    figures.check("reconcile differences (every account the runs created)", reconciled.differences, "0", reconciled.differences === 0);
    expect(failureText).toBe("");
    expect(reconciled.differences).toBe(0);
  });
});
