export interface ConcurrencyGateOptions {
  /** Tasks that may run at once. */
  readonly running: number;
  /** Tasks that may wait for a turn; one more is refused at once. */
  readonly waiting: number;
  /** The longest a task waits for its turn before it is refused. */
  readonly maxWaitMs: number;
  /** The error a refused task fails with. */
  readonly refuse: () => Error;
}

interface Waiter {
  readonly admit: () => void;
}

/**
 * A bulkhead: at most `running` tasks at once, up to `waiting` more queued in arrival order for at
 * most `maxWaitMs`; anything beyond is refused rather than queued without bound, so a flood of one
 * kind of work fails fast instead of holding every connection the others need.
 */
export class ConcurrencyGate {
  private active = 0;
  private readonly queue: Waiter[] = [];

  constructor(private readonly options: ConcurrencyGateOptions) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    await this.enter();
    try {
      return await task();
    } finally {
      this.leave();
    }
  }

  private enter(): Promise<void> {
    if (this.active < this.options.running) {
      this.active += 1;
      return Promise.resolve();
    }
    if (this.queue.length >= this.options.waiting) return Promise.reject(this.options.refuse());
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        admit: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      const timer = setTimeout(() => {
        this.queue.splice(this.queue.indexOf(waiter), 1);
        reject(this.options.refuse());
      }, this.options.maxWaitMs);
      this.queue.push(waiter);
    });
  }

  /** A finished task hands its turn straight to the first waiter. */
  private leave(): void {
    const next = this.queue.shift();
    if (next) next.admit();
    else this.active -= 1;
  }
}
