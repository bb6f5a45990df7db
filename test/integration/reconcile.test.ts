/**
 * Reconcile against the real Postgres and a real server: accounts built by real calls (and, for a
 * large one, by SQL the way bench/reconcile.ts builds one), then tampered with by SQL, must each
 * be reported as the field that differs. And Reconcile is a read: it must hold no lock a writer
 * of the account would wait for.
 */
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { randomUUID } from "node:crypto";
import pg from "pg";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Difference } from "../../src/domain/reconcile.js";
import { ReleaseReason } from "../../src/client/index.js";
import { TEST_DATABASE_URL } from "../support/env.js";
import { newAccountId, newKey, startTestService, TEST_EPOCH, type TestService } from "../support/harness.js";
import { INSERT_SETTLED_RESERVATIONS } from "../support/settled-holds.js";
import { rebuildUsage } from "../support/usage-rollup.js";

const DAY = 86_400_000;
/** Rows per chunk of the earlier, chunked Reconcile: tampering on either side of its boundaries stays a useful spread. */
const RECONCILE_CHUNK_ROWS = 2000;

let t: TestService;
let db: pg.Pool;
beforeAll(async () => {
  t = await startTestService();
  db = new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 4 });
});
afterAll(async () => {
  await t.stop();
  await db.end();
});

/**
 * Holds left open by a test, released after it: other test files share the database, and their
 * sweepers would otherwise expire these holds (one of them over a tampered allocation) later.
 */
const openHolds: string[] = [];
afterEach(async () => {
  for (const reservationId of openHolds.splice(0)) {
    await t.credit.release({ reservationId, idempotencyKey: newKey("cleanup"), reason: ReleaseReason.CANCELLED });
  }
});

/** Reconcile through the RPC; the differences as the store reports them. */
async function reconcile(accountId: string): Promise<Difference[]> {
  const { differences, consistent } = await t.admin.reconcile({ accountId });
  expect(consistent).toBe(differences.length === 0);
  return differences.map((d) => ({ subject: d.subject, field: d.field, stored: d.stored, fromEntries: d.fromEntries }));
}

async function reserve(accountId: string, amount: bigint): Promise<string> {
  const { reservation } = await t.credit.reserve({ accountId, idempotencyKey: newKey("res"), cost: { case: "amount", value: amount } });
  return reservation!.reservationId;
}

/**
 * An account with two buckets (30 credits expiring tomorrow, taken first, and 100 that never
 * expire), a hold of 50 still open across both, a hold of 10 committed at 7 and one of 5 released.
 */
async function busyAccount() {
  const accountId = newAccountId("rec");
  const soon = await t.admin.adjustCredits({
    accountId,
    amount: 30n,
    reason: "reconcile test",
    idempotencyKey: newKey("fund"),
    expiresAt: timestampFromDate(new Date(TEST_EPOCH.getTime() + DAY)),
  });
  const never = await t.admin.adjustCredits({ accountId, amount: 100n, reason: "reconcile test", idempotencyKey: newKey("fund") });
  const open = await reserve(accountId, 50n);
  openHolds.push(open);
  const committed = await reserve(accountId, 10n);
  await t.credit.commit({ reservationId: committed, idempotencyKey: newKey("commit"), actual: { case: "amount", value: 7n } });
  const released = await reserve(accountId, 5n);
  await t.credit.release({ reservationId: released, idempotencyKey: newKey("release"), reason: ReleaseReason.CANCELLED });
  return { accountId, soon: soon.bucket!.bucketId, never: never.bucket!.bucketId, open, committed, released };
}

describe("Reconcile finds every difference", () => {
  it("an account built by real calls, with a hold open across two buckets, reconciles to zero", async () => {
    const { accountId, open } = await busyAccount();
    const { rows } = await db.query(`select allocations from reservations where reservation_id = $1`, [open]);
    expect(rows[0].allocations).toHaveLength(2); // the open hold takes from both buckets
    expect(await reconcile(accountId)).toEqual([]);
  });

  it("a bucket whose remaining credits were changed by hand", async () => {
    const { accountId, never } = await busyAccount();
    await db.query(`update buckets set remaining = remaining - 1 where bucket_id = $1`, [never]);
    // 100 granted, 20 of it held by the open hold (30 came from the other bucket), 7 captured from it.
    expect(await reconcile(accountId)).toEqual([{ subject: `bucket ${never}`, field: "remaining", stored: 92n, fromEntries: 93n }]);
  });

  it("a reservation whose captured amount was changed by hand", async () => {
    const { accountId, committed } = await busyAccount();
    await db.query(`update reservations set captured_amount = 8 where reservation_id = $1`, [committed]);
    expect(await reconcile(accountId)).toEqual([{ subject: `reservation ${committed}`, field: "captured", stored: 8n, fromEntries: 7n }]);
  });

  it("an allocation changed by hand: the hold's total and that bucket's share both differ", async () => {
    const { accountId, open, never } = await busyAccount();
    const setShare = (amount: bigint) =>
      db.query(
        `update reservations set allocations = (select jsonb_agg(case when a ->> 'bucketId' = $2 then jsonb_set(a, '{amount}', to_jsonb($3::text)) else a end)
           from jsonb_array_elements(allocations) a) where reservation_id = $1`,
        [open, never, amount.toString()],
      );
    await setShare(22n);
    expect(await reconcile(accountId)).toEqual([
      { subject: `reservation ${open}`, field: "held", stored: 52n, fromEntries: 50n },
      { subject: `reservation ${open} bucket ${never}`, field: "held", stored: 22n, fromEntries: 20n },
    ]);
    await setShare(20n); // as it was, so that the hold can be released
    expect(await reconcile(accountId)).toEqual([]);
  });

  it("entries that name a bucket or a reservation that is not stored", async () => {
    const { accountId, never } = await busyAccount();
    const ghostBucket = randomUUID();
    const ghostHold = randomUUID();
    await db.query(
      `insert into ledger_entries (account_id, kind, bucket_id, reservation_id, amount, caller, metadata, created_at)
       values ($1, 'ADJUST', $2, null, 5, 'tamper', '{}', now()), ($1, 'HOLD', $3, $4, 4, 'tamper', '{}', now())`,
      [accountId, ghostBucket, never, ghostHold],
    );
    // The rollup agrees with the entries (they are the ones under test here), ghosts included.
    await rebuildUsage(db, accountId);
    expect(await reconcile(accountId)).toEqual([
      { subject: `bucket ${never}`, field: "held", stored: 20n, fromEntries: 24n },
      { subject: `bucket ${ghostBucket}`, field: "exists", stored: 0n, fromEntries: 1n },
      { subject: `reservation ${ghostHold}`, field: "exists", stored: 0n, fromEntries: 1n },
    ]);
  });
});

describe("Reconcile of an account with thousands of holds", () => {
  /**
   * Three buckets with their ADJUST entries, then `holds` committed reservations of 5, each
   * holding 3 from one bucket (captured 2, released 1) and 2 from the next (captured 2), with
   * the buckets' remaining credits to match. Reconcile reads the entries summed per
   * (reservation, bucket), in reservation order after the buckets' own three rows: reservation k
   * is rows 3 + 2k and 4 + 2k, so some reservations straddle a boundary between two chunks.
   */
  async function manyHolds(accountId: string, holds: number): Promise<void> {
    const client = await db.connect();
    try {
      await client.query("begin");
      await client.query(`insert into accounts (account_id, created_at) values ($1, now())`, [accountId]);
      await client.query(
        `insert into buckets (account_id, bucket_id, kind, granted, remaining, held, valid_from, expires_at, source_ref, created_at)
         select $1, gen_random_uuid(), 'ADJUSTMENT', $2::bigint * 10, $2::bigint * 10, 0, now() - interval '1 day', null, 'reconcile-test', now() + g * interval '1 second'
           from generate_series(1, 3) g`,
        [accountId, holds],
      );
      await client.query(
        `insert into ledger_entries (account_id, kind, bucket_id, amount, caller, metadata, created_at)
         select account_id, 'ADJUST', bucket_id, granted, 'reconcile-test', '{}', now() from buckets where account_id = $1`,
        [accountId],
      );
      await client.query(
        INSERT_SETTLED_RESERVATIONS,
        [accountId, holds],
      );
      await client.query(
        `with b as (select bucket_id, row_number() over (order by created_at) - 1 as n from buckets where account_id = $1),
              r as (select reservation_id, row_number() over (order by reservation_id) as n from reservations where account_id = $1)
         insert into ledger_entries (account_id, kind, bucket_id, reservation_id, amount, caller, metadata, created_at)
         select $1, e.kind, b.bucket_id, r.reservation_id, e.amount, 'reconcile-test', '{}', now()
           from r cross join (values (0, 'HOLD', 3), (0, 'CAPTURE', 2), (0, 'RELEASE', 1), (1, 'HOLD', 2), (1, 'CAPTURE', 2)) as e(part, kind, amount)
           join b on b.n = (r.n + e.part) % 3`,
        [accountId],
      );
      await client.query(
        `update buckets b set remaining = b.granted - c.captured
           from (select bucket_id, sum(amount) as captured from ledger_entries where account_id = $1 and kind = 'CAPTURE' group by bucket_id) c
          where b.account_id = $1 and b.bucket_id = c.bucket_id`,
        [accountId],
      );
      await rebuildUsage(client, accountId);
      await client.query("commit");
    } catch (err) {
      await client.query("rollback");
      throw err;
    } finally {
      client.release();
    }
  }

  /** The reservation at `rank` (from 0) in reservation id order. */
  async function reservationAt(accountId: string, rank: number): Promise<string> {
    const { rows } = await db.query(`select reservation_id from reservations where account_id = $1 order by reservation_id offset $2 limit 1`, [accountId, rank]);
    return rows[0].reservation_id as string;
  }

  it("reconciles to zero; tampered holds on either side of chunk boundaries and at the end, and a tampered bucket, are each found", async () => {
    const accountId = newAccountId("rec-many");
    const holds = 3 * RECONCILE_CHUNK_ROWS;
    await manyHolds(accountId, holds);
    expect(await reconcile(accountId)).toEqual([]);

    // The reservation whose two rows are the first chunk's last and the second chunk's first, its
    // neighbours, one that straddles half a chunk (checks run in slices), and the last one.
    const straddles = (RECONCILE_CHUNK_ROWS - 4) / 2;
    const ranks = [straddles - 1, straddles, straddles + 1, straddles / 2 - 1, holds - 1];
    const tampered = await Promise.all(ranks.map((rank) => reservationAt(accountId, rank)));
    await db.query(`update reservations set released_amount = 2 where reservation_id = any($1::uuid[])`, [tampered]);
    const { rows } = await db.query(`select bucket_id from buckets where account_id = $1 order by created_at limit 1`, [accountId]);
    const bucketId = rows[0].bucket_id as string;
    await db.query(`update buckets set held = 1 where bucket_id = $1`, [bucketId]);

    expect(await reconcile(accountId)).toEqual([
      { subject: `bucket ${bucketId}`, field: "held", stored: 1n, fromEntries: 0n },
      ...tampered.sort().map((id) => ({ subject: `reservation ${id}`, field: "released", stored: 2n, fromEntries: 1n })),
    ]);
  }, 120_000);
});

describe("Reconcile holds no lock a writer waits for", () => {
  it("while it runs, the account's row can be locked for update and its transaction has written nothing", async () => {
    const { accountId } = await busyAccount();
    // Pause Reconcile where it first reads the entries: the blocker holds the table until told.
    const blocker = await db.connect();
    const probe = await db.connect();
    try {
      await blocker.query("begin");
      await blocker.query("lock table ledger_entries in access exclusive mode");
      const blockerPid = (await blocker.query<{ pid: number }>("select pg_backend_pid() as pid")).rows[0]!.pid;
      const running = t.service.store.reconcile(accountId);
      let pid: number | undefined;
      const deadline = performance.now() + 20_000;
      while (pid === undefined && performance.now() < deadline) {
        const { rows } = await probe.query<{ pid: number }>(`select pid from pg_stat_activity where $1 = any(pg_blocking_pids(pid))`, [blockerPid]);
        pid = rows[0]?.pid;
        if (pid === undefined) await new Promise((r) => setTimeout(r, 10));
      }
      expect(pid, "Reconcile never reached the entries").toBeDefined();
      // On its own connection, not one the hot path's batches take turns on.
      const { rows: app } = await probe.query(`select application_name from pg_stat_activity where pid = $1`, [pid]);
      expect(app).toEqual([{ application_name: "credit-service-reconcile" }]);

      // Its locks: only what reading takes (no FOR SHARE/UPDATE on any table), and no transaction id (it wrote nothing, locked no row).
      const { rows: locks } = await probe.query(
        `select c.relname, l.mode from pg_locks l join pg_class c on c.oid = l.relation where l.pid = $1 and l.granted and l.mode <> 'AccessShareLock'`,
        [pid],
      );
      expect(locks).toEqual([]);
      const { rows: activity } = await probe.query(`select backend_xid from pg_stat_activity where pid = $1`, [pid]);
      expect(activity).toEqual([{ backend_xid: null }]);
      // A writer of the account takes its row at once.
      await probe.query("begin");
      await expect(probe.query(`select account_id from accounts where account_id = $1 for update nowait`, [accountId])).resolves.toMatchObject({ rowCount: 1 });
      await probe.query("rollback");

      await blocker.query("rollback");
      expect(await running).toEqual([]);
    } finally {
      await blocker.query("rollback").catch(() => {});
      await probe.query("rollback").catch(() => {});
      blocker.release();
      probe.release();
    }
  });
});
