import { randomUUID } from "node:crypto";
import { durationFromMs, timestampFromDate, timestampMs } from "@bufbuild/protobuf/wkt";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type AutoTopUpRule,
  AutoTopUpOutcome,
  AutoTopUpState,
  type Balance,
  Code,
  type CompleteAutoTopUpResponse,
  ConnectError,
  ErrorInfoSchema,
  type FailAutoTopUpResponse,
  LimitMode,
  PlanChangeKind,
  ReleaseReason,
  type SpendLimit,
  SpendPeriod,
} from "../../src/client/index.js";
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
 * without expiry, holds by raw amount for no member or member m1 / m2, and spend limits
 * (src/domain/spend-limit.ts: account-wide or per member; DAY, WEEK, BILLING_PERIOD, LIFETIME;
 * HARD or SOFT; time zone UTC or Asia/Kolkata, a fixed +05:30). Checked after each command: the
 * answer (code, reason, plan-change kind, reservation state; for SPEND_LIMIT_EXCEEDED the limit
 * and figures its ErrorInfo names) and available/held of every balance returned; the limit each
 * Set/RemoveSpendLimit returns; GetSpendLimits (a command, and at the end of every run that has
 * limits, for each member with limits of its own, whose answer lists the account's too) against
 * the model's used / held / remaining / period bounds. The model's spend is the documented rule,
 * computed from its holds afresh each time (it keeps no counters): used = captured by Commits of
 * the scope's holds that started in the current period, held = what the scope's running holds
 * hold. Concurrency caps and SOFT limits' SPEND_LIMIT_REACHED events are not modeled (a SOFT
 * limit refuses nothing). Reconcile of every account at the end also checks the counters.
 *
 * Auto top-up (src/domain/auto-top-up.ts; requests expire after 3600 s unanswered, the default;
 * 2 failed payments in a row disable the rule, this file's server's setting, so that runs of at
 * most 22 commands get there): the rule as SetAutoTopUp sets it (threshold, pack or target, max
 * per UTC month, enabled), its state, epoch, the request out, requests expired unanswered, the
 * month's count and failures in a row. The threshold is judged where src/app/apply.ts judges it:
 * after every command that changed the account — its due work included (overdue holds, expired
 * credits, a period roll, a CREDITS_EXPIRING notice 7 days before a bucket's expiry; a clock step
 * is a change itself) — or whose due work expired the request out or began a new month; never
 * after FailAutoTopUp itself (the rule's own retry one request timeout later falls due only inside
 * a clock step here, a change anyway), and never after a call that changed nothing (a refused command, a repeated
 * Release or Commit, an Extend that moves nothing, GetBalance with nothing due, a read).
 * CompleteAutoTopUp grants its credits as a TOP_UP bucket (two months) into the model's buckets;
 * a second answer of the same kind replays the first answer, a Complete of a failed or a Fail of
 * a completed request is AUTO_TOP_UP_REQUEST_STALE. Checked: each answer, the rule in Set /
 * FailAutoTopUp's answers and GetAutoTopUp (state, enabled, the request out with its credits and
 * expiry, month count, waiting until, failures in a row, last failure), and the rule at the end
 * of every run that has one.
 */
const RUNS = Number(process.env["RELIABILITY_MODEL_RUNS"] ?? byScale(1000, 3000));
const SEED = process.env["RELIABILITY_SEED"] ? Number(process.env["RELIABILITY_SEED"]) : undefined;
const PATH = process.env["RELIABILITY_PATH"];
/** Commands per run at most: 22, down from 25 when spend limits came, to keep the run time (their runs run more of their commands). */
const MAX_COMMANDS = 22;
const DAY = 86_400_000;
/** What the runs saw of spend limits (a measure that the limits bind, not a target; shrinking runs count too). */
const spendSeen = { reservesHeld: 0, reservesRefused: 0, commitsRefused: 0, limitsCompared: 0 };
/** What the runs saw of auto top-up (a measure that the rule acts, not a target). */
const atuSeen = { commands: 0, requests: 0, heldBack: 0, completed: 0, late: 0, failed: 0, disabled: 0, stale: 0, replayed: 0, expired: 0, rulesCompared: 0 };

// ---------------------------------------------------------------------------------------------
// The reference model

type Kind = "TOP_UP" | "ADJUSTMENT" | "SUBSCRIPTION";
const RANK: Record<Kind, number> = { TOP_UP: 0, ADJUSTMENT: 1, SUBSCRIPTION: 2 };
interface MBucket {
  kind: Kind;
  /** The server's bucket id once an answer named it ("" until then, and for subscription allowances): the last tie-break of the consumption order. */
  id: string;
  remaining: bigint;
  held: bigint;
  expiresAt: number | null;
  createdAt: number;
  seq: number;
  /** Its CREDITS_EXPIRING notice was stated (due work, so a change of the account). */
  noticed: boolean;
}
type HoldState = "HELD" | "COMMITTED" | "RELEASED" | "EXPIRED";
interface MHold {
  id: string;
  amount: bigint;
  alloc: { bucket: MBucket; amount: bigint }[];
  state: HoldState;
  expiresAt: number;
  captured: bigint;
  /** Reserve's member_id ("" = none). */
  member: string;
  startedAt: number;
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

type Period = "DAY" | "WEEK" | "BILLING_PERIOD" | "LIFETIME";
/** GetSpendLimits' order within a scope. */
const PERIODS: readonly Period[] = ["DAY", "WEEK", "BILLING_PERIOD", "LIFETIME"];
type Mode = "HARD" | "SOFT";
/** Zones without daylight saving, so a boundary is plain arithmetic: offsets from UTC. */
const ZONES = { UTC: 0, "Asia/Kolkata": 19_800_000 } as const;
type Zone = keyof typeof ZONES;
const MEMBERS = ["", "m1", "m2"] as const;
interface MLimit {
  member: string;
  period: Period;
  max: bigint;
  mode: Mode;
  zone: Zone;
}
/** A limit as GetSpendLimits shows it (periodStart / resetsAt in ms; resetsAt null for LIFETIME). */
interface LimitView {
  member: string;
  period: string;
  max: bigint;
  mode: string;
  zone: string;
  used: bigint;
  held: bigint;
  remaining: bigint;
  start: number;
  end: number | null;
}
const scopeName = (member: string) => (member === "" ? "account" : member);

/** AUTO_TOP_UP_REQUEST_TIMEOUT_SECONDS (the default, 3600) and AUTO_TOP_UP_MAX_FAILURES (2 here: the default 3 is out of reach of most runs). */
const ATU_TIMEOUT_MS = 3_600_000;
const ATU_MAX_FAILURES = 2;
/** Months a grant of the rule lasts: the catalog packs' validity, and a target-sized grant's (TARGET_VALIDITY_MONTHS). */
const ATU_VALIDITY_MONTHS = 2;
/** EXPIRY_NOTICE_DAYS (7): a bucket's notice falls due this long before its expiry. */
const NOTICE_MS = 7 * DAY;
type AtuSize = { readonly pack: keyof typeof PACKS } | { readonly target: bigint };
interface AtuSettings {
  readonly threshold: bigint;
  readonly size: AtuSize;
  readonly maxPerMonth: number;
  readonly enabled: boolean;
}
type AtuState = "ARMED" | "REQUESTED" | "DISABLED";
interface MRequest {
  epoch: number;
  credits: bigint;
  expiresAt: number;
  outcome: "REQUESTED" | "EXPIRED" | "COMPLETED" | "FAILED";
  /** The first answer of each kind, which a second one replays. */
  completed: CompleteAutoTopUpResponse | null;
  failed: FailAutoTopUpResponse | null;
}
interface MRule {
  settings: AtuSettings;
  state: AtuState;
  epoch: number;
  outstanding: MRequest | null;
  /** The first instant of the UTC month monthCount counts; null until the rule first judged itself below. */
  monthStart: number | null;
  monthCount: number;
  failuresInRow: number;
  /** The epoch of the last failed request. */
  lastFailure: number | null;
}
const monthStartOf = (at: number) => Date.UTC(new Date(at).getUTCFullYear(), new Date(at).getUTCMonth(), 1);
const nextMonthOf = (at: number) => Date.UTC(new Date(at).getUTCFullYear(), new Date(at).getUTCMonth() + 1, 1);
/** What a command's due work did: changed the account, or expired the rule's request / began its month again. */
interface Due {
  changed: boolean;
  ruleDue: boolean;
}
const NO_DUE: Due = { changed: false, ruleDue: false };
const iso = (ms: number) => new Date(ms).toISOString();

class Model {
  exists = false;
  now = TEST_EPOCH.getTime();
  buckets: MBucket[] = [];
  holds: MHold[] = [];
  sub: { plan: PlanId; anchor: number; bucket: MBucket | null; scheduled: PlanId | null } | null = null;
  /** Spend limits by `${member}/${period}`. */
  limits = new Map<string, MLimit>();
  /** The auto top-up rule (null: never set) and every request it made, by epoch order. */
  atu: MRule | null = null;
  requests: MRequest[] = [];
  /**
   * Due work a read (GetSpendLimits) applied to the model but the server only to its copy: the
   * next command that writes finds it due (and so changes the account).
   */
  dueUnsaved = false;
  private seq = 0;

  expired(b: MBucket): boolean {
    return b.expiresAt !== null && b.expiresAt <= this.now;
  }
  /** Free credits of expired buckets expire (held ones stay with their hold until returned); true when any did. */
  private expireBuckets(): boolean {
    let changed = false;
    for (const b of this.buckets) {
      if (this.expired(b) && b.remaining > b.held) {
        b.remaining = b.held;
        changed = true;
      }
    }
    return changed;
  }
  private periodIndex(anchor: number, at = this.now): number {
    let k = 0;
    while (addMonths(anchor, k + 1) <= at) k += 1;
    return k;
  }
  grant(kind: Kind, amount: bigint, expiresAt: number | null): MBucket {
    const b: MBucket = { kind, id: "", remaining: amount, held: 0n, expiresAt, createdAt: this.now, seq: this.seq++, noticed: false };
    this.buckets.push(b);
    return b;
  }
  /**
   * Due work before any command reads the account: overdue holds, expired buckets, period
   * roll-over (what GetBalance's read judges by: true when any of it changed the account).
   */
  applyDue(): boolean {
    let changed = false;
    for (const h of this.holds) {
      if (h.state === "HELD" && h.expiresAt <= this.now) {
        this.settle(h, 0n, "EXPIRED");
        changed = true;
      }
    }
    if (this.expireBuckets()) changed = true;
    const sub = this.sub;
    if (sub && sub.bucket && sub.bucket.expiresAt !== null && sub.bucket.expiresAt <= this.now) {
      changed = true;
      const k = this.periodIndex(sub.anchor);
      if (sub.scheduled && addMonths(sub.anchor, this.periodOf(sub) + 1) <= this.now) {
        sub.plan = sub.scheduled;
        sub.scheduled = null;
      }
      sub.bucket = this.grant("SUBSCRIPTION", PLANS[sub.plan], addMonths(sub.anchor, k + 1));
    }
    return changed;
  }
  /** CREDITS_EXPIRING notices due (src/domain/expiry-notice.ts): once per bucket with free credits, 7 days before its expiry. */
  private notice(): boolean {
    let changed = false;
    for (const b of this.buckets) {
      if (b.kind === "SUBSCRIPTION" || b.expiresAt === null || b.noticed || b.remaining <= b.held || this.expired(b) || b.expiresAt - NOTICE_MS > this.now) continue;
      b.noticed = true;
      changed = true;
    }
    return changed;
  }
  /**
   * The due work of a command that reaches the locked account (src/app/apply.ts): the balance's,
   * then the notices, then the rule's (settleAutoTopUp: the request out past its expiry expires
   * and the rule re-arms; a month past the one counted starts the count again).
   */
  due(): Due {
    let changed = this.applyDue();
    if (this.dueUnsaved) changed = true;
    this.dueUnsaved = false;
    if (this.notice()) changed = true;
    let ruleDue = false;
    const a = this.atu;
    if (a) {
      const out = a.outstanding;
      if (out && this.now >= out.expiresAt) {
        out.outcome = "EXPIRED";
        a.outstanding = null;
        if (a.state === "REQUESTED") a.state = "ARMED";
        atuSeen.expired += 1;
        ruleDue = true;
      }
      if (a.monthStart !== null && this.now >= nextMonthOf(a.monthStart)) {
        a.monthStart = monthStartOf(this.now);
        a.monthCount = 0;
        ruleDue = true;
      }
    }
    return { changed, ruleDue };
  }
  /** After a command's action (`changed`: the action itself changed the account): the threshold check, as apply.ts makes it. */
  afterCommand(d: Due, changed: boolean): void {
    const a = this.atu;
    if (!a) return;
    if (d.changed || d.ruleDue || changed) {
      this.requestIfLow();
    } else if (a.state === "ARMED" && a.settings.enabled && this.available() < a.settings.threshold && (a.monthStart !== monthStartOf(this.now) || a.monthCount < a.settings.maxPerMonth)) {
      atuSeen.heldBack += 1;
    }
  }
  /** checkThreshold: an armed, enabled rule below its threshold makes one request, unless the month's are used up. */
  requestIfLow(): void {
    const a = this.atu;
    if (!a || a.state !== "ARMED" || !a.settings.enabled) return;
    const available = this.available();
    if (available >= a.settings.threshold) return;
    const month = monthStartOf(this.now);
    if (a.monthStart !== month) {
      a.monthStart = month;
      a.monthCount = 0;
    }
    if (a.monthCount >= a.settings.maxPerMonth) return;
    const size = a.settings.size;
    const credits = "pack" in size ? PACKS[size.pack] : size.target - available;
    if (credits <= 0n) return;
    a.epoch += 1;
    a.monthCount += 1;
    const request: MRequest = { epoch: a.epoch, credits, expiresAt: this.now + ATU_TIMEOUT_MS, outcome: "REQUESTED", completed: null, failed: null };
    this.requests.push(request);
    a.outstanding = request;
    a.state = "REQUESTED";
    atuSeen.requests += 1;
  }
  /** setRule: new settings; enabling a disabled rule arms it (or back to REQUESTED with a request out) and forgets its failures. */
  setRule(settings: AtuSettings): void {
    const a: MRule = this.atu ?? { settings, state: "ARMED", epoch: 0, outstanding: null, monthStart: null, monthCount: 0, failuresInRow: 0, lastFailure: null };
    this.atu = a;
    a.settings = settings;
    if (!settings.enabled) {
      a.state = "DISABLED";
    } else if (a.state === "DISABLED") {
      a.state = a.outstanding ? "REQUESTED" : "ARMED";
      a.failuresInRow = 0;
    }
  }
  /** The rule as GetAutoTopUp shows it now: settled in a copy (an unlocked read persists nothing), one line. */
  ruleView(): string {
    const a = this.atu;
    if (!a) return "(none)";
    let { state, outstanding, monthStart, monthCount } = a;
    if (outstanding && this.now >= outstanding.expiresAt) {
      outstanding = null;
      if (state === "REQUESTED") state = "ARMED";
    }
    if (monthStart !== null && this.now >= nextMonthOf(monthStart)) {
      monthStart = monthStartOf(this.now);
      monthCount = 0;
    }
    const shown = monthStart === monthStartOf(this.now) ? monthCount : 0;
    const enabled = a.settings.enabled;
    const waiting = state === "ARMED" && enabled && monthStart !== null && this.now < nextMonthOf(monthStart) && monthCount >= a.settings.maxPerMonth ? nextMonthOf(monthStart) : null;
    return showRule({
      state,
      enabled,
      out: outstanding && { id: `atu:${outstanding.epoch}`, credits: outstanding.credits, expiresAt: outstanding.expiresAt },
      monthCount: shown,
      waiting,
      failures: a.failuresInRow,
      lastFailure: a.lastFailure === null ? null : `atu:${a.lastFailure}`,
    });
  }
  private periodOf(sub: { bucket: MBucket | null; anchor: number }): number {
    // index of the period the current bucket belongs to
    let k = 0;
    while (addMonths(sub.anchor, k + 1) < (sub.bucket?.expiresAt ?? 0)) k += 1;
    return k;
  }
  ordered(): MBucket[] {
    return [...this.buckets].sort(
      (a, b) => RANK[a.kind] - RANK[b.kind] || (a.expiresAt ?? Infinity) - (b.expiresAt ?? Infinity) || a.createdAt - b.createdAt || (a.id && b.id && a.id !== b.id ? (a.id < b.id ? -1 : 1) : a.seq - b.seq),
    );
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
  /** The period of a limit containing `at` (the account's time). */
  window(period: Period, zone: Zone, at = this.now): { start: number; end: number | null } {
    const off = ZONES[zone];
    const day = Math.floor((at + off) / DAY);
    switch (period) {
      case "LIFETIME":
        return { start: 0, end: null };
      case "DAY":
        return { start: day * DAY - off, end: (day + 1) * DAY - off };
      case "WEEK": {
        const monday = day - ((day + 3) % 7); // day 0, 1970-01-01, was a Thursday
        return { start: monday * DAY - off, end: (monday + 7) * DAY - off };
      }
      case "BILLING_PERIOD": {
        if (this.sub) {
          const k = this.periodIndex(this.sub.anchor, at);
          return { start: addMonths(this.sub.anchor, k), end: addMonths(this.sub.anchor, k + 1) };
        }
        const local = new Date(at + off);
        return { start: Date.UTC(local.getUTCFullYear(), local.getUTCMonth(), 1) - off, end: Date.UTC(local.getUTCFullYear(), local.getUTCMonth() + 1, 1) - off };
      }
    }
  }
  /** The limits that apply to a member's holds, in GetSpendLimits' order: the account's, then the member's own. */
  applying(member: string): MLimit[] {
    const out: MLimit[] = [];
    for (const scope of member === "" ? [""] : ["", member]) {
      for (const period of PERIODS) {
        const l = this.limits.get(`${scope}/${period}`);
        if (l) out.push(l);
      }
    }
    return out;
  }
  /** The documented rule, from the holds: captured by Commits of holds started in the period; held by running holds. */
  view(l: MLimit): LimitView {
    const w = this.window(l.period, l.zone);
    const mine = this.holds.filter((h) => l.member === "" || h.member === l.member);
    const used = mine.filter((h) => h.state === "COMMITTED" && h.startedAt >= w.start).reduce((s, h) => s + h.captured, 0n);
    const held = mine.filter((h) => h.state === "HELD").reduce((s, h) => s + h.amount, 0n);
    const left = l.max - used - held;
    return { member: l.member, period: l.period, max: l.max, mode: l.mode, zone: l.zone, used, held, remaining: left > 0n ? left : 0n, start: w.start, end: w.end };
  }
  /** The first HARD limit (applying order) that `extra` more credits for `member` would pass, or null. */
  refusal(member: string, extra: bigint): LimitView | null {
    for (const l of this.applying(member)) {
      if (l.mode !== "HARD") continue;
      const v = this.view(l);
      if (v.used + v.held + extra > l.max) return v;
    }
    return null;
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

/** A rule as one line, the server's and the model's alike. */
interface RuleLine {
  state: string;
  enabled: boolean;
  out: { id: string; credits: bigint; expiresAt: number } | null;
  monthCount: number;
  waiting: number | null;
  failures: number;
  lastFailure: string | null;
}
function showRule(v: RuleLine): string {
  const out = v.out ? `${v.out.id} for ${v.out.credits} until ${iso(v.out.expiresAt)}` : "-";
  return `${v.state}${v.enabled ? "" : " (disabled)"}, out ${out}, month count ${v.monthCount}, waiting until ${v.waiting === null ? "-" : iso(v.waiting)}, failures in a row ${v.failures}, last failure ${v.lastFailure ?? "-"}`;
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

function seen(l: SpendLimit): LimitView {
  return {
    member: l.memberId,
    period: SpendPeriod[l.period],
    max: l.maxCredits,
    mode: LimitMode[l.mode],
    zone: l.timeZone,
    used: l.used,
    held: l.held,
    remaining: l.remaining,
    start: l.periodStart ? timestampMs(l.periodStart) : Number.NaN,
    end: l.resetsAt ? timestampMs(l.resetsAt) : null,
  };
}
function showLimit(v: LimitView): string {
  const at = (ms: number) => (Number.isNaN(ms) ? "?" : new Date(ms).toISOString());
  return `${scopeName(v.member)} ${v.period} ${v.mode} ${v.max} ${v.zone}: used ${v.used}, held ${v.held}, remaining ${v.remaining}, period [${at(v.start)}, ${v.end === null ? "-" : at(v.end)})`;
}
/** Limits as the server showed them against the model's, one line each (vitest would cut a deep-equal diff short). */
function expectLimits(got: LimitView[], want: LimitView[], what: string): void {
  const [g, w] = [got.map(showLimit).join("\n  "), want.map(showLimit).join("\n  ")];
  if (g !== w) expect.fail(`${what}: server\n  ${g || "(none)"}\nmodel\n  ${w || "(none)"}`);
  spendSeen.limitsCompared += got.length;
}
/** A Reserve (or a Commit's extra) refused by a HARD limit: the reason and what its ErrorInfo says of the limit. */
async function expectLimitRefusal(p: Promise<unknown>, v: LimitView, requested: bigint, what: string, count: "reservesRefused" | "commitsRefused"): Promise<void> {
  const r = await p.then(
    () => null,
    (e: unknown) => ConnectError.from(e),
  );
  expect(r, `${what} should fail SPEND_LIMIT_EXCEEDED (${scopeName(v.member)} ${v.period} limit ${v.max}, used ${v.used}, held ${v.held})`).not.toBeNull();
  const info = r!.findDetails(ErrorInfoSchema)[0];
  expect({ code: Code[r!.code], reason: info?.reason }, `${what}: ${r!.message}`).toEqual({ code: Code[Code.FailedPrecondition], reason: "SPEND_LIMIT_EXCEEDED" });
  expect({ ...info!.metadata }, `${what}: ErrorInfo metadata`).toEqual({
    scope: v.member === "" ? "account" : "member",
    member_id: v.member,
    period: v.period,
    limit: String(v.max),
    used: String(v.used),
    held: String(v.held),
    requested: String(requested),
    resets_at: v.end === null ? "" : new Date(v.end).toISOString(),
  });
  spendSeen[count] += 1;
}
/** GetSpendLimits(member) against the model (the caller has applied due work). */
async function checkLimits(m: Model, r: Real, member: string, what: string): Promise<void> {
  const res = await r.t.credit.getSpendLimits({ accountId: r.accountId, memberId: member });
  expectLimits(res.limits.map(seen), m.applying(member).map((l) => m.view(l)), `${what}: GetSpendLimits(${member === "" ? '""' : member})`);
}

/** The rule as the server shows it, one line as the model's (request ids without their account: `atu:<epoch>`). */
function seenRule(rule: AutoTopUpRule | undefined, accountId: string): string {
  if (!rule) return "(none)";
  const short = (id: string) => (id.endsWith(`:${accountId}`) ? id.slice(0, -accountId.length - 1) : id);
  const out = rule.outstanding;
  return showRule({
    state: AutoTopUpState[rule.state],
    enabled: rule.enabled,
    out: out ? { id: short(out.requestId), credits: out.credits, expiresAt: out.expiresAt ? timestampMs(out.expiresAt) : Number.NaN } : null,
    monthCount: rule.monthCount,
    waiting: rule.waitingUntil ? timestampMs(rule.waitingUntil) : null,
    failures: rule.failuresInRow,
    lastFailure: rule.lastFailure ? short(rule.lastFailure.requestId) : null,
  });
}
function expectRule(m: Model, rule: AutoTopUpRule | undefined, r: Real, what: string): void {
  const [got, want] = [seenRule(rule, r.accountId), m.ruleView()];
  if (got !== want) expect.fail(`${what}: auto top-up rule\n  server ${got}\n  model  ${want}`);
  atuSeen.rulesCompared += 1;
}

type Cmd = fc.AsyncCommand<Model, Real>;

class TopUp implements Cmd {
  constructor(readonly pack: keyof typeof PACKS) {}
  check = () => true;
  async run(m: Model, r: Real) {
    const res = await r.t.credit.purchaseTopUp({ accountId: r.accountId, pack: { case: "packId", value: this.pack }, paymentReference: key() });
    m.exists = true;
    const d = m.due();
    m.grant("TOP_UP", PACKS[this.pack], addMonths(m.now, 2)).id = res.bucket!.bucketId;
    m.afterCommand(d, true);
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
    const d = m.due();
    m.grant("ADJUSTMENT", this.amount, expires).id = res.bucket!.bucketId;
    m.afterCommand(d, true);
    checkBalance(m, res.balance, this.toString());
  }
  toString = () => `Adjust(${this.amount}, ${this.days ?? "no expiry"})`;
}
class ChangePlan implements Cmd {
  constructor(readonly plan: PlanId) {}
  check = () => true;
  async run(m: Model, r: Real) {
    const call = r.t.credit.changePlan({ accountId: r.accountId, planId: this.plan, idempotencyKey: key() });
    const d = m.exists ? m.due() : NO_DUE;
    const sub = m.sub;
    let expected: PlanChangeKind;
    if (!sub) {
      expected = PlanChangeKind.SUBSCRIBED;
      m.exists = true;
      m.sub = { plan: this.plan, anchor: m.now, bucket: null, scheduled: null };
      m.sub.bucket = m.grant("SUBSCRIPTION", PLANS[this.plan], addMonths(m.now, 1));
    } else if (this.plan === sub.plan) {
      if (!sub.scheduled) {
        m.afterCommand(d, false);
        return expectFailure(call, Code.FailedPrecondition, "ALREADY_ON_PLAN", this.toString());
      }
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
    m.afterCommand(d, true);
    const res = await call;
    expect(res.change, this.toString()).toBe(expected);
    checkBalance(m, res.balance, this.toString());
  }
  toString = () => `ChangePlan(${this.plan})`;
}
class Reserve implements Cmd {
  constructor(readonly amount: bigint, readonly ttlMs: number, readonly member: string) {}
  check = () => true;
  async run(m: Model, r: Real) {
    const call = r.t.credit.reserve({ accountId: r.accountId, idempotencyKey: key(), memberId: this.member, cost: { case: "amount", value: this.amount }, ttl: durationFromMs(this.ttlMs) });
    if (!m.exists) return expectFailure(call, Code.NotFound, "ACCOUNT_NOT_FOUND", this.toString());
    const d = m.due();
    if (m.available() < this.amount) {
      m.afterCommand(d, false);
      return expectFailure(call, Code.FailedPrecondition, "INSUFFICIENT_CREDITS", this.toString());
    }
    const over = m.refusal(this.member, this.amount);
    if (over) {
      m.afterCommand(d, false);
      return expectLimitRefusal(call, over, this.amount, this.toString(), "reservesRefused");
    }
    const alloc = m.take(this.amount);
    m.afterCommand(d, true);
    const res = await call;
    const id = res.reservation!.reservationId;
    m.holds.push({ id, amount: this.amount, alloc, state: "HELD", expiresAt: m.now + this.ttlMs, captured: 0n, member: this.member, startedAt: m.now });
    r.ids.push(id);
    if (m.applying(this.member).length > 0) spendSeen.reservesHeld += 1;
    checkBalance(m, res.balance, this.toString());
  }
  toString = () => `Reserve(${this.amount}, ttl ${this.ttlMs / 1000}s${this.member ? `, member ${this.member}` : ""})`;
}
class Commit implements Cmd {
  /** `overHold`: the actual is the hold's amount + `actual` (a Commit above its hold). */
  constructor(readonly pick: number, readonly actual: bigint, readonly overHold = false) {}
  check = (m: Readonly<Model>) => m.holds.length > 0;
  async run(m: Model, r: Real) {
    const h = m.holds[this.pick % m.holds.length]!;
    const actual = this.overHold ? h.amount + this.actual : this.actual;
    const call = r.t.credit.commit({ reservationId: h.id, idempotencyKey: key(), actual: { case: "amount", value: actual } });
    const d = m.due();
    const what = `${this.toString()} on ${h.state} hold of ${h.amount}${h.member ? ` (${h.member})` : ""}`;
    if (h.state !== "HELD") {
      // Refused, or a repeat of the Commit: nothing changes but what the due work did.
      m.afterCommand(d, false);
      if (h.state === "EXPIRED") return expectFailure(call, Code.FailedPrecondition, "RESERVATION_EXPIRED", what);
      if (h.state === "RELEASED" || h.captured !== actual) return expectFailure(call, Code.FailedPrecondition, "RESERVATION_NOT_HELD", what);
      const res = await call;
      expect(res.reservation!.capturedAmount).toBe(actual);
      return checkBalance(m, res.balance, what);
    }
    if (actual > h.amount) {
      const extra = actual - h.amount;
      // The extra is checked like a Reserve of it; refused, the hold stays HELD.
      const over = m.available() < extra ? null : m.refusal(h.member, extra);
      if (m.available() < extra || over) {
        m.afterCommand(d, false);
        return over ? expectLimitRefusal(call, over, extra, what, "commitsRefused") : expectFailure(call, Code.FailedPrecondition, "INSUFFICIENT_CREDITS", what);
      }
      h.alloc.push(...m.take(extra));
    }
    m.settle(h, actual, "COMMITTED");
    m.afterCommand(d, true);
    const res = await call;
    expect(res.reservation!.capturedAmount, what).toBe(actual);
    checkBalance(m, res.balance, what);
  }
  toString = () => `Commit(#${this.pick}, ${this.overHold ? `held + ${this.actual}` : this.actual})`;
}
class Release implements Cmd {
  constructor(readonly pick: number) {}
  check = (m: Readonly<Model>) => m.holds.length > 0;
  async run(m: Model, r: Real) {
    const h = m.holds[this.pick % m.holds.length]!;
    const call = r.t.credit.release({ reservationId: h.id, idempotencyKey: key(), reason: ReleaseReason.CANCELLED });
    const d = m.due();
    const what = `${this.toString()} on ${h.state} hold`;
    // A released or expired hold is answered as it is: no change.
    const held = h.state === "HELD";
    if (held) m.settle(h, 0n, "RELEASED");
    m.afterCommand(d, held);
    if (h.state === "COMMITTED") return expectFailure(call, Code.FailedPrecondition, "RESERVATION_NOT_HELD", what);
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
    const d = m.due();
    const what = `${this.toString()} on ${h.state} hold`;
    // A change only when the expiry moves (it never moves earlier).
    const moved = h.state === "HELD" && m.now + this.ttlMs > h.expiresAt;
    if (moved) h.expiresAt = m.now + this.ttlMs;
    m.afterCommand(d, moved);
    if (h.state === "EXPIRED") return expectFailure(call, Code.FailedPrecondition, "RESERVATION_EXPIRED", what);
    if (h.state !== "HELD") return expectFailure(call, Code.FailedPrecondition, "RESERVATION_NOT_HELD", what);
    const res = await call;
    expect(res.reservation!.expiresAt!.seconds * 1000n + BigInt(Math.floor(res.reservation!.expiresAt!.nanos / 1e6)), what).toBe(BigInt(h.expiresAt));
  }
  toString = () => `Extend(#${this.pick}, ${this.ttlMs / 1000}s)`;
}
async function advance(m: Model, r: Real, byMs: number, what: string): Promise<void> {
  const res = await r.t.admin.advanceTestClock({ accountId: r.accountId, by: durationFromMs(byMs), idempotencyKey: key() });
  m.now += byMs;
  // The step itself is a change of the account (TEST_CLOCK_ADVANCED), whatever falls due in it.
  m.afterCommand(m.due(), true);
  // The response's balance is not compared here: it misses holds that fall due inside the step
  // (a known bug, asserted on its own by the "AdvanceTestClock response" test below), and
  // comparing it would stop every run at that bug instead of exploring the rest.
  expect(res.now, what).toBeDefined();
}
class AdvanceClock implements Cmd {
  constructor(readonly byMs: number) {}
  check = (m: Readonly<Model>) => m.exists;
  run = (m: Model, r: Real) => advance(m, r, this.byMs, this.toString());
  toString = () => `AdvanceClock(${this.byMs / 1000}s)`;
}
/**
 * To 30 s before the end of the current DAY / WEEK / BILLING_PERIOD in a zone (the next one's if
 * that is less than 30 s away): a hold taken next can run across the boundary, so a Commit may
 * capture for a hold that started in the period before.
 */
class AdvanceToEve implements Cmd {
  constructor(readonly period: Exclude<Period, "LIFETIME">, readonly zone: Zone) {}
  check = (m: Readonly<Model>) => m.exists;
  async run(m: Model, r: Real) {
    const end = m.window(this.period, this.zone).end!;
    const target = end - 30_000 > m.now ? end - 30_000 : m.window(this.period, this.zone, end).end! - 30_000;
    await advance(m, r, target - m.now, `${this.toString()}: AdvanceClock(${(target - m.now) / 1000}s)`);
  }
  toString = () => `AdvanceToEve(${this.period} in ${this.zone})`;
}
class SetSpendLimit implements Cmd {
  constructor(readonly member: string, readonly period: Period, readonly max: bigint, readonly mode: Mode, readonly zone: Zone) {}
  check = () => true;
  async run(m: Model, r: Real) {
    const call = r.t.admin.setSpendLimit({
      accountId: r.accountId,
      memberId: this.member,
      period: SpendPeriod[this.period],
      maxCredits: this.max,
      mode: LimitMode[this.mode],
      timeZone: this.zone === "UTC" ? "" : this.zone, // "" is UTC
      idempotencyKey: key(),
    });
    if (!m.exists) return expectFailure(call, Code.NotFound, "ACCOUNT_NOT_FOUND", this.toString());
    const d = m.due();
    const limit: MLimit = { member: this.member, period: this.period, max: this.max, mode: this.mode, zone: this.zone };
    m.limits.set(`${this.member}/${this.period}`, limit);
    m.afterCommand(d, true);
    const res = await call;
    expectLimits([seen(res.limit!)], [m.view(limit)], `${this.toString()}: the limit set`);
  }
  toString = () => `SetSpendLimit(${scopeName(this.member)}, ${this.period}, ${this.max}, ${this.mode}, ${this.zone})`;
}
class RemoveSpendLimit implements Cmd {
  /** `pick`: which of the model's limits (when it has any and pick % 4 > 0), else (member, period), most likely NOT_FOUND. */
  constructor(readonly pick: number, readonly member: string, readonly period: Period) {}
  check = () => true;
  async run(m: Model, r: Real) {
    const existing = [...m.limits.values()];
    const target = existing.length > 0 && this.pick % 4 > 0 ? existing[this.pick % existing.length]! : { member: this.member, period: this.period };
    const call = r.t.admin.removeSpendLimit({ accountId: r.accountId, memberId: target.member, period: SpendPeriod[target.period], idempotencyKey: key() });
    const what = `${this.toString()} → ${scopeName(target.member)} ${target.period}`;
    if (!m.exists) return expectFailure(call, Code.NotFound, "ACCOUNT_NOT_FOUND", what);
    const d = m.due();
    const limit = m.limits.get(`${target.member}/${target.period}`);
    m.afterCommand(d, limit !== undefined);
    if (!limit) return expectFailure(call, Code.NotFound, "SPEND_LIMIT_NOT_FOUND", what);
    const expected = m.view(limit);
    m.limits.delete(`${target.member}/${target.period}`);
    const res = await call;
    expectLimits([seen(res.removed!)], [expected], `${what}: the limit removed`);
  }
  toString = () => `RemoveSpendLimit(#${this.pick}, else ${scopeName(this.member)} ${this.period})`;
}
class GetSpendLimits implements Cmd {
  constructor(readonly member: string) {}
  check = () => true;
  async run(m: Model, r: Real) {
    if (!m.exists) return expectFailure(r.t.credit.getSpendLimits({ accountId: r.accountId, memberId: this.member }), Code.NotFound, "ACCOUNT_NOT_FOUND", this.toString());
    // A read: the server applies the due work to its copy only.
    if (m.applyDue()) m.dueUnsaved = true;
    await checkLimits(m, r, this.member, this.toString());
  }
  toString = () => `GetSpendLimits(${scopeName(this.member)})`;
}
class GetBalance implements Cmd {
  check = () => true;
  async run(m: Model, r: Real) {
    const call = r.t.credit.getBalance({ accountId: r.accountId });
    if (!m.exists) return expectFailure(call, Code.NotFound, "ACCOUNT_NOT_FOUND", "GetBalance");
    // A read, unless it finds due work of the balance (not a notice, not the rule's): then that
    // due work is applied under the lock (SettleDue), a change like any command's.
    if (m.applyDue() || m.dueUnsaved) m.afterCommand({ ...m.due(), changed: true }, false);
    else m.afterCommand(NO_DUE, false);
    checkBalance(m, (await call).balance, "GetBalance");
  }
  toString = () => "GetBalance";
}

class SetAutoTopUp implements Cmd {
  constructor(readonly settings: AtuSettings) {}
  check = () => true;
  async run(m: Model, r: Real) {
    const s = this.settings;
    const size = "pack" in s.size ? ({ case: "packId", value: s.size.pack } as const) : ({ case: "targetCredits", value: s.size.target } as const);
    const call = r.t.admin.setAutoTopUp({ accountId: r.accountId, thresholdCredits: s.threshold, size, maxPerMonth: s.maxPerMonth, enabled: s.enabled, idempotencyKey: key() });
    atuSeen.commands += 1;
    if (!m.exists) return expectFailure(call, Code.NotFound, "ACCOUNT_NOT_FOUND", this.toString());
    const d = m.due();
    m.setRule(s);
    // Judged at once (an account below asks in the same change), and again as after any change.
    m.afterCommand(d, true);
    expectRule(m, (await call).rule, r, this.toString());
  }
  toString = () => {
    const s = this.settings;
    return `SetAutoTopUp(below ${s.threshold}, ${"pack" in s.size ? s.size.pack : `to ${s.size.target}`}, ${s.maxPerMonth}/month${s.enabled ? "" : ", disabled"})`;
  };
}
/** Which request an answer names: the one out, one that expired unanswered, or one answered before. */
type AnswerPick = "outstanding" | "expired" | "answered";
/** The request of that kind (`pick` chooses among several); when there is none, any the rule made. */
function pickRequest(m: Readonly<Model>, which: AnswerPick, pick: number): MRequest {
  const out = m.atu?.outstanding ?? null;
  const pool = which === "outstanding" ? (out ? [out] : []) : m.requests.filter((q) => (which === "expired" ? q.outcome === "EXPIRED" : q.outcome === "COMPLETED" || q.outcome === "FAILED"));
  const from = pool.length > 0 ? pool : m.requests;
  return from[pick % from.length]!;
}
class CompleteAutoTopUp implements Cmd {
  constructor(readonly which: AnswerPick, readonly pick: number) {}
  check = (m: Readonly<Model>) => m.requests.length > 0;
  async run(m: Model, r: Real) {
    const q = pickRequest(m, this.which, this.pick);
    const call = r.t.credit.completeAutoTopUp({ requestId: `atu:${q.epoch}:${r.accountId}`, paymentReference: key() });
    atuSeen.commands += 1;
    const what = `${this.toString()} → atu:${q.epoch} (${q.outcome})`;
    if (q.completed) {
      // Completed before: the first answer again, replayed by its key before the account is read (no due work).
      atuSeen.replayed += 1;
      expect(await call, `${what}: the first answer again`).toEqual(q.completed);
      return;
    }
    const d = m.due();
    if (q.outcome === "FAILED") {
      m.afterCommand(d, false);
      atuSeen.stale += 1;
      return expectFailure(call, Code.FailedPrecondition, "AUTO_TOP_UP_REQUEST_STALE", what);
    }
    // The request out (its due work may just have expired it: then it is late, the rule as it is).
    const a = m.atu!;
    const late = a.outstanding !== q;
    const expiresAt = addMonths(m.now, ATU_VALIDITY_MONTHS);
    const bucket = m.grant("TOP_UP", q.credits, expiresAt);
    q.outcome = "COMPLETED";
    if (!late) {
      a.outstanding = null;
      a.failuresInRow = 0;
      if (a.state === "REQUESTED") a.state = "ARMED";
    }
    m.afterCommand(d, true);
    const res = await call;
    bucket.id = res.bucket?.bucketId ?? "";
    const got = { late: res.late, outcome: AutoTopUpOutcome[res.request!.outcome], credits: res.request!.credits, granted: res.bucket?.granted, expiresAt: res.bucket?.expiresAt ? iso(timestampMs(res.bucket.expiresAt)) : "-" };
    expect(got, what).toEqual({ late, outcome: "COMPLETED", credits: q.credits, granted: q.credits, expiresAt: iso(expiresAt) });
    checkBalance(m, res.balance, what);
    q.completed = res;
    atuSeen.completed += 1;
    if (late) atuSeen.late += 1;
  }
  toString = () => `CompleteAutoTopUp(${this.which} #${this.pick})`;
}
class FailAutoTopUp implements Cmd {
  constructor(readonly which: AnswerPick, readonly pick: number) {}
  check = (m: Readonly<Model>) => m.requests.length > 0;
  async run(m: Model, r: Real) {
    const q = pickRequest(m, this.which, this.pick);
    const reason = `declined ${randomUUID().slice(0, 8)}`;
    const call = r.t.credit.failAutoTopUp({ requestId: `atu:${q.epoch}:${r.accountId}`, reason });
    atuSeen.commands += 1;
    const what = `${this.toString()} → atu:${q.epoch} (${q.outcome})`;
    if (q.failed) {
      atuSeen.replayed += 1;
      expect(await call, `${what}: the first answer again`).toEqual(q.failed);
      return;
    }
    // No threshold check after a failed payment, whatever its due work did.
    m.due();
    if (q.outcome === "COMPLETED") {
      atuSeen.stale += 1;
      return expectFailure(call, Code.FailedPrecondition, "AUTO_TOP_UP_REQUEST_STALE", what);
    }
    const a = m.atu!;
    q.outcome = "FAILED";
    a.lastFailure = q.epoch;
    // Only the request out counts a failure (one that expired is recorded, nothing more).
    if (a.outstanding === q) {
      a.outstanding = null;
      a.failuresInRow += 1;
      if (a.state !== "DISABLED" && a.failuresInRow >= ATU_MAX_FAILURES) {
        a.state = "DISABLED";
        a.settings = { ...a.settings, enabled: false };
        atuSeen.disabled += 1;
      } else if (a.state === "REQUESTED") {
        a.state = "ARMED";
      }
    }
    const res = await call;
    expect({ outcome: AutoTopUpOutcome[res.request!.outcome], reason: res.request!.failureReason }, what).toEqual({ outcome: "FAILED", reason });
    expectRule(m, res.rule, r, what);
    q.failed = res;
    atuSeen.failed += 1;
  }
  toString = () => `FailAutoTopUp(${this.which} #${this.pick})`;
}
class GetAutoTopUp implements Cmd {
  check = () => true;
  async run(m: Model, r: Real) {
    const call = r.t.admin.getAutoTopUp({ accountId: r.accountId });
    atuSeen.commands += 1;
    if (!m.exists) return expectFailure(call, Code.NotFound, "ACCOUNT_NOT_FOUND", "GetAutoTopUp");
    // A read: the request expired or the month begun again shows in the answer, nothing is written.
    expectRule(m, (await call).rule, r, "GetAutoTopUp");
  }
  toString = () => "GetAutoTopUp";
}

const ttl = fc.constantFrom(60_000, 600_000, 3_600_000);
const member = fc.constantFrom<string>(...MEMBERS);
const period = fc.constantFrom<Period>(...PERIODS);
const reserve = fc.tuple(fc.bigInt({ min: 1n, max: 1500n }), ttl, member).map(([a, t, who]) => new Reserve(a, t, who));
const setLimit = fc
  .tuple(fc.constantFrom<string>("", ...MEMBERS), period, fc.bigInt({ min: 0n, max: 1500n }), fc.constantFrom<Mode>("HARD", "HARD", "SOFT"), fc.constantFrom<Zone>("UTC", "Asia/Kolkata"))
  .map(([who, p, max, mode, zone]) => new SetSpendLimit(who, p, max, mode, zone));
const setAutoTopUp = fc
  .tuple(
    fc.bigInt({ min: 1n, max: 2500n }),
    fc.oneof(fc.constantFrom<keyof typeof PACKS>("topup-500", "topup-1000"), fc.bigInt({ min: 1n, max: 1500n })),
    fc.integer({ min: 1, max: 3 }),
    fc.constantFrom(true, true, true, true, false),
  )
  .map(([threshold, size, maxPerMonth, enabled]) => new SetAutoTopUp({ threshold, size: typeof size === "bigint" ? { target: threshold + size } : { pack: size }, maxPerMonth, enabled }));
const answerPick = fc.constantFrom<AnswerPick>("outstanding", "outstanding", "outstanding", "outstanding", "expired", "answered");
const autoTopUpCall = fc.oneof(
  { arbitrary: fc.tuple(answerPick, fc.nat()).map(([which, p]) => new CompleteAutoTopUp(which, p)), weight: 3 },
  { arbitrary: fc.tuple(answerPick, fc.nat()).map(([which, p]) => new FailAutoTopUp(which, p)), weight: 3 },
  { arbitrary: fc.constant(new GetAutoTopUp()), weight: 1 },
);
// Reserve and SetSpendLimit are listed twice (twice as likely) and a limit is most often the
// account's, so that most runs have limits that bind. The auto top-up calls (Complete / Fail /
// GetAutoTopUp) too: Complete and Fail run only once the rule has made a request.
const commands = [
  fc.constantFrom("topup-500", "topup-1000" as const).map((p) => new TopUp(p)),
  fc.tuple(fc.bigInt({ min: 1n, max: 800n }), fc.option(fc.integer({ min: 1, max: 70 }))).map(([a, d]) => new Adjust(a, d)),
  fc.constantFrom<PlanId>("free", "basic-monthly", "pro-monthly").map((p) => new ChangePlan(p)),
  reserve,
  reserve,
  fc.oneof(
    { arbitrary: fc.tuple(fc.nat(), fc.bigInt({ min: 0n, max: 1600n })).map(([p, a]) => new Commit(p, a)), weight: 3 },
    { arbitrary: fc.tuple(fc.nat(), fc.bigInt({ min: 1n, max: 300n })).map(([p, a]) => new Commit(p, a, true)), weight: 1 },
  ),
  fc.nat().map((p) => new Release(p)),
  fc.tuple(fc.nat(), ttl).map(([p, t]) => new Extend(p, t)),
  fc.constantFrom(1000, 59_000, 61_000, 600_000, 3_600_000, DAY, 7 * DAY, 20 * DAY, 31 * DAY, 45 * DAY).map((ms) => new AdvanceClock(ms)),
  fc.constant(new GetBalance()),
  setLimit,
  setLimit,
  fc.tuple(fc.nat(), member, period).map(([p, who, per]) => new RemoveSpendLimit(p, who, per)),
  member.map((who) => new GetSpendLimits(who)),
  fc.tuple(fc.constantFrom<Exclude<Period, "LIFETIME">>("DAY", "WEEK", "BILLING_PERIOD"), fc.constantFrom<Zone>("UTC", "Asia/Kolkata")).map(([p, zone]) => new AdvanceToEve(p, zone)),
  setAutoTopUp,
  autoTopUpCall,
  autoTopUpCall,
];

// ---------------------------------------------------------------------------------------------

const stack = new Stack();
const figures = new Figures("5 model-based");
let t: TestService;

beforeAll(async () => {
  await stack.start(0);
  t = await startTestService({ DATABASE_URL: stack.databaseUrl, REDIS_URL: stack.redis.url, DB_MIGRATE: "true", AUTO_TOP_UP_MAX_FAILURES: String(ATU_MAX_FAILURES) });
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

describe("BILLING_PERIOD spend limit across the first subscription", () => {
  it("counts a Commit of a hold started at the instant the plan starts its period (found by the model-based test)", async () => {
    // The documented rule: used = credits captured by Commits of holds that started in the period.
    // The hold starts at the instant the plan's first allowance period starts, so it is in it.
    const accountId = `billing-${randomUUID()}`;
    await t.admin.adjustCredits({ accountId, amount: 1000n, reason: "model", idempotencyKey: key() });
    await t.admin.setSpendLimit({ accountId, memberId: "", period: SpendPeriod.BILLING_PERIOD, maxCredits: 500n, mode: LimitMode.HARD, timeZone: "", idempotencyKey: key() });
    const hold = await t.credit.reserve({ accountId, idempotencyKey: key(), cost: { case: "amount", value: 100n }, ttl: durationFromMs(600_000) });
    await t.credit.commit({ reservationId: hold.reservation!.reservationId, idempotencyKey: key(), actual: { case: "amount", value: 100n } });
    await t.credit.changePlan({ accountId, planId: "basic-monthly", idempotencyKey: key() });
    const [afterPlan] = (await t.credit.getSpendLimits({ accountId, memberId: "" })).limits;
    const next = await t.credit.reserve({ accountId, idempotencyKey: key(), cost: { case: "amount", value: 10n }, ttl: durationFromMs(600_000) });
    await t.credit.commit({ reservationId: next.reservation!.reservationId, idempotencyKey: key(), actual: { case: "amount", value: 10n } });
    const [afterCommit] = (await t.credit.getSpendLimits({ accountId, memberId: "" })).limits;
    const reconciled = await t.admin.reconcile({ accountId });
    const got = `used ${afterPlan!.used} after the plan, ${afterCommit!.used} after a Commit of 10; reconcile differences ${reconciled.differences.length}`;
    const want = "used 100 after the plan, 110 after a Commit of 10; reconcile differences 0";
    figures.check("BILLING_PERIOD limit set before the first plan, Commit of 100 at the plan's start instant: used, then Reconcile", got, want, got === want);
    expect(got).toBe(want);
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
        // Half the runs start with an Adjust (no expiry) so that the limits set early find an account,
        // most of those with an auto top-up rule too, so that the rule acts through most of the run.
        fc.asyncProperty(
          fc.option(fc.tuple(fc.bigInt({ min: 500n, max: 3000n }), fc.option(setAutoTopUp, { freq: 4 })), { freq: 2 }),
          fc.commands(commands, { maxCommands: MAX_COMMANDS, size: "+1" }),
          async (start, generated) => {
            const cmds: Cmd[] = start === null ? [...generated] : [new Adjust(start[0], null), ...(start[1] ? [start[1]] : []), ...generated];
            const accountId = `model-${randomUUID()}`;
            accounts.push(accountId);
            const real: Real = { t, accountId, ids: [], log: [] };
            const model = new Model();
            await fc.asyncModelRun(() => ({ model, real }), cmds);
            // The end of the run: the rule as it stands.
            if (model.exists && model.atu) expectRule(model, (await t.admin.getAutoTopUp({ accountId })).rule, real, "end of run: GetAutoTopUp");
            // The end of the run: where every limit stands (a member's answer lists the account's limits too).
            if (model.exists && model.limits.size > 0) {
              model.applyDue();
              const members = ["m1", "m2"].filter((who) => [...model.limits.values()].some((l) => l.member === who));
              for (const who of members.length > 0 ? members : [""]) await checkLimits(model, real, who, "end of run");
            }
            commandsRun += [...cmds].length;
          },
        ),
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
    figures.info(`runs × commands (max ${MAX_COMMANDS} per run)`, `${RUNS} runs, ${commandsRun} commands, ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const s = spendSeen;
    figures.info("spend limits: Reserves under a limit held / refused, Commits refused, limit views compared", `${s.reservesHeld} / ${s.reservesRefused}, ${s.commitsRefused}, ${s.limitsCompared}`);
    const a = atuSeen;
    figures.info(
      "auto top-up: its commands run; requests made / expired; calls below the threshold that changed nothing (no request); completed (late) / failed (disabled); stale, replayed answers; rules compared",
      `${a.commands}; ${a.requests} / ${a.expired}; ${a.heldBack}; ${a.completed} (${a.late}) / ${a.failed} (${a.disabled}); ${a.stale}, ${a.replayed}; ${a.rulesCompared}`,
    );
    figures.check("runs where the server disagreed with the model", failureText ? 1 : 0, "0", !failureText);
    figures.check("reconcile differences (every account the runs created)", reconciled.differences, "0", reconciled.differences === 0);
    expect(failureText).toBe("");
    expect(reconciled.differences).toBe(0);
  });
});
