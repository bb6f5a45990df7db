import type { Clock } from "../domain/clock.js";
import type { EventOutbox, LedgerStore } from "./ports.js";

export interface SweepReport {
  readonly accountsSettled: number;
  readonly accountsSkipped: number;
  readonly operationsPruned: number;
  readonly eventBatchesPruned: number;
  /** Accounts whose past days' daily usage rows were written. */
  readonly usageDaysClosed: number;
}

export interface SweeperOptions {
  readonly intervalMs: number;
  readonly batchSize: number;
  /** Operation records older than this are pruned (the idempotency window). */
  readonly retentionMs: number;
  /** The event feed's retention (by the database's clock): older batches are pruned; absent when the outbox is off. */
  readonly events?: { readonly outbox: EventOutbox; readonly retentionMs: number };
}

/**
 * One sweep: releases overdue holds and expires expired buckets of accounts nobody is touching,
 * prunes operation records past the idempotency window and events past their retention, and
 * writes the daily usage rows of the days that ended. Each account is handled in its own
 * transaction that skips accounts locked elsewhere, so several servers can sweep one database.
 */
export async function sweepOnce(store: LedgerStore, now: Date, options: SweeperOptions): Promise<SweepReport> {
  const accounts = await store.accountsWithDueWork(now, options.batchSize);
  let settled = 0;
  for (const accountId of accounts) {
    if (await store.applyDueIfUnlocked(accountId, now)) settled += 1;
  }
  const pruned = await store.pruneOperations(new Date(now.getTime() - options.retentionMs), options.batchSize);
  const events = options.events;
  const eventBatchesPruned = events ? await events.outbox.prune(events.retentionMs, options.batchSize) : 0;
  const usageDaysClosed = await store.closeUsageDays(now, options.batchSize);
  return { accountsSettled: settled, accountsSkipped: accounts.length - settled, operationsPruned: pruned, eventBatchesPruned, usageDaysClosed };
}

export interface Sweeper {
  stop(): Promise<void>;
}

/** Runs sweeps back to back, `intervalMs` apart, until stopped; a failed sweep is reported and retried next time. */
export function startSweeper(
  store: LedgerStore,
  clock: Clock,
  options: SweeperOptions,
  onSweep: (report: SweepReport | Error) => void,
): Sweeper {
  let stopped = false;
  let timer: NodeJS.Timeout | null = null;
  let running: Promise<void> = Promise.resolve();
  const tick = () => {
    running = sweepOnce(store, clock.now(), options)
      .then(onSweep, (err: unknown) => onSweep(err instanceof Error ? err : new Error(String(err))))
      .finally(() => {
        if (!stopped) timer = setTimeout(tick, options.intervalMs);
      });
  };
  timer = setTimeout(tick, options.intervalMs);
  return {
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await running;
    },
  };
}
