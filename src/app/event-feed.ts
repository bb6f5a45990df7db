import type { ChangeFeed, EventOutbox } from "./ports.js";

export interface EventFeedOptions {
  /** A pass at least this often, whatever the change feed says (it may be down). */
  readonly intervalMs: number;
  /** Wait before trying again when another process holds the sequencer lock. */
  readonly busyRetryMs: number;
  /**
   * Waiting readers are woken at most this often: under a steady write load the head moves with
   * every pass, and each wake costs every caught-up stream a page read; a short wait lets one read
   * take several batches.
   */
  readonly wakeEveryMs: number;
  /**
   * A pass asked for by an announced change starts this long after it (0: at once), so that the
   * changes of several write transactions close together are numbered by one pass: at low write
   * rates every transaction would otherwise cost a pass of its own (two round trips and an update).
   */
  readonly passDelayMs?: number;
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
  private lastWake = 0;
  private wakeTimer: NodeJS.Timeout | null = null;
  private soon: NodeJS.Timeout | null = null;

  constructor(
    private readonly outbox: EventOutbox,
    private readonly changes: ChangeFeed,
    private readonly options: EventFeedOptions,
  ) {}

  /** Passes from now on: after every announced change, and every `intervalMs`. Not started, it numbers nothing (the outbox off). */
  start(): void {
    this.changes.subscribe(() => this.pokeSoon());
    this.timer = setInterval(() => this.poke(), this.options.intervalMs);
    this.timer.unref();
    this.poke();
  }

  stop(): void {
    this.isStopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.retry) clearTimeout(this.retry);
    if (this.soon) clearTimeout(this.soon);
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
    if ((this.head > position && this.wakeTimer === null) || this.isStopped || signal?.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", done);
        this.waiters.delete(check);
        resolve();
      };
      const check = () => {
        if ((this.head > position && this.wakeTimer === null) || this.isStopped) done();
      };
      const timer = setTimeout(done, timeoutMs);
      signal?.addEventListener("abort", done);
      this.waiters.add(check);
    });
  }

  /** A pass after `passDelayMs`; further requests meanwhile are taken by it. */
  private pokeSoon(): void {
    const delay = this.options.passDelayMs ?? 0;
    if (delay <= 0) return this.poke();
    if (this.soon || this.isStopped) return;
    this.soon = setTimeout(() => {
      this.soon = null;
      this.poke();
    }, delay);
    this.soon.unref();
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
    if (this.wakeTimer) return;
    const wait = this.lastWake + this.options.wakeEveryMs - performance.now();
    if (wait <= 0) return this.wakeAll();
    this.wakeTimer = setTimeout(() => this.wakeAll(), wait);
    this.wakeTimer.unref();
  }

  private wakeAll(): void {
    if (this.wakeTimer) clearTimeout(this.wakeTimer);
    this.wakeTimer = null;
    this.lastWake = performance.now();
    for (const check of [...this.waiters]) check();
  }
}
