/**
 * A WatchBalance watcher's mailbox (src/app/balance-watch.ts): a state is written at once unless
 * the client is behind, then it waits in one slot where the latest state wins; nothing older than
 * what was accepted is ever written. The e2e side is test/e2e/watch-balance.test.ts.
 */
import { describe, expect, it } from "vitest";
import { BalanceWatcher, type WatchSink, type WatchUpdate } from "../../src/app/balance-watch.js";
import { FailureError } from "../../src/domain/errors.js";

const update = (sequence: bigint, body = [Number(sequence % 256n)]): WatchUpdate => ({
  sequence,
  body: Uint8Array.from(body),
  bytes: Uint8Array.from(body),
});

/** A client's stream: records what is written; while `behind`, each write says the client is behind until `drain()`. */
class TestSink implements WatchSink {
  readonly written: WatchUpdate[] = [];
  behind = false;
  private waiting: (() => void) | null = null;
  write(u: WatchUpdate): boolean {
    this.written.push(u);
    return !this.behind;
  }
  drained(): Promise<void> {
    return new Promise((resolve) => (this.waiting = resolve));
  }
  /** The client caught up; resolves once the watcher has reacted to it. */
  async drain(): Promise<void> {
    this.behind = false;
    const waiting = this.waiting;
    this.waiting = null;
    waiting?.();
    await new Promise<void>((r) => setImmediate(r));
  }
  get sequences(): bigint[] {
    return this.written.map((u) => u.sequence);
  }
}

describe("a watcher's mailbox", () => {
  it("writes each state as it is offered while the client keeps up", () => {
    const watcher = new BalanceWatcher();
    const sink = new TestSink();
    void watcher.deliver(sink);
    for (let s = 1n; s <= 5n; s++) watcher.offer(update(s), false);
    expect(sink.sequences).toEqual([1n, 2n, 3n, 4n, 5n]);
  });

  it("keeps only the latest of the states offered while the client is behind: a slow watcher skips, never piles up", async () => {
    const watcher = new BalanceWatcher();
    const sink = new TestSink();
    sink.behind = true;
    void watcher.deliver(sink);
    for (let s = 1n; s <= 10_000n; s++) watcher.offer(update(s), false);
    // The first went out and left the client behind; the rest waited in the one slot.
    expect(sink.sequences).toEqual([1n]);
    await sink.drain();
    expect(sink.sequences).toEqual([1n, 10_000n]);
    await sink.drain();
    expect(sink.sequences).toEqual([1n, 10_000n]);
  });

  it("a state offered before delivery starts is the first written", () => {
    const watcher = new BalanceWatcher();
    watcher.offer(update(3n), false);
    watcher.offer(update(4n), false);
    const sink = new TestSink();
    void watcher.deliver(sink);
    expect(sink.sequences).toEqual([4n]);
  });

  it("never writes an older state after a newer one, nor the same state twice", () => {
    const watcher = new BalanceWatcher();
    const sink = new TestSink();
    void watcher.deliver(sink);
    watcher.offer(update(5n), false);
    watcher.offer(update(4n), false);
    watcher.offer(update(5n), false);
    expect(sink.sequences).toEqual([5n]);
  });

  it("the same sequence is written again when the balance differs (time alone changed it) or on a re-send", () => {
    const watcher = new BalanceWatcher();
    const sink = new TestSink();
    void watcher.deliver(sink);
    watcher.offer(update(7n, [1]), false);
    watcher.offer(update(7n, [2]), false);
    watcher.offer(update(7n, [2]), true);
    // A re-send never brings back an older state.
    watcher.offer(update(6n), true);
    expect(sink.written.map((u) => [u.sequence, u.body[0]])).toEqual([
      [7n, 1],
      [7n, 2],
      [7n, 2],
    ]);
  });

  it("ending with a failure writes the waiting state first, then rejects with it; leaving ends at once", async () => {
    const failing = new BalanceWatcher();
    const sink = new TestSink();
    sink.behind = true;
    let outcome: unknown = "pending";
    failing.deliver(sink).then(
      () => (outcome = "resolved"),
      (err: unknown) => (outcome = err),
    );
    failing.offer(update(2n), false);
    failing.offer(update(3n), false);
    failing.end({ reason: "SHUTTING_DOWN", message: "bye", metadata: {} });
    await new Promise<void>((r) => setImmediate(r));
    expect(outcome).toBe("pending"); // 3 still waits for the client
    await sink.drain();
    expect(sink.sequences).toEqual([2n, 3n]);
    expect(outcome).toBeInstanceOf(FailureError);

    const leaving = new BalanceWatcher();
    const gone = new TestSink();
    gone.behind = true;
    const delivered = leaving.deliver(gone);
    leaving.offer(update(3n), false);
    leaving.offer(update(4n), false);
    leaving.end("done");
    await expect(delivered).resolves.toBeUndefined();
    expect(gone.sequences).toEqual([3n]);
  });
});
