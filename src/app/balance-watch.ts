import { type Failure, FailureError } from "../domain/errors.js";
import type { AppDeps } from "./deps.js";
import type { ChangeFeed } from "./ports.js";
import { type BalanceEncoding, type BalanceRead, readBalance } from "./queries.js";

/** One state of a watched account, encoded once for every watcher. */
export interface WatchUpdate {
  readonly sequence: bigint;
  /** The balance and sequence without the as-of time (BalanceEncoding.body): what two states are compared by. */
  readonly body: Uint8Array;
  /** The message sent to watchers. */
  readonly bytes: Uint8Array;
}

export interface BalanceWatchOptions {
  readonly encoding: BalanceEncoding;
  /** The message for a state: its body stamped with the time it is as of. */
  readonly encode: (body: Uint8Array, asOf: Date) => Uint8Array;
  /** A failed re-read of a watched account is tried again after this long. */
  readonly retryMs: number;
  /** Watchers of one account at once; one more is refused (TOO_MANY_WATCHERS). */
  readonly maxPerAccount: number;
  /**
   * The least time between two reads of a watched account: a change after a quiet spell is read
   * (and sent) at once; changes told within this long of the last read are read once, at the
   * window's end, as their latest state. So a burst of changes (a batch's commands, a storm of
   * holds) costs each watcher at most one message per window; 0 reads every change at once.
   */
  readonly coalesceMs?: number;
  /** Called with each new watch: starts the change feed if nothing else has. */
  readonly startFeed?: () => void;
  readonly onReadError?: (accountId: string, err: Failure | Error) => void;
}

/** A due timer fires this long after the due instant: a timer may fire a little early by the wall clock. */
const DUE_SLACK_MS = 5;
/**
 * A due instant that is already past when read again (a read that found due work it could not
 * settle) is re-read no sooner than this: the timer never spins.
 */
const OVERDUE_REREAD_MS = 250;
/** The longest timer set (Node's limit is ~24.8 days); a later due instant is re-armed when it fires. */
const MAX_TIMER_MS = 6 * 60 * 60 * 1000;

const equalBytes = (a: Uint8Array, b: Uint8Array) => a.length === b.length && Buffer.compare(a, b) === 0;

/** Where a watcher's states go: the stream to its client. */
export interface WatchSink {
  /** Sends a state now; false when the client is behind: nothing more is written until `drained()` resolves. */
  write(update: WatchUpdate): boolean;
  /** Resolves once the client has caught up (or its stream ended). */
  drained(): Promise<void>;
}

/**
 * One watcher's mailbox: a state offered is written to the watcher's stream at once (no task, no
 * promise per message: a change reaches every watcher of the account in the loop that offers it),
 * unless the client is behind; then it waits in one slot, and a newer state replaces the one
 * waiting. So a slow watcher skips intermediate states, never delays the others and never holds
 * more than one message.
 */
export class BalanceWatcher {
  private slot: WatchUpdate | null = null;
  /** The latest state accepted (sent or waiting): nothing older, and no repeat of it, is accepted. */
  private last: WatchUpdate | null = null;
  private ended: Failure | "done" | null = null;
  private sink: WatchSink | null = null;
  /** The sink said it is behind: the next write waits for its drain. */
  private blocked = false;
  private settle: { resolve: () => void; reject: (err: Error) => void } | null = null;

  /** `resend`: accept the current state even if it is the one accepted last (the feed was regained). */
  offer(update: WatchUpdate, resend: boolean): void {
    if (this.ended) return;
    const last = this.last;
    if (last && update.sequence < last.sequence) return;
    if (last && update.sequence === last.sequence && !resend && equalBytes(update.body, last.body)) return;
    this.last = update;
    this.slot = update;
    this.flush();
  }

  /** Ends the delivery: after the waiting state is written with a failure, or at once when the watcher left. */
  end(how: Failure | "done"): void {
    if (this.ended) return;
    this.ended = how;
    if (how === "done") this.slot = null;
    this.flush();
  }

  /**
   * Writes every state accepted, from the one waiting now, to `sink` until the watcher ends:
   * resolves when it left, rejects (FailureError) with the failure that ended it once the state
   * waiting then has been written.
   */
  deliver(sink: WatchSink): Promise<void> {
    this.sink = sink;
    return new Promise<void>((resolve, reject) => {
      this.settle = { resolve, reject };
      this.flush();
    });
  }

  private flush(): void {
    const sink = this.sink;
    if (!sink) return;
    if (this.ended === "done") return this.finish();
    if (this.blocked) return;
    const update = this.slot;
    if (update) {
      this.slot = null;
      if (!sink.write(update)) {
        this.blocked = true;
        void sink.drained().then(() => {
          this.blocked = false;
          this.flush();
        });
        return;
      }
    }
    if (this.ended) this.finish();
  }

  private finish(): void {
    const settle = this.settle;
    this.settle = null;
    if (!settle) return;
    if (this.ended === "done" || this.ended === null) settle.resolve();
    else settle.reject(new FailureError(this.ended));
  }
}

/** A watched account: its latest state and watchers, and the one read of it that runs at a time. */
interface Watched {
  readonly accountId: string;
  readonly watchers: Set<BalanceWatcher>;
  latest: WatchUpdate | null;
  /** Settles once the first read is done: null, or why nobody can watch the account. */
  readonly ready: Promise<Failure | Error | null>;
  settleReady: (outcome: Failure | Error | null) => void;
  reading: boolean;
  /** The account changed while a read ran: read again once it is done. */
  again: boolean;
  /** The next read re-sends the current state even if unchanged. */
  resend: boolean;
  timer: NodeJS.Timeout | null;
  /** The last timer was set for an instant already past. */
  overdue: boolean;
  /** When the last read started (performance.now()): the next waits until coalesceMs after it. */
  lastReadAt: number;
}

/**
 * The hub behind WatchBalance: one upstream per watched account however many watchers it has. The
 * change feed names the accounts that changed (this server's writes and, through Postgres, every
 * other server's); each change of a watched account is read once (through the balance cache,
 * where this server's own writes already are) and offered to every watcher's one-slot mailbox.
 * Reads of one account run one at a time, a change during a read causing one more read after it,
 * so the last state read is never older than the last change told. States are ordered by the
 * account's sequence: nothing older than the latest is ever offered.
 *
 * Changes that fall due with no call (a bucket expiring, a period rolling over, a scheduled plan
 * change, a hold reaching its TTL) have no write to tell them: for each watched account a timer
 * waits for the account's next due instant, then reads it. The read finds the due work and
 * commits it through the normal command path (SettleDue), so the change gets its sequence and
 * reaches every server's watchers through the feed like any write.
 */
export class BalanceWatch {
  private readonly watched = new Map<string, Watched>();
  private closing: Failure | null = null;
  private readsDone = 0;
  /** The feed was lost since it last listened: when it is back, watchers are sent the current state again. */
  private feedLost = false;

  constructor(
    private readonly deps: AppDeps,
    private readonly feed: ChangeFeed,
    private readonly options: BalanceWatchOptions,
  ) {
    feed.subscribe((accountIds) => {
      if (accountIds === null) {
        // Lost: nothing to read yet. Listening (again): whatever was missed meanwhile is read and,
        // after a loss, every watcher is sent the current state, so none is left silently stale.
        if (!this.feed.live) {
          this.feedLost = true;
          return;
        }
        const resend = this.feedLost;
        this.feedLost = false;
        for (const w of this.watched.values()) this.refresh(w, resend);
        return;
      }
      for (const id of accountIds) {
        const w = this.watched.get(id);
        if (w) this.refresh(w, false);
      }
    });
  }

  /** Accounts watched now. */
  get accounts(): number {
    return this.watched.size;
  }

  /** Watchers now, over all accounts. */
  get watchers(): number {
    let n = 0;
    for (const w of this.watched.values()) n += w.watchers.size;
    return n;
  }

  /** Reads of watched accounts so far (one per change of an account, however many watch it). */
  get reads(): number {
    return this.readsDone;
  }

  /**
   * A watcher of the account, its mailbox holding the current state; it leaves when `signal`
   * aborts. Throws (FailureError) if the account cannot be watched: ACCOUNT_NOT_FOUND, the store
   * unavailable, the server shutting down.
   */
  async watch(accountId: string, signal: AbortSignal): Promise<BalanceWatcher> {
    if (this.closing) throw new FailureError(this.closing);
    const existing = this.watched.get(accountId);
    // One account's watchers cannot take the whole server's stream budget (GRPC_MAX_STREAMING_CALLS).
    if (existing && existing.watchers.size >= this.options.maxPerAccount) {
      const max = String(this.options.maxPerAccount);
      throw new FailureError({ reason: "TOO_MANY_WATCHERS", message: `account ${accountId} has ${max} watchers on this server, its most`, metadata: { account_id: accountId, max } });
    }
    this.options.startFeed?.();
    const w = existing ?? this.open(accountId);
    const watcher = new BalanceWatcher();
    w.watchers.add(watcher);
    const leave = () => {
      watcher.end("done");
      this.leave(w, watcher);
    };
    signal.addEventListener("abort", leave, { once: true });
    if (signal.aborted) leave();
    if (w.latest) watcher.offer(w.latest, false);
    const failure = await w.ready;
    if (failure) {
      signal.removeEventListener("abort", leave);
      leave();
      if (failure instanceof Error) throw failure;
      throw new FailureError(failure);
    }
    return watcher;
  }

  /** Ends every stream with `failure` (UNAVAILABLE at shutdown: clients reconnect elsewhere) and refuses new ones. */
  close(failure: Failure): void {
    this.closing = failure;
    for (const w of this.watched.values()) {
      if (w.timer) clearTimeout(w.timer);
      w.settleReady(failure);
      for (const watcher of w.watchers) watcher.end(failure);
    }
    this.watched.clear();
  }

  private open(accountId: string): Watched {
    let settleReady!: (outcome: Failure | Error | null) => void;
    const ready = new Promise<Failure | Error | null>((resolve) => (settleReady = resolve));
    const w: Watched = { accountId, watchers: new Set(), latest: null, ready, settleReady, reading: false, again: false, resend: false, timer: null, overdue: false, lastReadAt: -Infinity };
    this.watched.set(accountId, w);
    this.refresh(w, false);
    return w;
  }

  private leave(w: Watched, watcher: BalanceWatcher): void {
    w.watchers.delete(watcher);
    if (w.watchers.size > 0 || this.watched.get(w.accountId) !== w) return;
    this.watched.delete(w.accountId);
    if (w.timer) clearTimeout(w.timer);
    w.timer = null;
  }

  private refresh(w: Watched, resend: boolean): void {
    if (resend) w.resend = true;
    if (w.reading) {
      w.again = true;
      return;
    }
    w.reading = true;
    void this.readLoop(w);
  }

  private async readLoop(w: Watched): Promise<void> {
    do {
      // Within the pacing window of the last read, wait for its end: changes told meanwhile are
      // taken by this read (`again` is cleared below). Otherwise every listener of the feed event
      // that started this read runs first (the balance cache drops or takes the account's entry
      // in its own listener, which this read then consults).
      const wait = w.lastReadAt + (this.options.coalesceMs ?? 0) - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      else await Promise.resolve();
      if (this.watched.get(w.accountId) !== w) break; // nobody watches it any more (or the hub closed)
      w.lastReadAt = performance.now();
      w.again = false;
      const resend = w.resend;
      w.resend = false;
      let outcome: Failure | Error | BalanceRead;
      this.readsDone += 1;
      try {
        const read = await readBalance(this.deps, w.accountId, this.options.encoding);
        outcome = read.ok ? read.value : read.failure;
      } catch (err) {
        outcome = err instanceof FailureError ? err.failure : err instanceof Error ? err : new Error(String(err));
      }
      if (this.watched.get(w.accountId) !== w) break; // nobody watches it any more (or the hub closed)
      if ("body" in outcome) {
        this.accept(w, outcome.body, outcome.asOf, resend);
        this.arm(w, outcome.dueAtServerMs);
        w.settleReady(null);
        continue;
      }
      if (w.latest === null) {
        // The first read failed (no such account, the store away): its watchers are refused.
        this.watched.delete(w.accountId);
        w.settleReady(outcome);
        break;
      }
      this.options.onReadError?.(w.accountId, outcome);
      this.arm(w, this.deps.clock.now().getTime() + this.options.retryMs);
    } while (w.again);
    w.reading = false;
  }

  private accept(w: Watched, body: Uint8Array, asOf: Date, resend: boolean): void {
    const sequence = this.options.encoding.sequence(body);
    const latest = w.latest;
    if (latest && (sequence < latest.sequence || (sequence === latest.sequence && !resend && equalBytes(body, latest.body)))) return;
    const update: WatchUpdate = { sequence, body, bytes: this.options.encode(body, asOf) };
    w.latest = update;
    for (const watcher of w.watchers) watcher.offer(update, resend);
  }

  /** Reads the account again at `atServerMs` (null: the read did not know; the feed tells the change it committed). */
  private arm(w: Watched, atServerMs: number | null): void {
    if (w.timer) clearTimeout(w.timer);
    w.timer = null;
    if (atServerMs === null || !Number.isFinite(atServerMs)) return;
    const untilDue = atServerMs - this.deps.clock.now().getTime();
    const delay = untilDue > 0 ? Math.min(MAX_TIMER_MS, untilDue + DUE_SLACK_MS) : w.overdue ? OVERDUE_REREAD_MS : DUE_SLACK_MS;
    w.overdue = untilDue <= 0;
    w.timer = setTimeout(() => {
      w.timer = null;
      if (this.watched.get(w.accountId) === w) this.refresh(w, false);
    }, delay);
    w.timer.unref();
  }
}
