/** What a batch says about each of its items, in order. */
export type Settled<O> = { readonly ok: true; readonly value: O } | { readonly ok: false; readonly error: unknown };

interface Waiting<I, O> {
  readonly item: I;
  readonly resolve: (value: O) => void;
  readonly reject: (error: unknown) => void;
}

export interface LanesOptions<I, O> {
  /** Lanes run in parallel; items of one lane run one batch at a time, in arrival order. */
  readonly lanes: number;
  /** The most items one batch takes. */
  readonly maxBatch: number;
  /** Runs a batch; it settles every item (a rejection rejects the whole batch). */
  readonly run: (items: I[]) => Promise<Settled<O>[]>;
  /** Told the size of each batch as it starts (for the batch-size histogram). */
  readonly onBatch?: (size: number) => void;
}

/**
 * Group commit. Items go to a lane chosen by key (an account always lands in the same lane).
 * An idle lane starts a batch at the end of the current event-loop turn; while a batch runs,
 * new items queue up and the next batch takes them all (up to maxBatch). Under light load a
 * batch is one item and waits for nothing; under heavy load — or on one hot key — many items
 * share one transaction, so the work per item falls as the load rises.
 */
export class BatchLanes<I, O> {
  private readonly queues: Waiting<I, O>[][];
  private readonly busy: boolean[];

  constructor(private readonly options: LanesOptions<I, O>) {
    if (!Number.isInteger(options.lanes) || options.lanes < 1) throw new RangeError("lanes must be a positive integer");
    if (!Number.isInteger(options.maxBatch) || options.maxBatch < 1) throw new RangeError("maxBatch must be a positive integer");
    this.queues = Array.from({ length: options.lanes }, () => []);
    this.busy = Array.from({ length: options.lanes }, () => false);
  }

  submit(key: string, item: I): Promise<O> {
    const lane = laneOf(key, this.options.lanes);
    return new Promise<O>((resolve, reject) => {
      this.queues[lane]!.push({ item, resolve, reject });
      if (!this.busy[lane]) {
        this.busy[lane] = true;
        // Let the items that arrive in this same turn join the first batch.
        setImmediate(() => void this.drain(lane));
      }
    });
  }

  private async drain(lane: number): Promise<void> {
    const queue = this.queues[lane]!;
    while (queue.length > 0) {
      const batch = queue.splice(0, this.options.maxBatch);
      this.options.onBatch?.(batch.length);
      let settled: Settled<O>[];
      try {
        settled = await this.options.run(batch.map((w) => w.item));
      } catch (err) {
        settled = batch.map(() => ({ ok: false, error: err }));
      }
      batch.forEach((w, i) => {
        const s = settled[i] ?? { ok: false as const, error: new Error("batch returned no result for an item") };
        if (s.ok) w.resolve(s.value);
        else w.reject(s.error);
      });
    }
    this.busy[lane] = false;
  }
}

/** FNV-1a of the key, modulo the lane count. */
export function laneOf(key: string, lanes: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % lanes;
}
