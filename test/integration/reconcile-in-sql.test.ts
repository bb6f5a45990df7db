/**
 * Reconcile compares in Postgres: what comes back over the wire is what differs, not the
 * account's sums. Accounts are made by SQL (settled holds, an open hold across two buckets), then
 * tampered with, one kind of inconsistency per test; each must be reported exactly as the
 * domain's rules say, and the rows Postgres sent (DataRow messages on the connection, whatever
 * the statements) must stay a handful: a large consistent account sends none.
 */
import { randomUUID } from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Difference } from "../../src/domain/reconcile.js";
import { reconcileAccount } from "../../src/store/reconcile-scan.js";
import { TEST_DATABASE_URL } from "../support/env.js";
import { newAccountId } from "../support/harness.js";
import { INSERT_SETTLED_RESERVATIONS } from "../support/settled-holds.js";
import { rebuildUsage } from "../support/usage-rollup.js";

let admin: pg.Pool;
let ledger: pg.Pool;
/** DataRow messages received by the ledger pool's connections since the last `reset`. */
let dataRows = 0;

beforeAll(async () => {
  admin = new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 2 });
  ledger = new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 1 });
  ledger.on("connect", (client) => {
    (client as unknown as { connection: { on(event: "dataRow", listener: () => void): void } }).connection.on("dataRow", () => {
      dataRows += 1;
    });
  });
});
afterAll(async () => {
  await admin.end();
  await ledger.end();
});

/** Reconcile on the counted pool: the differences, and the rows Postgres sent for them. */
async function reconcile(accountId: string): Promise<{ differences: Difference[]; rows: number }> {
  dataRows = 0;
  const differences = await reconcileAccount(ledger, accountId);
  return { differences, rows: dataRows };
}

/**
 * An account made by SQL, consistent: bucket A (granted `settled` × 10 + 100) and bucket B
 * (granted 50); `settled` committed holds of 5 from A (HOLD 5, CAPTURE 4, RELEASE 1); one open
 * hold of 30, 20 from A and 10 from B. The open hold never falls due: other test files share the
 * database, and their servers' sweepers (on clocks years ahead) would expire it, tampered or not.
 */
async function account(settled: number) {
  const accountId = newAccountId("rec-sql");
  const [a, b, open] = [randomUUID(), randomUUID(), randomUUID()];
  const grantedA = BigInt(settled) * 10n + 100n;
  const client = await admin.connect();
  try {
    await client.query("begin");
    await client.query(`insert into accounts (account_id, created_at) values ($1, now())`, [accountId]);
    await client.query(
      `insert into buckets (account_id, bucket_id, kind, granted, remaining, held, valid_from, expires_at, source_ref, created_at)
       values ($1, $2, 'ADJUSTMENT', $4, $5, 20, now() - interval '1 day', null, 'reconcile-sql', now()),
              ($1, $3, 'ADJUSTMENT', 50, 50, 10, now() - interval '1 day', null, 'reconcile-sql', now())`,
      [accountId, a, b, grantedA.toString(), (grantedA - 4n * BigInt(settled)).toString()],
    );
    await client.query(
      `insert into ledger_entries (account_id, kind, bucket_id, amount, caller, metadata, created_at)
       values ($1, 'ADJUST', $2, $4, 'reconcile-sql', '{}', now()), ($1, 'ADJUST', $3, 50, 'reconcile-sql', '{}', now())`,
      [accountId, a, b, grantedA.toString()],
    );
    await client.query(
      INSERT_SETTLED_RESERVATIONS,
      [accountId, settled],
    );
    await client.query(
      `insert into ledger_entries (account_id, kind, bucket_id, reservation_id, amount, caller, metadata, created_at)
       select $1, k.kind, $2, r.reservation_id, k.amount, 'reconcile-sql', '{}', now()
         from reservations r cross join (values ('HOLD', 5), ('CAPTURE', 4), ('RELEASE', 1)) as k(kind, amount) where r.account_id = $1`,
      [accountId, a],
    );
    await client.query(
      `insert into reservations (account_id, reservation_id, state, held_amount, captured_amount, released_amount, allocations, expires_at, created_at, settled_at)
       values ($1, $2, 'HELD', 30, 0, 0, $3::jsonb, '9000-01-01', now(), null)`,
      [accountId, open, JSON.stringify([{ bucketId: a, amount: "20" }, { bucketId: b, amount: "10" }])],
    );
    await client.query(
      `insert into ledger_entries (account_id, kind, bucket_id, reservation_id, amount, caller, metadata, created_at)
       values ($1, 'HOLD', $2, $4, 20, 'reconcile-sql', '{}', now()), ($1, 'HOLD', $3, $4, 10, 'reconcile-sql', '{}', now())`,
      [accountId, a, b, open],
    );
    await rebuildUsage(client, accountId);
    await client.query("commit");
  } catch (err) {
    await client.query("rollback");
    throw err;
  } finally {
    client.release();
  }
  /** The settled hold at `rank` in id order. */
  const settledAt = async (rank: number): Promise<string> => {
    const { rows } = await admin.query(`select reservation_id from reservations where account_id = $1 and state = 'COMMITTED' order by reservation_id offset $2 limit 1`, [
      accountId,
      rank,
    ]);
    return rows[0].reservation_id as string;
  };
  return { accountId, a, b, open, settledAt };
}

const exists = (subject: string): Difference => ({ subject, field: "exists", stored: 0n, fromEntries: 1n });

describe("Reconcile sends back only what differs", () => {
  it("an account of 20,000 settled holds and an open one reconciles to zero with no row sent", async () => {
    const { accountId } = await account(20_000);
    await admin.query(`analyze accounts, buckets, reservations, ledger_entries`);
    expect(await reconcile(accountId)).toEqual({ differences: [], rows: 0 });
  }, 120_000);

  it("a bucket's totals off: its fields; it, and its totals, are all that comes back", async () => {
    const { accountId, a } = await account(50);
    await admin.query(`update buckets set granted = granted + 1, held = held - 2 where bucket_id = $1`, [a]);
    expect(await reconcile(accountId)).toEqual({
      differences: [
        { subject: `bucket ${a}`, field: "granted", stored: 601n, fromEntries: 600n },
        { subject: `bucket ${a}`, field: "held", stored: 18n, fromEntries: 20n },
      ],
      rows: 2, // the suspect, then its exact totals
    });
  });

  it("a reservation's captured and released amounts off: that reservation only", async () => {
    const { accountId, settledAt } = await account(50);
    const [captured, released] = [await settledAt(7), await settledAt(31)];
    await admin.query(`update reservations set captured_amount = 3 where reservation_id = $1`, [captured]);
    await admin.query(`update reservations set released_amount = 0 where reservation_id = $1`, [released]);
    const { differences, rows } = await reconcile(accountId);
    expect(differences).toEqual(
      [
        { subject: `reservation ${captured}`, field: "captured", stored: 3n, fromEntries: 4n },
        { subject: `reservation ${released}`, field: "released", stored: 0n, fromEntries: 1n },
      ].sort((x, y) => (x.subject < y.subject ? -1 : 1)),
    );
    expect(rows).toBe(4); // two suspects, then each one's single (reservation, bucket) row
  });

  it("a settled hold whose entries still hold credits", async () => {
    const { accountId, a, settledAt } = await account(50);
    const id = await settledAt(3);
    await admin.query(
      `insert into ledger_entries (account_id, kind, bucket_id, reservation_id, amount, caller, metadata, created_at) values ($1, 'HOLD', $2, $3, 1, 'tamper', '{}', now())`,
      [accountId, a, id],
    );
    await admin.query(`update buckets set held = held + 1 where bucket_id = $1`, [a]); // the bucket agrees with its entries
    expect(await reconcile(accountId)).toEqual({ differences: [{ subject: `reservation ${id}`, field: "held", stored: 0n, fromEntries: 1n }], rows: 2 });
  });

  it("an open hold's share in one bucket off, a bucket named twice, a share without an allocation", async () => {
    const { accountId, a, b, open } = await account(50);
    const setAllocations = (allocations: { bucketId: string; amount: string }[]) =>
      admin.query(`update reservations set allocations = $2::jsonb where reservation_id = $1`, [open, JSON.stringify(allocations)]);

    await setAllocations([{ bucketId: a, amount: "21" }, { bucketId: b, amount: "9" }]); // same total, shares swapped by one
    expect(await reconcile(accountId)).toEqual({
      differences: [
        { subject: `reservation ${open} bucket ${a}`, field: "held", stored: 21n, fromEntries: 20n },
        { subject: `reservation ${open} bucket ${b}`, field: "held", stored: 9n, fromEntries: 10n },
      ],
      rows: 3,
    });

    await setAllocations([{ bucketId: a, amount: "10" }, { bucketId: a, amount: "10" }, { bucketId: b, amount: "10" }]);
    expect((await reconcile(accountId)).differences).toEqual([
      { subject: `reservation ${open} bucket ${a}`, field: "held", stored: 10n, fromEntries: 20n },
      { subject: `reservation ${open} bucket ${a}`, field: "held", stored: 10n, fromEntries: 20n },
    ]);

    await setAllocations([{ bucketId: a, amount: "20" }]); // B's share of 10 has no allocation
    expect((await reconcile(accountId)).differences).toEqual([{ subject: `reservation ${open}`, field: "held", stored: 20n, fromEntries: 30n }]);
  });

  it("a bucket missing, and an entry naming a bucket that never existed", async () => {
    const { accountId, b, open } = await account(50);
    const ghost = randomUUID();
    await admin.query(`delete from buckets where bucket_id = $1`, [b]);
    await admin.query(`insert into ledger_entries (account_id, kind, bucket_id, amount, caller, metadata, created_at) values ($1, 'ADJUST', $2, 7, 'tamper', '{}', now())`, [
      accountId,
      ghost,
    ]);
    await rebuildUsage(admin, accountId); // the rollup agrees with the entries: the entries are under test
    const { differences, rows } = await reconcile(accountId);
    expect(differences).toEqual([exists(`bucket ${b}`), exists(`bucket ${ghost}`)].sort((x, y) => (x.subject < y.subject ? -1 : 1)));
    expect(rows).toBe(4); // two suspects, then each one's totals
    expect(differences.some((d) => d.subject.includes(open))).toBe(false); // its allocations and shares still agree
  });

  it("a reservation missing, and an entry naming a reservation that never existed", async () => {
    const { accountId, a, settledAt } = await account(50);
    const gone = await settledAt(11);
    const ghost = randomUUID();
    await admin.query(`delete from reservations where reservation_id = $1`, [gone]);
    // A hold and its release: the bucket's totals are unchanged.
    await admin.query(
      `insert into ledger_entries (account_id, kind, bucket_id, reservation_id, amount, caller, metadata, created_at)
       values ($1, 'HOLD', $2, $3, 1, 'tamper', '{}', now()), ($1, 'RELEASE', $2, $3, 1, 'tamper', '{}', now())`,
      [accountId, a, ghost],
    );
    await rebuildUsage(admin, accountId);
    const { differences, rows } = await reconcile(accountId);
    expect(differences).toEqual([exists(`reservation ${gone}`), exists(`reservation ${ghost}`)].sort((x, y) => (x.subject < y.subject ? -1 : 1)));
    expect(rows).toBe(4);
  });

  it("amounts past 2^53 that differ by one are found (the float8 sums are exact below it only)", async () => {
    const { accountId, a, settledAt } = await account(50);
    const id = await settledAt(5);
    const big = 2n ** 60n;
    // Credits far beyond any real account: a hold and capture of 2^60 more, and as much more granted,
    // so the bucket agrees; the reservation says it captured one more than its entries.
    await admin.query(
      `insert into ledger_entries (account_id, kind, bucket_id, reservation_id, amount, caller, metadata, created_at)
       values ($1, 'ADJUST', $2, null, $4, 'tamper', '{}', now()), ($1, 'HOLD', $2, $3, $4, 'tamper', '{}', now()), ($1, 'CAPTURE', $2, $3, $4, 'tamper', '{}', now())`,
      [accountId, a, id, big.toString()],
    );
    await admin.query(`update buckets set granted = granted + $2 where bucket_id = $1`, [a, big.toString()]);
    await admin.query(`update reservations set captured_amount = $2 where reservation_id = $1`, [id, (big + 5n).toString()]);
    await rebuildUsage(admin, accountId);
    // As float8, 2^60 + 5 and 2^60 + 4 are the same number.
    expect(Number(big + 5n)).toBe(Number(big + 4n));
    expect((await reconcile(accountId)).differences).toEqual([{ subject: `reservation ${id}`, field: "captured", stored: big + 5n, fromEntries: big + 4n }]);
    // And when they agree, the bucket and the reservation, past the bound, are read in full and found consistent.
    await admin.query(`update reservations set captured_amount = $2 where reservation_id = $1`, [id, (big + 4n).toString()]);
    expect(await reconcile(accountId)).toEqual({ differences: [], rows: 4 });
  });
});
