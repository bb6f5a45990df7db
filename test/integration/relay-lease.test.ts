import { randomUUID } from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PostgresRelayLeases, RELAY_LOCK_CLASS } from "../../src/store/relay-lease.js";
import { TEST_DATABASE_URL } from "../support/env.js";

/**
 * The relay's lease on the real Postgres: one holder per stream; a holder whose lock connection
 * is cut learns it at once (its signal aborts) and can store no cursor after that; another takes
 * the lease as soon as the session is gone.
 */

let admin: pg.Client;
beforeAll(async () => {
  admin = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await admin.connect();
});
afterAll(async () => {
  await admin.end();
});

function leases(stream: string, onLost?: (err: unknown) => void) {
  return new PostgresRelayLeases({ url: TEST_DATABASE_URL, stream, checkMs: 200, checkTimeoutMs: 1000, onLost });
}

async function holderPid(stream: string): Promise<number | null> {
  const { rows } = await admin.query<{ pid: number }>(
    `select pid from pg_locks where locktype = 'advisory' and classid::bigint = $1 and objid::bigint = (hashtext($2)::bigint & 4294967295) and objsubid = 2 and granted`,
    [RELAY_LOCK_CLASS, stream],
  );
  return rows[0]?.pid ?? null;
}

describe("the relay's lease", () => {
  it("has one holder per stream; relays of another stream do not wait for it", async () => {
    const stream = `lease-${randomUUID()}`;
    const a = leases(stream);
    const b = leases(stream);
    const other = leases(`${stream}-other`);
    const held = await a.tryAcquire();
    expect(held).not.toBeNull();
    expect(await b.tryAcquire()).toBeNull();
    const elsewhere = await other.tryAcquire();
    expect(elsewhere).not.toBeNull();
    await held!.release();
    const next = await b.tryAcquire();
    expect(next).not.toBeNull();
    await next!.release();
    await elsewhere!.release();
    for (const l of [a, b, other]) await l.close();
  });

  it("stores the cursor on the lock's connection, and a holder that lost it stops at once and can store nothing", async () => {
    const stream = `lease-${randomUUID()}`;
    const lostErrors: unknown[] = [];
    const a = leases(stream, (err) => lostErrors.push(err));
    const b = leases(stream);
    const held = (await a.tryAcquire())!;
    expect(await held.loadCursor()).toBeNull();
    await held.saveCursor({ position: 5n, idx: 2 }, { stored: 3, duplicates: 1 });
    expect(await held.loadCursor()).toEqual({ position: 5n, idx: 2 });
    const { rows } = await admin.query(`select published, duplicates from event_relay_cursors where stream = $1`, [stream]);
    expect(rows[0]).toEqual({ published: "3", duplicates: "1" });

    // Cut the holder's session, as Postgres does when it finds the holder's machine gone.
    const pid = await holderPid(stream);
    expect(pid).not.toBeNull();
    const cutAt = performance.now();
    await admin.query(`select pg_terminate_backend($1)`, [pid]);
    await new Promise<void>((resolve) => (held.lost.aborted ? resolve() : held.lost.addEventListener("abort", () => resolve())));
    const noticedMs = performance.now() - cutAt;
    expect(noticedMs).toBeLessThan(2000);
    expect(lostErrors).toHaveLength(1);
    await expect(held.saveCursor({ position: 9n, idx: null }, { stored: 1, duplicates: 0 })).rejects.toThrow();

    // The lock went with the session: the next relay takes it on its first try.
    const next = await b.tryAcquire();
    expect(next).not.toBeNull();
    expect(await next!.loadCursor()).toEqual({ position: 5n, idx: 2 });
    await next!.release();
    await a.close();
    await b.close();
  });

  it("names the holding process on its lock connection", async () => {
    const stream = `lease-${randomUUID()}`;
    const a = leases(stream);
    const held = (await a.tryAcquire())!;
    const pid = await holderPid(stream);
    const { rows } = await admin.query<{ application_name: string }>(`select application_name from pg_stat_activity where pid = $1`, [pid]);
    expect(rows[0]!.application_name).toBe(`credit-service-relay:${process.pid}`);
    await held.release();
    await a.close();
  });
});
