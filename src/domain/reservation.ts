import type { GenerationSpec } from "./pricing.js";

/** How a hold by spec was priced; Commit by spec prices the same way. */
export interface ReservationPricing {
  readonly spec: GenerationSpec;
  readonly rateCardVersion: string;
  readonly accountPermille: number;
  readonly quotedCredits: bigint;
}

export type ReservationStatus = "HELD" | "COMMITTED" | "RELEASED" | "EXPIRED";

export type ReleaseReason = "GENERATION_FAILED" | "INTERRUPTED" | "CANCELLED" | "OTHER";

/** Credits a hold currently takes from one bucket. */
export interface Allocation {
  readonly bucketId: string;
  amount: bigint;
}

/** A hold on an account's credits, from Reserve until Commit, Release or expiry. */
export interface Reservation {
  readonly id: string;
  readonly accountId: string;
  status: ReservationStatus;
  /** Credits taken by Reserve; kept as history after settlement. */
  readonly heldAmount: bigint;
  capturedAmount: bigint;
  releasedAmount: bigint;
  /** What the hold takes from each bucket right now, in consumption order; empty once settled. */
  allocations: Allocation[];
  expiresAt: Date;
  readonly createdAt: Date;
  settledAt: Date | null;
  readonly metadata: Readonly<Record<string, string>>;
  releaseReason: ReleaseReason | null;
  releaseDetail: string;
  /** Set when the hold was reserved by spec. */
  readonly pricing: ReservationPricing | null;
  /** The customer's member or API key the hold is for ("" when none was given): limits count by it. */
  readonly memberId: string;
}

/** Credits the reservation holds right now. */
export function currentlyHeld(reservation: Pick<Reservation, "allocations">): bigint {
  return reservation.allocations.reduce((sum, a) => sum + a.amount, 0n);
}

export function isOverdue(reservation: Reservation, now: Date): boolean {
  return reservation.status === "HELD" && reservation.expiresAt.getTime() <= now.getTime();
}
