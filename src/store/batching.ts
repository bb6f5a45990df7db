/** What a batch says about each of its items, in order. */
export type Settled<O> = { readonly ok: true; readonly value: O } | { readonly ok: false; readonly error: unknown };

interface Waiting<I, O> {
  readonly key: string;
  readonly item: I;
  /** Arrival order. */
  readonly seq: number;
  readonly resolve: (value: O) => void;
  readonly reject: (error: unknown) => void;
}

/** What a running batch may know about the locks of its keys. */
export interface BatchLocks {
  /** The key this batch is the parking lane of (it may wait for that key's lock, as a batch in a slot must not); null: a batch in a slot. */
  readonly lane: string | null;
  /**
   * Whether another running batch of this group has loaded holding the key's lock: the lock comes
   * free when that batch ends, so waiting for it is brief.
   */
  heldByOther(key: string): boolean;
}

export interface GroupCommitOptions<I, O> {
  /** Batches that may run at once (each on its own connection), parking lanes not counted. */
  readonly concurrency: number;
  /** The most items one batch takes. */
  readonly maxBatch: number;
  /** false: a batch takes the items of one key only (on a sharded database, one shard per transaction). */
  readonly acrossKeys?: boolean;
  /**
   * Runs a batch; it settles every item (a rejection rejects the whole batch). It calls `loaded`
   * once it holds what it needs, naming (by index) the items it leaves out because their key's
   * lock is held elsewhere; it may call it again later to leave out more (a batch that never calls
   * it counts as loading until it ends). Left-out items, and every later item of their keys, wait in
   * their key's parking lane: a batch of their own, outside the `concurrency` slots, that waits for
   * the lock. What the batch returns for a left-out item is ignored. A lane may leave its items out
   * too (it gave up waiting for now): they wait for the next lane, after the other parked keys'.
   */
  readonly run: (items: I[], loaded: (leftOut?: readonly number[]) => void, locks: BatchLocks) => Promise<Settled<O>[]>;
  /** Parking lanes that may run at once (default: `concurrency`); parked keys take free ones in turn. */
  readonly lanes?: number;
  /**
   * Batches take turns instead of running in step. No batch starts while another is still
   * loading, so one batch loads while the one before computes and writes. A running batch has
   * therefore locked its rows, and the next may take the same keys: the store's locks make it wait
   * for them, in arrival order. And when nothing runs and at least `2 × splitFrom` items wait,
   * the batch takes the first half of them and the other half starts once it has loaded: callers
   * that all arrived together fall into two groups, and each group's round trips overlap the
   * other's work. A batch that has not loaded after `maxLoadWaitMs` stops holding the others back:
   * the next may start, without the keys of any batch still loading (whose locks are not known
   * yet). Off when absent; then a key is never in two running batches.
   */
  readonly stagger?: { readonly splitFrom: number; readonly maxLoadWaitMs: number };
  /** Told the size of each batch as it starts, parking lanes' too (for the batch-size histogram). */
  readonly onBatch?: (size: number) => void;
}

interface Batch<I, O> {
  readonly items: Waiting<I, O>[];
  readonly lane: string | null;
  /** The keys of its items that are not left out: once it has loaded, it holds their locks. */
  readonly keys: Set<string>;
  loaded: boolean;
  /** Items it handed to a parking lane: their results are not its to give. */
  readonly leftOut: Set<Waiting<I, O>>;
}

/**
 * Group commit. Items wait in one queue; whenever fewer than `concurrency` batches run, the next
 * batch takes every waiting item (up to maxBatch, in arrival order) whose key is not in a running
 * batch (with `stagger`, see there). So a key's items run in arrival order and never in two
 * batches at once, many quiet keys share one batch, and a hot key's items pile up behind its
 * running batch and then all go together. Under light load a batch is one item and waits only for the end of the current
 * event-loop turn; under heavy load the work per item falls as the load rises.
 *
 * A key whose lock a batch found held elsewhere (another server, a long transaction) is parked:
 * its items wait, in arrival order, for its parking lane, which waits for the lock on its own
 * connection while the slots serve other keys. Once the lane has the lock, the key's later items
 * return to the queue (with `stagger` they may then wait for the lane's lock in the store).
 */
export class GroupCommit<I, O> {
  private queue: Waiting<I, O>[] = [];
  /** Parked keys: all their waiting items, in arrival order. */
  private readonly parked = new Map<string, Waiting<I, O>[]>();
  private readonly running = new Set<Batch<I, O>>();
  /** Running batches in slots (not lanes). */
  private slots = 0;
  /** Keys whose lane runs. */
  private readonly lanes = new Set<string>();
  /** Running batches in slots that hold the next back (stagger): not loaded, not past maxLoadWaitMs. */
  private loading = 0;
  private scheduled = false;
  private seq = 0;

  constructor(private readonly options: GroupCommitOptions<I, O>) {
    if (!Number.isInteger(options.concurrency) || options.concurrency < 1) throw new RangeError("concurrency must be a positive integer");
    if (!Number.isInteger(options.maxBatch) || options.maxBatch < 1) throw new RangeError("maxBatch must be a positive integer");
    if (options.lanes !== undefined && (!Number.isInteger(options.lanes) || options.lanes < 1)) throw new RangeError("lanes must be a positive integer");
    const split = options.stagger?.splitFrom;
    if (split !== undefined && (!Number.isInteger(split) || split < 1)) throw new RangeError("stagger.splitFrom must be a positive integer");
    const wait = options.stagger?.maxLoadWaitMs;
    if (wait !== undefined && !(wait > 0)) throw new RangeError("stagger.maxLoadWaitMs must be positive");
  }

  submit(key: string, item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      const waiting = { key, item, seq: this.seq++, resolve, reject };
      const line = this.parked.get(key);
      if (line) line.push(waiting);
      else this.queue.push(waiting);
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
    this.dispatchLanes();
    const { stagger } = this.options;
    while (this.slots < this.options.concurrency && this.queue.length > 0) {
      if (stagger && this.loading > 0) return; // the loading batch dispatches again when it has loaded
      // One batch takes all it may: a bigger batch costs less per item (measured: sharing the
      // waiting items out among the free slots made uniform load about 25 % slower), except
      // for the staggered split.
      const split = stagger && this.slots === 0 && this.queue.length >= 2 * stagger.splitFrom;
      const limit = split ? Math.min(this.options.maxBatch, Math.ceil(this.queue.length / 2)) : this.options.maxBatch;
      const taken = this.takenKeys();
      const batch: Waiting<I, O>[] = [];
      const rest: Waiting<I, O>[] = [];
      for (const waiting of this.queue) {
        const fits = batch.length < limit && !taken.has(waiting.key);
        if (fits && (this.options.acrossKeys !== false || batch.length === 0 || waiting.key === batch[0]!.key)) batch.push(waiting);
        else rest.push(waiting);
      }
      if (batch.length === 0) return; // every waiting key is in a running batch
      this.queue = rest;
      this.start(batch, null);
    }
  }

  /** Parked keys get a lane each, as far as lanes are free; a lane takes its key's first items. */
  private dispatchLanes(): void {
    const max = this.options.lanes ?? this.options.concurrency;
    for (const [key, line] of this.parked) {
      if (this.lanes.size >= max) return;
      if (line.length > 0 && !this.lanes.has(key)) this.start(line.splice(0, this.options.maxBatch), key);
    }
  }

  /**
   * Keys a new batch in a slot may not take: those of running batches that have not loaded (with
   * `stagger`, a batch that has loaded holds its locks, and the next may wait for them in arrival
   * order; one still loading may yet leave its items out); without `stagger`, those of every running batch.
   */
  private takenKeys(): Set<string> {
    const taken = new Set<string>();
    for (const b of this.running) if (!this.options.stagger || !b.loaded) for (const key of b.keys) taken.add(key);
    return taken;
  }

  private start(items: Waiting<I, O>[], lane: string | null): void {
    const batch: Batch<I, O> = { items, lane, keys: new Set(items.map((w) => w.key)), loaded: false, leftOut: new Set() };
    this.running.add(batch);
    if (lane !== null) this.lanes.add(lane);
    else {
      this.slots += 1;
      if (this.options.stagger) this.loading += 1;
    }
    void this.runBatch(batch);
  }

  private async runBatch(batch: Batch<I, O>): Promise<void> {
    this.options.onBatch?.(batch.items.length);
    const { stagger } = this.options;
    let holding = stagger !== undefined && batch.lane === null;
    /** Stops holding the next batch back (once); true the first time. */
    const release = () => {
      if (!holding) return false;
      holding = false;
      clearTimeout(gate);
      this.loading -= 1;
      return true;
    };
    const loaded = (leftOut: readonly number[] = []) => {
      const first = !batch.loaded;
      batch.loaded = true;
      this.leaveOut(batch, leftOut);
      // A lane that has its key's lock hands the key's later items back to the queue.
      if (first && batch.lane !== null && batch.keys.has(batch.lane)) this.unpark(batch.lane);
      release();
      this.dispatch();
    };
    const gate = holding
      ? setTimeout(() => {
          if (release()) this.dispatch();
        }, stagger!.maxLoadWaitMs).unref()
      : undefined;
    const locks: BatchLocks = { lane: batch.lane, heldByOther: (key) => this.heldByOther(batch, key) };
    let settled: Settled<O>[];
    try {
      settled = await this.options.run(batch.items.map((w) => w.item), loaded, locks);
    } catch (err) {
      settled = batch.items.map(() => ({ ok: false, error: err }));
    }
    release(); // a batch that ended without saying it loaded (the dispatch below covers it)
    this.running.delete(batch);
    if (batch.lane === null) this.slots -= 1;
    else {
      this.lanes.delete(batch.lane);
      if (!batch.loaded) this.unpark(batch.lane); // ended without loading (an unreachable database): the key's items go back to the queue
      else if (!batch.keys.has(batch.lane)) this.requeueLane(batch.lane); // gave up waiting: other parked keys take their turn first
    }
    batch.items.forEach((w, i) => {
      if (batch.leftOut.has(w)) return;
      const s = settled[i] ?? { ok: false as const, error: new Error("batch returned no result for an item") };
      if (s.ok) w.resolve(s.value);
      else w.reject(s.error);
    });
    this.dispatch();
  }

  private heldByOther(batch: Batch<I, O>, key: string): boolean {
    for (const other of this.running) if (other !== batch && other.loaded && other.keys.has(key)) return true;
    return false;
  }

  /** Hands the batch's items at these indices to their keys' lanes. */
  private leaveOut(batch: Batch<I, O>, indices: readonly number[]): void {
    for (const i of indices) {
      const waiting = batch.items[i];
      if (!waiting || batch.leftOut.has(waiting)) continue;
      batch.leftOut.add(waiting);
      this.park(waiting);
    }
    for (const key of new Set(indices.map((i) => batch.items[i]?.key))) {
      if (key !== undefined && batch.items.every((w) => w.key !== key || batch.leftOut.has(w))) batch.keys.delete(key);
    }
  }

  /** Puts an item in its key's lane, in arrival order; parking a key takes its waiting items out of the queue too. */
  private park(waiting: Waiting<I, O>): void {
    let line = this.parked.get(waiting.key);
    if (!line) {
      line = [];
      const rest: Waiting<I, O>[] = [];
      for (const w of this.queue) (w.key === waiting.key ? line : rest).push(w);
      this.queue = rest;
      this.parked.set(waiting.key, line);
    }
    let at = line.length;
    while (at > 0 && line[at - 1]!.seq > waiting.seq) at -= 1;
    line.splice(at, 0, waiting);
  }

  /** Moves a parked key behind the others waiting for a lane. */
  private requeueLane(key: string): void {
    const line = this.parked.get(key);
    if (!line) return;
    this.parked.delete(key);
    this.parked.set(key, line);
  }

  /** The key's waiting items go back to the queue, in arrival order among the others. */
  private unpark(key: string): void {
    const line = this.parked.get(key);
    if (!line) return;
    this.parked.delete(key);
    if (line.length === 0) return;
    const merged: Waiting<I, O>[] = [];
    let i = 0;
    for (const w of this.queue) {
      while (i < line.length && line[i]!.seq < w.seq) merged.push(line[i++]!);
      merged.push(w);
    }
    while (i < line.length) merged.push(line[i++]!);
    this.queue = merged;
  }
}
