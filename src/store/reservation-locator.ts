/**
 * Which account a reservation belongs to, for the most recent reservations. A reservation never
 * moves to another account, so a cached answer never goes stale; a miss asks Postgres. Bounded:
 * past `capacity` entries the least recently used goes.
 */
export class ReservationLocator {
  private readonly entries = new Map<string, string>();

  constructor(private readonly capacity: number) {}

  get(reservationId: string): string | undefined {
    const accountId = this.entries.get(reservationId);
    if (accountId !== undefined) {
      // Map keeps insertion order: re-inserting marks it most recently used.
      this.entries.delete(reservationId);
      this.entries.set(reservationId, accountId);
    }
    return accountId;
  }

  set(reservationId: string, accountId: string): void {
    this.entries.delete(reservationId);
    this.entries.set(reservationId, accountId);
    if (this.entries.size > this.capacity) this.entries.delete(this.entries.keys().next().value!);
  }

  get size(): number {
    return this.entries.size;
  }
}
