export type EntryKind = "GRANT" | "HOLD" | "CAPTURE" | "RELEASE" | "EXPIRE" | "ADJUST";

/**
 * One movement, as the domain records it. The store adds the entry id, the time, the caller
 * and the idempotency key of the command that caused it. `automatic` movements (an overdue hold
 * or bucket expiring) are attributed to the system, not to the caller who happened to touch
 * the account.
 *
 * Effects on the bucket (and reservation) named by the entry:
 *   GRANT, ADJUST  remaining += amount
 *   HOLD           held += amount                       (reservation holds more)
 *   RELEASE        held -= amount                       (reservation holds less)
 *   CAPTURE        held -= amount, remaining -= amount  (reservation spends)
 *   EXPIRE         remaining -= amount
 */
export interface EntryDraft {
  readonly kind: EntryKind;
  readonly bucketId: string;
  readonly reservationId: string | null;
  readonly amount: bigint;
  readonly metadata: Readonly<Record<string, string>>;
  readonly automatic: boolean;
  /** The reservation's member ("" for movements of no member's hold). */
  readonly memberId: string;
}
