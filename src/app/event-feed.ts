import type { ChangeFeed, EventOutbox } from "./ports.js";

export interface EventFeedOptions {
  /** A pass at least this often, whatever the change feed says (it may be down). */
  readonly intervalMs: number;
  /** Wait before trying again when another process holds the sequencer lock. */
  readonly busyRetryMs: number;
  readonly onError: (err: unknown) => void;
}

/**
 * Keeps the feed's order up to date on this server and tells readers when it moves: runs the
 * outbox's sequencer (store/event-outbox.ts) after every change the change feed announces (this
 * server's writes and, through Postgres, every other server's), and every `intervalMs` in case an
 * announcement was lost. Every server runs it; the advisory lock lets one pass run at a time, and
 * a server that finds the lock taken tries again shortly, so each server's readers learn of
 * batches another server numbered. Readers wait in `next` for the feed's last position to pass
 * theirs.
 */
export class EventFeed {
  private head = 0n;
  private running = false;
  private again = false;
  private isStopped = false;
  private timer: NodeJS.Timeout | null = null;
  private retry: NodeJS.Timeout | null = null;
  private waiters = new Set<() => void>();

  constructor(
    private readonly outbox: EventOutbox,
    changes: ChangeFeed,
    private readonly options: EventFeedOptions,
  ) {
    changes.subscribe(() => this.poke());
  }

  start(): void {
    this.timer = setInterval(() => this.poke(), this.options.intervalMs);
    this.timer.unref();
    this.poke();
  }

  stop(): void {
    this.isStopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.retry) clearTimeout(this.retry);
    this.wakeAll();
  }

  /** Set once the server stops: streams end (UNAVAILABLE) so their clients resume elsewhere. */
  get stopped(): boolean {
    return this.isStopped;
  }

  /** The feed's last position as this server last saw it. */
  get lastPosition(): bigint {
    return this.head;
  }

  /**
   * Resolves once the feed's last position passes `position`, or after `timeoutMs`, or when
   * `signal` aborts or the feed stops: the caller reads again either way.
   */
  next(position: bigint, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    if (this.head > position || this.isStopped || signal?.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", done);
        this.waiters.delete(check);
        resolve();
      };
      const check = () => {
        if (this.head > position || this.isStopped) done();
      };
      const timer = setTimeout(done, timeoutMs);
      signal?.addEventListener("abort", done);
      this.waiters.add(check);
    });
  }

  /** Asks for a pass now (one runs at a time; a request during a pass runs another after it). */
  poke(): void {
    if (this.isStopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    void this.pass();
  }

  private async pass(): Promise<void> {
    let busy = false;
    try {
      do {
        this.again = false;
        const result = await this.outbox.sequence();
        if (result === null) {
          busy = true;
          break;
        }
        this.advance(result.head);
        // A full pass may have left more behind.
        if (result.more) this.again = true;
      } while (this.again && !this.isStopped);
    } catch (err) {
      this.options.onError(err);
    } finally {
      this.running = false;
    }
    if (busy && !this.isStopped && this.retry === null) {
      // Another server is numbering: look again once it is likely done, to learn the new head.
      this.retry = setTimeout(() => {
        this.retry = null;
        this.poke();
      }, this.options.busyRetryMs);
      this.retry.unref();
    }
  }

  private advance(head: bigint): void {
    if (head <= this.head) return;
    this.head = head;
    this.wakeAll();
  }

  private wakeAll(): void {
    for (const check of [...this.waiters]) check();
  }
}
