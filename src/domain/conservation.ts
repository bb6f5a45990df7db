import type { AccountBook } from "./account-book.js";
import { invariant } from "./errors.js";
import type { EntryKind } from "./ledger-entry.js";
import { bucketDifferences } from "./reconcile.js";

/**
 * Conservation, checked on every bucket a book changed before it is written: what the book's new
 * entries say happened to the bucket is exactly how its amounts moved since it was loaded (the
 * identity Reconcile checks over the whole ledger, here over one batch: granted moves by the
 * grants, remaining by the grants less captures and expiries, held by the holds less releases and
 * captures — so granted = remaining + captured + expired holds for every bucket), and
 * 0 ≤ held ≤ remaining ≤ granted. A break is a bug: it throws InvariantViolation (INTERNAL,
 * logged) and nothing is written.
 */
export function assertConserved(book: AccountBook): void {
  const changed = new Set([...book.newBuckets, ...book.changedBuckets]);
  if (changed.size === 0) return;
  const totals = new Map<string, Map<EntryKind, bigint>>();
  for (const e of book.entries) {
    let byKind = totals.get(e.bucketId);
    if (!byKind) totals.set(e.bucketId, (byKind = new Map()));
    byKind.set(e.kind, (byKind.get(e.kind) ?? 0n) + e.amount);
  }
  for (const id of changed) {
    const bucket = book.bucket(id);
    const before = book.loadedAmounts(id);
    invariant(0n <= bucket.held && bucket.held <= bucket.remaining && bucket.remaining <= bucket.granted, `bucket ${id} is out of bounds`);
    const moved = { id, granted: bucket.granted - before.granted, remaining: bucket.remaining - before.remaining, held: bucket.held - before.held };
    const entries = [...(totals.get(id) ?? [])].map(([kind, total]) => ({ kind, total }));
    const differences = bucketDifferences(id, moved, entries);
    invariant(differences.length === 0, `bucket ${id} is not conserved: ${differences.map((d) => `${d.field} moved ${d.stored}, entries say ${d.fromEntries}`).join("; ")}`);
  }
}
