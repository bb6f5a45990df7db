import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Event, EventKind, PlanChangeKind, ReleaseReason, ReservationState } from "../../src/client/index.js";
import { newAccountId, newKey, startTestService, type TestService } from "../support/harness.js";
import { accountEvents } from "../support/events.js";
import { failureOf } from "../support/e2e.js";
import { TEST_DATABASE_URL } from "../support/env.js";

/**
 * The event feed through the real server and the generated client: every committed change of an
 * account appears as events in sequence order, pages resume from any cursor, a transaction that
 * commits late is still delivered to a reader already past a later one, and bad cursors,
 * kinds and page sizes are refused.
 */

let t: TestService;
beforeAll(async () => {
  t = await startTestService({ EVENT_SEQUENCER_INTERVAL_MS: "50" });
});
afterAll(async () => {
  await t.stop();
});

/** Every event of the account once the feed holds its latest change (test/support/events.ts). */
function eventsOf(accountId: string, pageSize = 1000): Promise<Event[]> {
  return accountEvents(t, accountId, pageSize);
}

function fund(accountId: string, amount: bigint) {
  return t.admin.adjustCredits({ accountId, amount, reason: "events test", idempotencyKey: newKey("fund") });
}

function reserve(accountId: string, amount: bigint, metadata: Record<string, string> = {}) {
  return t.credit.reserve({ accountId, idempotencyKey: newKey("res"), cost: { case: "amount", value: amount }, ttl: { seconds: 600n }, metadata });
}

describe("the feed of one account", () => {
  it("tells every change in sequence order, each sequence at least once, with what a consumer needs", async () => {
    const accountId = newAccountId("events");
    await fund(accountId, 1000n);
    const committed = await reserve(accountId, 100n, { model: "kling-pro", job_id: "j-1" });
    await t.credit.commit({ reservationId: committed.reservation!.reservationId, idempotencyKey: newKey("c"), actual: { case: "amount", value: 70n } });
    const released = await reserve(accountId, 50n);
    await t.credit.release({ reservationId: released.reservation!.reservationId, idempotencyKey: newKey("r"), reason: ReleaseReason.GENERATION_FAILED, detail: "oom" });
    const extended = await reserve(accountId, 10n);
    await t.credit.extendReservation({ reservationId: extended.reservation!.reservationId, idempotencyKey: newKey("e"), ttl: { seconds: 3600n } });
    await t.credit.changePlan({ accountId, planId: "basic-monthly", idempotencyKey: newKey("plan") });

    const events = await eventsOf(accountId);
    const sequences = [...new Set(events.map((e) => e.accountSequence))];
    expect(sequences).toEqual(sequences.map((_, i) => BigInt(i + 1)));
    for (let i = 1; i < events.length; i++) expect(events[i]!.accountSequence).toBeGreaterThanOrEqual(events[i - 1]!.accountSequence);
    expect(events.map((e) => EventKind[e.kind])).toEqual([
      "CREDITS_GRANTED",
      "HOLD_CREATED",
      "HOLD_COMMITTED",
      "HOLD_CREATED",
      "HOLD_RELEASED",
      "HOLD_CREATED",
      "HOLD_EXTENDED",
      "CREDITS_GRANTED",
      "PLAN_CHANGED",
    ]);
    expect(new Set(events.map((e) => e.eventId)).size).toBe(events.length);
    for (const e of events) expect(e.accountId).toBe(accountId);

    const grant = events[0]!.payload;
    expect(grant.case).toBe("creditsGranted");
    if (grant.case === "creditsGranted") expect(grant.value.amount).toBe(1000n);
    const commit = events[2]!.payload;
    expect(commit.case).toBe("hold");
    if (commit.case === "hold") {
      expect(commit.value.reservation!.state).toBe(ReservationState.COMMITTED);
      expect(commit.value.reservation!.capturedAmount).toBe(70n);
      expect(commit.value.reservation!.releasedAmount).toBe(30n);
      expect(commit.value.reservation!.metadata).toEqual({ model: "kling-pro", job_id: "j-1" });
    }
    const release = events[4]!.payload;
    if (release.case === "hold") expect(release.value.reservation!.releaseReason).toBe(ReleaseReason.GENERATION_FAILED);
    else expect.unreachable("HOLD_RELEASED carries the hold");
    const plan = events[8]!.payload;
    if (plan.case === "planChanged") {
      expect(plan.value.change).toBe(PlanChangeKind.SUBSCRIBED);
      expect(plan.value.plan!.planId).toBe("basic-monthly");
      expect(plan.value.proratedCharge!.amountMinor).toBe(plan.value.plan!.price!.amountMinor);
    } else expect.unreachable("PLAN_CHANGED carries the plan");
    // occurred_at is the account's time (the service's fake clock), recorded_at the database's.
    expect(timestampDate(events[0]!.occurredAt!).toISOString()).toBe(t.clock.now().toISOString());
    expect(events[0]!.recordedAt).toBeDefined();
  });

  it("resumes from every cursor it handed out with exactly the events after it", async () => {
    const accountId = newAccountId("events-resume");
    await fund(accountId, 1000n);
    for (let i = 0; i < 4; i++) {
      const r = await reserve(accountId, 10n);
      await t.credit.commit({ reservationId: r.reservation!.reservationId, idempotencyKey: newKey("c"), actual: { case: "amount", value: 5n } });
    }
    const all = await eventsOf(accountId);
    const paged = await eventsOf(accountId, 3);
    expect(paged.map((e) => e.eventId)).toEqual(all.map((e) => e.eventId));
    for (let i = 0; i < all.length; i++) {
      const page = await t.events.listEvents({ afterCursor: all[i]!.cursor, accountId, pageSize: 1000 });
      expect(page.events.map((e) => e.eventId)).toEqual(all.slice(i + 1).map((e) => e.eventId));
    }
  });

  it("filters by kind", async () => {
    const accountId = newAccountId("events-kinds");
    await fund(accountId, 1000n);
    const r = await reserve(accountId, 10n);
    await t.credit.commit({ reservationId: r.reservation!.reservationId, idempotencyKey: newKey("c"), actual: { case: "amount", value: 5n } });
    await eventsOf(accountId);
    const page = await t.events.listEvents({ accountId, kinds: [EventKind.HOLD_COMMITTED, EventKind.CREDITS_GRANTED], pageSize: 1000 });
    expect(page.events.map((e) => EventKind[e.kind])).toEqual(["CREDITS_GRANTED", "HOLD_COMMITTED"]);
  });
});

describe("a transaction that commits after a later one", () => {
  it("is still delivered to a reader already past the later one", async () => {
    const late = newAccountId("events-late");
    const early = newAccountId("events-early");
    // A write transaction that drew its batch id first and is still open (as a slow batch would be).
    const slow = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await slow.connect();
    try {
      await slow.query("begin");
      const { rows } = await slow.query<{ id: string }>("select nextval('event_batch_ids')::text as id");
      const batchId = rows[0]!.id;
      await slow.query("insert into event_batches (batch_id, event_count, recorded_at) values ($1, 1, now())", [batchId]);
      await slow.query(
        "insert into events (batch_id, idx, account_id, account_sequence, kind, occurred_at, payload) values ($1, 0, $2, 1, 'CREDITS_GRANTED', now(), ''::bytea)",
        [batchId, late],
      );
      // A later transaction commits and is read; the reader's cursor is past it.
      await fund(early, 100n);
      const seen = await eventsOf(early);
      const cursor = seen.at(-1)!.cursor;
      expect(BigInt(seen.at(-1)!.eventId.split("-")[0]!)).toBeGreaterThan(BigInt(batchId));
      await slow.query("commit");
      // The naive "id > cursor" would skip the slow batch for good: its id is below the cursor's.
      const deadline = Date.now() + 10_000;
      let after: Event[] = [];
      while (!after.some((e) => e.accountId === late)) {
        if (Date.now() > deadline) throw new Error("the late transaction's event never reached a reader past the later one");
        await fund(newAccountId("events-nudge"), 1n); // any write announces a change; the sequencer runs
        after = (await t.events.listEvents({ afterCursor: cursor, pageSize: 1000, kinds: [EventKind.CREDITS_GRANTED] })).events;
      }
      const event = after.find((e) => e.accountId === late)!;
      expect(event.eventId).toBe(`${batchId}-0`);
    } finally {
      await slow.end();
    }
  });
});

describe("bad input", () => {
  it.each([
    ["a malformed cursor", { afterCursor: "abc" }, "after_cursor"],
    ["a cursor with a sign", { afterCursor: "-1" }, "after_cursor"],
    ["a cursor past the end of the feed", { afterCursor: "999999999999999" }, "after_cursor"],
    ["an unknown kind", { kinds: [99 as EventKind] }, "kinds"],
    ["an unspecified kind", { kinds: [EventKind.UNSPECIFIED] }, "kinds"],
    ["a negative page size", { pageSize: -1 }, "page_size"],
    ["a page size over 1000", { pageSize: 1001 }, "page_size"],
    ["a malformed account id", { accountId: "has space" }, "account_id"],
  ])("%s is INVALID_ARGUMENT naming the field", async (_, request, field) => {
    const failure = await failureOf(t.events.listEvents(request));
    expect(failure.code).toBe(Code.InvalidArgument);
    expect(failure.metadata["field"]).toBe(field);
  });

  it("StreamEvents refuses a malformed cursor before sending anything", async () => {
    const failure = await failureOf(
      (async () => {
        for await (const _ of t.events.streamEvents({ afterCursor: "1.x" })) expect.unreachable("no event for a bad cursor");
      })(),
    );
    expect(failure.code).toBe(Code.InvalidArgument);
  });
});

describe("StreamEvents", () => {
  it("sends what is in the feed, then each new change as it commits, in sequence order", async () => {
    const accountId = newAccountId("events-stream");
    await fund(accountId, 1000n);
    const controller = new AbortController();
    const received: Event[] = [];
    const stream = (async () => {
      try {
        for await (const event of t.events.streamEvents({ accountId }, { signal: controller.signal })) {
          received.push(event);
          if (event.accountSequence === 3n) controller.abort();
        }
      } catch (err) {
        if (!controller.signal.aborted) throw err;
      }
    })();
    const r = await reserve(accountId, 10n);
    await t.credit.commit({ reservationId: r.reservation!.reservationId, idempotencyKey: newKey("c"), actual: { case: "amount", value: 5n } });
    await stream;
    expect(received.map((e) => [e.accountSequence, EventKind[e.kind]])).toEqual([
      [1n, "CREDITS_GRANTED"],
      [2n, "HOLD_CREATED"],
      [3n, "HOLD_COMMITTED"],
    ]);
  });
});
