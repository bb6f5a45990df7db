/** The one source of time. Commands read it once and pass `now` down. */
export interface Clock {
  now(): Date;
}

/** The account's own clock: server time plus its test-clock offset. */
export function accountTime(clockOffsetMs: number, serverNow: Date): Date {
  return new Date(serverNow.getTime() + clockOffsetMs);
}

/** Wall-clock time of this process. */
export const systemClock: Clock = { now: () => new Date() };

/** A clock that only moves when told to: billing-cycle and expiry tests advance it instead of sleeping. */
export class FakeClock implements Clock {
  private ms: number;

  constructor(start: Date) {
    this.ms = start.getTime();
  }

  now(): Date {
    return new Date(this.ms);
  }

  advance(byMs: number): Date {
    if (byMs < 0) throw new RangeError("a clock never moves backwards");
    this.ms += byMs;
    return this.now();
  }

  set(to: Date): void {
    if (to.getTime() < this.ms) throw new RangeError("a clock never moves backwards");
    this.ms = to.getTime();
  }
}
