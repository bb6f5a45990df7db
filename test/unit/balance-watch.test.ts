/**
 * A WatchBalance watcher's mailbox (src/app/balance-watch.ts): one slot, the latest state wins,
 * nothing older than what was accepted is ever taken. The e2e side is test/e2e/watch-balance.test.ts.
 */
import { describe, expect, it } from "vitest";
import { BalanceWatcher, type WatchUpdate } from "../../src/app/balance-watch.js";
import { FailureError } from "../../src/domain/errors.js";

const update = (sequence: bigint, body = [Number(sequence % 256n)]): WatchUpdate => ({
  sequence,
  body: Uint8Array.from(body),
  bytes: Uint8Array.from(body),
});

/** Takes what is waiting without blocking: the next state, or null when none is. */
async function take(iterator: AsyncIterator<WatchUpdate>): Promise<WatchUpdate | null> {
  const next = iterator.next();
  const none = Symbol("none");
  const first = await Promise.race([next, new Promise<typeof none>((r) => setImmediate(() => r(none)))]);
  if (first === none) {
    // Nothing was waiting; leave the pending next() to a later offer.
    return null;
  }
  return first.done ? null : first.value;
}

describe("a watcher's one-slot mailbox", () => {
  it("keeps only the latest of the states offered while nobody takes: a slow watcher skips, never piles up", async () => {
    const watcher = new BalanceWatcher();
    for (let s = 1n; s <= 10_000n; s++) watcher.offer(update(s), false);
    const it = watcher[Symbol.asyncIterator]();
    expect((await take(it))?.sequence).toBe(10_000n);
    expect(await take(it)).toBeNull();
  });

  it("never takes an older state after a newer one, nor the same state twice", async () => {
    const watcher = new BalanceWatcher();
    const it = watcher[Symbol.asyncIterator]();
    watcher.offer(update(5n), false);
    expect((await take(it))?.sequence).toBe(5n);
    watcher.offer(update(4n), false);
    watcher.offer(update(5n), false);
    expect(await take(it)).toBeNull();
  });

  it("the same sequence is taken again when the balance differs (time alone changed it) or on a re-send", async () => {
    const watcher = new BalanceWatcher();
    const it = watcher[Symbol.asyncIterator]();
    watcher.offer(update(7n, [1]), false);
    expect((await take(it))?.body).toEqual(Uint8Array.from([1]));
    watcher.offer(update(7n, [2]), false);
    expect((await take(it))?.body).toEqual(Uint8Array.from([2]));
    watcher.offer(update(7n, [2]), true);
    expect((await take(it))?.sequence).toBe(7n);
    // A re-send never brings back an older state.
    watcher.offer(update(6n), true);
    expect(await take(it)).toBeNull();
  });

  it("a waiting taker is woken by the next offer", async () => {
    const watcher = new BalanceWatcher();
    const it = watcher[Symbol.asyncIterator]();
    const pending = it.next();
    watcher.offer(update(1n), false);
    expect((await pending).value?.sequence).toBe(1n);
  });

  it("ending with a failure delivers the waiting state first, then throws it; leaving ends at once", async () => {
    const failing = new BalanceWatcher();
    failing.offer(update(3n), false);
    failing.end({ reason: "SHUTTING_DOWN", message: "bye", metadata: {} });
    const it = failing[Symbol.asyncIterator]();
    expect((await it.next()).value?.sequence).toBe(3n);
    await expect(it.next()).rejects.toBeInstanceOf(FailureError);

    const leaving = new BalanceWatcher();
    leaving.offer(update(3n), false);
    leaving.end("done");
    expect((await leaving[Symbol.asyncIterator]().next()).done).toBe(true);
  });
});
