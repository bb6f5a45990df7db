export interface CircuitBreakerOptions {
  /** Consecutive failures that open the breaker. */
  readonly failureThreshold: number;
  /** While open, how often the probe runs. */
  readonly probeIntervalMs: number;
  /** Resolves if the dependency answers (bounded by its own timeout); rejects otherwise. */
  readonly probe: () => Promise<void>;
  /** Told each time the breaker opens (`open` true, with the failure) or closes. */
  readonly onChange: (open: boolean, err?: unknown) => void;
}

/**
 * A breaker in front of a dependency that may be skipped. Closed, calls go through and report
 * how they went; `failureThreshold` failures in a row open it (or one, via `trip`, when the
 * failure leaves no doubt — the connection is down). Open, callers skip the dependency at once,
 * and a background probe runs every `probeIntervalMs` until the dependency answers, which closes
 * it again. There is no half-open state letting calls through: the probe is the only traffic
 * an open breaker sends.
 */
export class CircuitBreaker {
  private failures = 0;
  private opened = false;
  private probeTimer: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(private readonly options: CircuitBreakerOptions) {}

  /** true: skip the dependency. */
  get open(): boolean {
    return this.opened;
  }

  success(): void {
    this.failures = 0;
  }

  failure(err: unknown): void {
    this.failures += 1;
    if (this.failures >= this.options.failureThreshold) this.trip(err);
  }

  /** Opens the breaker now (if it is not already) and starts probing. */
  trip(err: unknown): void {
    if (this.opened || this.stopped) return;
    this.opened = true;
    this.options.onChange(true, err);
    this.scheduleProbe();
  }

  /** Stops probing for good (shutdown). */
  stop(): void {
    this.stopped = true;
    if (this.probeTimer) clearTimeout(this.probeTimer);
    this.probeTimer = null;
  }

  private scheduleProbe(): void {
    if (this.stopped) return;
    this.probeTimer = setTimeout(() => void this.runProbe(), this.options.probeIntervalMs);
    this.probeTimer.unref(); // a probe never keeps the process alive
  }

  private async runProbe(): Promise<void> {
    this.probeTimer = null;
    const answered = await this.options.probe().then(
      () => true,
      () => false,
    );
    if (this.stopped) return;
    if (!answered) return this.scheduleProbe();
    this.failures = 0;
    this.opened = false;
    this.options.onChange(false);
  }
}
