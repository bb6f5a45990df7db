import type { MikroORM } from "@mikro-orm/postgresql";
import type { AccountCommand, CommandOutcome, EntryQuery, LedgerStore, StoredEntry } from "../app/ports.js";
import type { AccountBook } from "../domain/account-book.js";
import { type Failure, invariant } from "../domain/errors.js";
import type { EntryKind } from "../domain/ledger-entry.js";
import { applyDue } from "../domain/maintenance.js";
import { type Difference, reconcileBook, type EntrySums } from "../domain/reconcile.js";
import type { Reservation } from "../domain/reservation.js";
import { persistBook } from "./persist.js";
import { accountTime, loadAccountHead, loadBook } from "./account-loader.js";
import { bucketFromRow, reservationFromRow } from "./rows.js";
import { LedgerEntryRow } from "./schema.js";
import { type Query, queryOn } from "./sql.js";
import { guardUnavailable } from "./unavailable.js";

function failed(failure: Failure): CommandOutcome<never> {
  return { kind: "failed", failure };
}

function isOperationConflict(err: unknown): boolean {
  const e = err as { code?: string; constraint?: string };
  return e?.code === "23505" && e.constraint === "operations_pkey";
}

/** Postgres implementation of the LedgerStore port: one transaction per command, account row locked first. */
export class PostgresLedgerStore implements LedgerStore {
  constructor(
    private readonly orm: MikroORM,
    /** Ids for buckets the store's due-work pass creates (subscription periods). */
    private readonly newId: () => string,
  ) {}

  private q(): Query {
    return queryOn(this.orm.em.fork());
  }

  async execute<T>(command: AccountCommand<T>, now: Date): Promise<CommandOutcome<T>> {
    return guardUnavailable(async () => {
      try {
        return await this.executeOnce(command, now);
      } catch (err) {
        // Two calls with one key on an account created by both at once: the loser replays the winner.
        if (isOperationConflict(err)) return this.executeOnce(command, now);
        throw err;
      }
    });
  }

  private async executeOnce<T>(command: AccountCommand<T>, now: Date): Promise<CommandOutcome<T>> {
    let accountId: string;
    let reservationId: string | null = null;
    if ("reservationId" in command.target) {
      reservationId = command.target.reservationId;
      const rows = await this.q()(`select account_id from reservations where reservation_id = ?::uuid`, [reservationId]);
      if (rows.length === 0) {
        return failed({ reason: "RESERVATION_NOT_FOUND", message: `reservation ${reservationId} not found`, metadata: { reservation_id: reservationId } });
      }
      accountId = rows[0]!["account_id"] as string;
    } else {
      accountId = command.target.accountId;
    }
    return this.orm.em.fork().transactional(async (em) => {
      const q = queryOn(em);
      if (command.createAccount) {
        await q(`insert into accounts (account_id, created_at) values (?, ?) on conflict do nothing`, [accountId, now]);
      }
      const head = await loadAccountHead(q, accountId, "wait");
      if (!head) {
        return failed({ reason: "ACCOUNT_NOT_FOUND", message: `account ${accountId} not found`, metadata: { account_id: accountId } });
      }
      const claim = command.idempotency;
      const step = command.clockStepMs ?? 0;
      // A test-clock step is taken before loading, so the holds that fall due during it are loaded too.
      const at = new Date(accountTime(head, now).getTime() + step);
      const { book, operation: recorded } = await loadBook(q, accountId, head, at, reservationId, claim?.key ?? null);
      if (claim && recorded) {
        if (Buffer.compare(recorded.requestHash, claim.requestHash) === 0) return { kind: "replayed", response: new Uint8Array(recorded.response) };
        return failed({
          reason: "IDEMPOTENCY_KEY_REUSED",
          message: `idempotency key ${claim.key} was already used for a different request`,
          metadata: { idempotency_key: claim.key },
        });
      }
      if (step > 0) book.advanceClock(step);
      applyDue(book, at, this.newId);
      const dueEntries = book.entries.length;
      const result = command.run(book, at);
      // Entries are stamped with the account's time after the command (a test clock may have moved).
      const ctx = { caller: command.caller, idempotencyKey: claim?.key ?? null, now: accountTime({ clock_offset_ms: book.clockOffsetMs }, now) };
      if (!result.ok) {
        invariant(book.entries.length === dueEntries, "a failed command changed the book");
        await persistBook(q, book, ctx);
        return failed(result.failure);
      }
      const response = command.encode(result.value, book, at);
      const record = claim
        ? [
            {
              sql: `insert into operations (account_id, idempotency_key, method, request_hash, response, created_at) values (?, ?, ?, ?, ?, ?)`,
              params: [accountId, claim.key, claim.method, claim.requestHash, Buffer.from(response), now],
            },
          ]
        : [];
      // The effect and the operation record in one statement of the same transaction.
      await persistBook(q, book, ctx, record);
      return { kind: "applied", value: result.value, response };
    });
  }

  async readBook(accountId: string, now: Date): Promise<AccountBook | null> {
    return guardUnavailable(async () => {
      const q = this.q();
      const head = await loadAccountHead(q, accountId, "none");
      return head ? (await loadBook(q, accountId, head, accountTime(head, now), null)).book : null;
    });
  }

  async findReservation(reservationId: string): Promise<Reservation | null> {
    return guardUnavailable(async () => {
      const rows = await this.q()(`select * from reservations where reservation_id = ?::uuid`, [reservationId]);
      return rows.length === 0 ? null : reservationFromRow(rows[0]!);
    });
  }

  async accountExists(accountId: string): Promise<boolean> {
    return guardUnavailable(async () => (await this.q()(`select 1 from accounts where account_id = ?`, [accountId])).length > 0);
  }

  async listEntries(query: EntryQuery): Promise<StoredEntry[]> {
    return guardUnavailable(async () => {
      const where: Record<string, unknown> = { accountId: query.accountId };
      if (query.afterEntryId !== null) where["entryId"] = { $gt: query.afterEntryId };
      const createdAt: Record<string, Date> = {};
      if (query.from) createdAt["$gte"] = query.from;
      if (query.to) createdAt["$lt"] = query.to;
      if (Object.keys(createdAt).length > 0) where["createdAt"] = createdAt;
      if (query.kinds.length > 0) where["kind"] = { $in: [...query.kinds] };
      const rows = await this.orm.em.fork().find(LedgerEntryRow, where, { orderBy: { entryId: "asc" }, limit: query.limit });
      return rows.map((r) => ({
        entryId: BigInt(r.entryId),
        accountId: r.accountId,
        kind: r.kind as EntryKind,
        bucketId: r.bucketId,
        reservationId: r.reservationId ?? null,
        amount: BigInt(r.amount),
        idempotencyKey: r.idempotencyKey ?? null,
        caller: r.caller,
        metadata: r.metadata,
        createdAt: r.createdAt,
      }));
    });
  }

  async accountsWithDueWork(now: Date, limit: number): Promise<string[]> {
    return guardUnavailable(async () => {
      const rows = await this.q()(
        // Distinct accounts, most overdue first: one account with many overdue holds takes one slot.
        // Accounts on a test clock are always candidates: their own time runs ahead of `now`.
        `(select account_id from reservations where state = 'HELD' and expires_at <= ?
           group by account_id order by min(expires_at) limit ?)
         union
         (select account_id from buckets where remaining > held and expires_at <= ?
           group by account_id order by min(expires_at) limit ?)
         union
         (select account_id from subscriptions where granted_period_end <= ? order by granted_period_end limit ?)
         union
         (select account_id from accounts where clock_offset_ms <> 0 limit ?)`,
        [now, limit, now, limit, now, limit, limit],
      );
      return rows.map((r) => r["account_id"] as string);
    });
  }

  async applyDueIfUnlocked(accountId: string, now: Date): Promise<boolean> {
    return guardUnavailable(() =>
      this.orm.em.fork().transactional(async (em) => {
        const q = queryOn(em);
        // Skip an account another transaction (a request, another server's sweeper) holds: it is being handled.
        const head = await loadAccountHead(q, accountId, "skip-locked");
        if (!head) return false;
        const at = accountTime(head, now);
        const { book } = await loadBook(q, accountId, head, at, null);
        if (!applyDue(book, at, this.newId)) return false;
        await persistBook(q, book, { caller: "system", idempotencyKey: null, now: at });
        return true;
      }),
    );
  }

  async pruneOperations(olderThan: Date, limit: number): Promise<number> {
    return guardUnavailable(async () => {
      const rows = await this.q()(
        `delete from operations where ctid in (select ctid from operations where created_at < ? limit ?) returning 1`,
        [olderThan, limit],
      );
      return rows.length;
    });
  }

  async reconcile(accountId: string): Promise<Difference[]> {
    return guardUnavailable(() =>
      this.orm.em.fork().transactional(async (em) => {
        const q = queryOn(em);
        await q(`select 1 from accounts where account_id = ? for share`, [accountId]);
        const buckets = (await q(`select * from buckets where account_id = ?`, [accountId])).map(bucketFromRow);
        const reservations = (await q(`select * from reservations where account_id = ?`, [accountId])).map(reservationFromRow);
        const sums = await q(
          `select bucket_id, reservation_id, kind, sum(amount)::text as total from ledger_entries
            where account_id = ? group by bucket_id, reservation_id, kind`,
          [accountId],
        );
        const entrySums: EntrySums[] = sums.map((r) => ({
          bucketId: r["bucket_id"] as string,
          reservationId: (r["reservation_id"] as string | null) ?? null,
          kind: r["kind"] as EntryKind,
          total: BigInt(r["total"] as string),
        }));
        return reconcileBook(buckets, reservations, entrySums);
      }),
    );
  }

  async countHeld(): Promise<number> {
    const rows = await this.q()(`select count(*)::int as n from reservations where state = 'HELD'`);
    return Number(rows[0]?.["n"] ?? 0);
  }

  async ping(): Promise<void> {
    await this.q()(`select 1`);
  }
}
