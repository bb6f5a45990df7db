import type { Statement } from "./pg.js";

/**
 * The sweeper's query for accounts with work that fell due with no call: overdue holds, expired
 * buckets with free credits, ended allowance periods, accounts on test clocks (their time runs
 * ahead of `now`), auto top-up rules with a request past its expiry or a new month to count, and, when notices are on, buckets whose expiry notice (`expires_at − notice`)
 * has passed. Each branch reads one partial index in its own order, so it costs what is due, not
 * what is stored: reservations_due, buckets_expiring, subscriptions_due, accounts_test_clock, accounts_auto_top_up_due and
 * buckets_expiry_notice (only the buckets still waiting for a notice are in it; a bucket that
 * expired meanwhile comes too, and the due work expires it, which takes it out).
 * Distinct accounts, most overdue first: one account with many overdue holds takes one slot.
 */
export function dueWorkStatement(now: Date, limit: number, expiryNoticeMs: number): Statement {
  const base = `(select account_id from reservations where state = 'HELD' and expires_at <= ?
       group by account_id order by min(expires_at) limit ?)
     union
     (select account_id from buckets where has_free and expires_at <= ?
       group by account_id order by min(expires_at) limit ?)
     union
     (select account_id from subscriptions where granted_period_end <= ? order by granted_period_end limit ?)
     union
     (select account_id from accounts where clock_offset_ms <> 0 limit ?)
     union
     (select account_id from accounts where auto_top_up_due_at <= ? order by auto_top_up_due_at limit ?)`;
  const params: unknown[] = [now, limit, now, limit, now, limit, limit, now, limit];
  if (expiryNoticeMs <= 0) return { sql: base, params };
  return {
    sql: `${base}
     union
     (select account_id from buckets where has_free and not expiry_noticed and kind <> 'SUBSCRIPTION' and expires_at <= ?
       group by account_id order by min(expires_at) limit ?)`,
    params: [...params, new Date(now.getTime() + expiryNoticeMs), limit],
  };
}
