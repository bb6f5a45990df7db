/** What a batch says about each of its items, in order. */
export type Settled<O> = { readonly ok: true; readonly value: O } | { readonly ok: false; readonly error: unknown };

interface Waiting<I, O> {
  readonly key: string;
  readonly item: I;
  readonly resolve: (value: O) => void;
  readonly reject: (error: unknown) => void;
}

export interface GroupCommitOptions<I, O> {
  /** Batches that may run at once (each on its own connection). */
  readonly concurrency: number;
  /** The most items one batch takes. */
  readonly maxBatch: number;
  /** false: a batch takes the items of one key only (on a sharded database, one shard per transaction). */
  readonly acrossKeys?: boolean;
  /**
   * Runs a batch; it settles every item (a rejection rejects the whole batch). With `stagger`,
   * it calls `loaded()` once the batch has read what it needs (a batch that never calls it
   * counts as loading until it ends).
   */
  readonly run: (items: I[], loaded: () => void) => Promise<Settled<O>[]>;
  /**
   * Batches take turns instead of running in step. No batch starts while another is still
   * loading, so one batch loads while the one before computes and writes. A running batch has
   * therefore locked its rows, and the next may take the same keys: the store's locks make it wait
   * for them, in arrival order. And when nothing runs and at least `2 × splitFrom` items wait,
   * the batch takes the first half of them and the other half starts once it has loaded: callers
   * that all arrived together fall into two groups, and each group's round trips overlap the
   * other's work. A batch that has not loaded after `maxLoadWaitMs` (a lock held elsewhere) stops
   * holding the others back: the next may start, and waits in Postgres only if it needs the same
   * rows. Off when absent; then a key is never in two running batches.
   */
  readonly stagger?: { readonly splitFrom: number; readonly maxLoadWaitMs: number };
  /** Told the size of each batch as it starts (for the batch-size histogram). */
  readonly onBatch?: (size: number) => void;
}

/**
 * Group commit. Items wait in one queue; whenever fewer than `concurrency` batches run, the next
 * batch takes every waiting item (up to maxBatch, in arrival order) whose key is not in a running
 * batch (with `stagger`, see there). So a key's items run in arrival order and never in two
 * batches at once, many quiet keys share one batch, and a hot key's items pile up behind its
 * running batch and then all go together. Under light load a batch is one item and waits only for the end of the current
 * event-loop turn; under heavy load the work per item falls as the load rises.
 */
export class GroupCommit<I, O> {
  private queue: Waiting<I, O>[] = [];
  private readonly busyKeys = new Set<string>();
  private running = 0;
  /** Running batches that have not yet called `loaded()`. */
  private loading = 0;
  private scheduled = false;

  constructor(private readonly options: GroupCommitOptions<I, O>) {
    if (!Number.isInteger(options.concurrency) || options.concurrency < 1) throw new RangeError("concurrency must be a positive integer");
    if (!Number.isInteger(options.maxBatch) || options.maxBatch < 1) throw new RangeError("maxBatch must be a positive integer");
    const split = options.stagger?.splitFrom;
    if (split !== undefined && (!Number.isInteger(split) || split < 1)) throw new RangeError("stagger.splitFrom must be a positive integer");
    const wait = options.stagger?.maxLoadWaitMs;
    if (wait !== undefined && !(wait > 0)) throw new RangeError("stagger.maxLoadWaitMs must be positive");
  }

  submit(key: string, item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.queue.push({ key, item, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        // Let the items that arrive in this same turn join the batch.
        setImmediate(() => {
          this.scheduled = false;
          this.dispatch();
        });
      }
    });
  }

  private dispatch(): void {
    const { stagger } = this.options;
    while (this.running < this.options.concurrency && this.queue.length > 0) {
      if (stagger && this.loading > 0) return; // the loading batch dispatches again when it has loaded
      // One batch takes all it may: a bigger batch costs less per item (measured: sharing the
      // waiting items out among the free slots made uniform load about 25 % slower), except
      // for the staggered split.
      const split = stagger && this.running === 0 && this.queue.length >= 2 * stagger.splitFrom;
      const limit = split ? Math.min(this.options.maxBatch, Math.ceil(this.queue.length / 2)) : this.options.maxBatch;
      const batch: Waiting<I, O>[] = [];
      const rest: Waiting<I, O>[] = [];
      for (const waiting of this.queue) {
        const fits = batch.length < limit && (stagger !== undefined || !this.busyKeys.has(waiting.key));
        if (fits && (this.options.acrossKeys !== false || batch.length === 0 || waiting.key === batch[0]!.key)) batch.push(waiting);
        else rest.push(waiting);
      }
      if (batch.length === 0) return; // every waiting key is in a running batch
      this.queue = rest;
      const keys = stagger ? new Set<string>() : new Set(batch.map((w) => w.key));
      for (const key of keys) this.busyKeys.add(key);
      this.running += 1;
      if (stagger) this.loading += 1;
      void this.runBatch(batch, keys);
    }
  }

  private async runBatch(batch: Waiting<I, O>[], keys: Set<string>): Promise<void> {
    this.options.onBatch?.(batch.length);
    const { stagger } = this.options;
    let loading = stagger !== undefined;
    /** Ends this batch's loading (once); true the first time. */
    const doneLoading = () => {
      if (!loading) return false;
      loading = false;
      clearTimeout(gate);
      this.loading -= 1;
      return true;
    };
    const loaded = () => {
      if (doneLoading()) this.dispatch();
    };
    const gate = stagger ? setTimeout(loaded, stagger.maxLoadWaitMs).unref() : undefined;
    let settled: Settled<O>[];
    try {
      settled = await this.options.run(batch.map((w) => w.item), loaded);
    } catch (err) {
      settled = batch.map(() => ({ ok: false, error: err }));
    }
    doneLoading(); // a batch that ended without saying it loaded (the dispatch below covers it)
    for (const key of keys) this.busyKeys.delete(key);
    this.running -= 1;
    batch.forEach((w, i) => {
      const s = settled[i] ?? { ok: false as const, error: new Error("batch returned no result for an item") };
      if (s.ok) w.resolve(s.value);
      else w.reject(s.error);
    });
    this.dispatch();
  }
}
