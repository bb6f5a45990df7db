import { describe, expect, it } from "vitest";
import { type BatchLocks, GroupCommit, type Settled } from "../../src/store/batching.js";
import { ReservationLocator } from "../../src/store/reservation-locator.js";

interface Job {
  readonly key: string;
  readonly n: number;
}

/** A GroupCommit whose batches stay open until released by the test, recording what each batch held. */
function harness(concurrency: number, maxBatch: number) {
  const batches: Job[][] = [];
  const gates: (() => void)[] = [];
  let running = 0;
  let peak = 0;
  const group = new GroupCommit<Job, string>({
    concurrency,
    maxBatch,
    run: async (items) => {
      batches.push(items);
      running += 1;
      peak = Math.max(peak, running);
      await new Promise<void>((resolve) => gates.push(resolve));
      running -= 1;
      return items.map((j): Settled<string> => (j.n < 0 ? { ok: false, error: new Error(`bad ${j.n}`) } : { ok: true, value: `${j.key}#${j.n}` }));
    },
  });
  const submit = (key: string, n: number) => group.submit(key, { key, n });
  /** Opens every batch started so far and lets the next ones form. */
  const releaseAll = async () => {
    while (gates.length > 0) gates.shift()!();
    await new Promise((r) => setImmediate(r));
  };
  const turn = () => new Promise((r) => setImmediate(r));
  return { batches, submit, releaseAll, turn, peak: () => peak };
}

describe("GroupCommit", () => {
  it("puts the items of one event-loop turn into one batch, and resolves each with its own result", async () => {
    const h = harness(2, 64);
    const results = Promise.all([h.submit("a", 1), h.submit("b", 2), h.submit("c", 3)]);
    await h.turn();
    expect(h.batches.map((b) => b.map((j) => j.n))).toEqual([[1, 2, 3]]);
    await h.releaseAll();
    expect(await results).toEqual(["a#1", "b#2", "c#3"]);
  });

  it("never runs one key in two batches at once, and keeps each key's items in arrival order", async () => {
    const h = harness(4, 64);
    const first = h.submit("hot", 1);
    await h.turn();
    // While hot#1 runs, more hot items and a quiet one arrive.
    const later = [h.submit("hot", 2), h.submit("quiet", 3), h.submit("hot", 4)];
    await h.turn();
    // The quiet key goes at once in a second batch; the hot items wait for the running one.
    expect(h.batches.map((b) => b.map((j) => j.n))).toEqual([[1], [3]]);
    await h.releaseAll();
    expect(h.batches.map((b) => b.map((j) => j.n))).toEqual([[1], [3], [2, 4]]);
    await h.releaseAll();
    expect(await Promise.all([first, ...later])).toEqual(["hot#1", "hot#2", "quiet#3", "hot#4"]);
  });

  it("runs at most `concurrency` batches at once and at most maxBatch items per batch", async () => {
    const h = harness(2, 3);
    const all: Promise<string>[] = [];
    for (let i = 0; i < 4; i++) {
      all.push(h.submit(`k${i}`, i));
      await h.turn(); // each in its own turn: the first two start alone, the rest queue
    }
    for (let i = 4; i < 10; i++) all.push(h.submit(`k${i}`, i));
    await h.turn();
    expect(h.batches.length).toBe(2);
    while (h.batches.flat().length < 10) await h.releaseAll();
    await h.releaseAll();
    expect(h.peak()).toBe(2);
    expect(Math.max(...h.batches.map((b) => b.length))).toBe(3);
    expect(h.batches.flat().map((j) => j.n).sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(await Promise.all(all)).toHaveLength(10);
  });

  it("rejects only the items a batch says failed, and every item of a batch that throws", async () => {
    const h = harness(1, 64);
    const checks = [expect(h.submit("a", 1)).resolves.toBe("a#1"), expect(h.submit("b", -1)).rejects.toThrow("bad -1")];
    await h.turn();
    await h.releaseAll();
    await Promise.all(checks);

    const thrown = new GroupCommit<Job, string>({ concurrency: 1, maxBatch: 8, run: () => Promise.reject(new Error("down")) });
    await Promise.all([thrown.submit("a", { key: "a", n: 1 }), thrown.submit("b", { key: "b", n: 2 })].map((p) => expect(p).rejects.toThrow("down")));
  });

  it("refuses a zero concurrency or batch size", () => {
    const run = async () => [];
    expect(() => new GroupCommit({ concurrency: 0, maxBatch: 1, run })).toThrow(RangeError);
    expect(() => new GroupCommit({ concurrency: 1, maxBatch: 0, run })).toThrow(RangeError);
    expect(() => new GroupCommit({ concurrency: 1, maxBatch: 1, lanes: 0, run })).toThrow(RangeError);
  });
});

describe("GroupCommit with stagger", () => {
  /** Batches stay open until the test ends them; `load(i)` tells the group that batch i has loaded. */
  function staggered(splitFrom: number, concurrency = 2, maxLoadWaitMs = 60_000) {
    const batches: string[][] = [];
    const loads: (() => void)[] = [];
    const ends: (() => void)[] = [];
    const group = new GroupCommit<string, string>({
      concurrency,
      maxBatch: 64,
      stagger: { splitFrom, maxLoadWaitMs },
      run: async (items, loaded) => {
        batches.push(items);
        loads.push(loaded);
        await new Promise<void>((resolve) => ends.push(resolve));
        return items.map((i) => ({ ok: true, value: i }));
      },
    });
    const turn = () => new Promise((r) => setImmediate(r));
    const submitAll = (items: string[]) => items.map((item) => group.submit(item.split("#")[0]!, item));
    return { batches, group, turn, submitAll, load: (i: number) => loads[i]!(), end: (i: number) => ends[i]!() };
  }

  it("splits many waiting items into two batches, the second starting once the first has loaded", async () => {
    const s = staggered(2);
    const all = s.submitAll(["a", "b", "c", "d", "e", "f"]);
    await s.turn();
    expect(s.batches).toEqual([["a", "b", "c"]]);
    // A free slot is not enough: the first batch is still loading.
    await s.turn();
    expect(s.batches).toHaveLength(1);
    s.load(0);
    await s.turn();
    expect(s.batches).toEqual([["a", "b", "c"], ["d", "e", "f"]]);
    s.load(1);
    s.end(0);
    s.end(1);
    expect(await Promise.all(all)).toEqual(["a", "b", "c", "d", "e", "f"]);
  });

  it("splits by arrival order whatever the keys, one key's items too, but never fewer than twice splitFrom", async () => {
    /** The batches in flight after items arrive together (splitFrom 2), before and after the first has loaded. */
    const split = async (items: string[]) => {
      const s = staggered(2);
      void s.submitAll(items);
      await s.turn();
      const before = s.batches.length;
      s.load(0);
      await s.turn();
      return { before, batches: s.batches };
    };
    // Key a is in the running batch, which holds its locks by then: a#3 need not wait for it to end.
    expect(await split(["a#1", "b#1", "a#2", "c#1", "a#3"])).toEqual({ before: 1, batches: [["a#1", "b#1", "a#2"], ["c#1", "a#3"]] });
    expect(await split(["h#1", "h#2", "h#3", "h#4", "h#5"])).toEqual({ before: 1, batches: [["h#1", "h#2", "h#3"], ["h#4", "h#5"]] });

    const few = staggered(4);
    void few.submitAll(["a", "b", "c", "d", "e", "f", "g"]);
    await few.turn();
    expect(few.batches).toEqual([["a", "b", "c", "d", "e", "f", "g"]]);
  });

  it("takes every waiting item while another batch runs, and starts none while one is loading", async () => {
    const s = staggered(2, 3);
    void s.submitAll(["a", "b", "c", "d"]);
    await s.turn();
    s.load(0);
    await s.turn();
    expect(s.batches).toEqual([["a", "b"], ["c", "d"]]);
    void s.submitAll(["e", "f", "g", "h", "i"]);
    await s.turn();
    expect(s.batches).toHaveLength(2); // batch 1 is loading
    s.load(1);
    await s.turn();
    // Batch 0 still runs, so the third takes all five rather than half.
    expect(s.batches[2]).toEqual(["e", "f", "g", "h", "i"]);
  });

  it("lets the next batch start when a batch ends without saying it loaded", async () => {
    const s = staggered(1);
    const all = s.submitAll(["a", "b"]);
    await s.turn();
    expect(s.batches).toEqual([["a"]]);
    s.end(0);
    await s.turn();
    expect(s.batches).toEqual([["a"], ["b"]]);
    s.end(1);
    expect(await Promise.all(all)).toEqual(["a", "b"]);
  });

  it("stops waiting for a batch that has not loaded after maxLoadWaitMs", async () => {
    const s = staggered(1, 2, 30);
    void s.submitAll(["a", "b"]);
    await s.turn();
    expect(s.batches).toEqual([["a"]]);
    await new Promise((r) => setTimeout(r, 5));
    expect(s.batches).toHaveLength(1);
    await new Promise((r) => setTimeout(r, 60));
    // Batch 0 still neither loaded nor ended (a lock held elsewhere): b went ahead in the other slot.
    expect(s.batches).toEqual([["a"], ["b"]]);
    s.load(0); // a late load changes nothing
    s.end(0);
    s.end(1);
  });

  it("refuses a split size below one and a load wait that is not positive", () => {
    const run = async () => [];
    expect(() => new GroupCommit({ concurrency: 1, maxBatch: 1, stagger: { splitFrom: 0, maxLoadWaitMs: 25 }, run })).toThrow(RangeError);
    expect(() => new GroupCommit({ concurrency: 1, maxBatch: 1, stagger: { splitFrom: 1, maxLoadWaitMs: 0 }, run })).toThrow(RangeError);
  });
});

describe("ReservationLocator", () => {
  it("remembers reservations up to its capacity, forgetting the least recently used first", () => {
    const locator = new ReservationLocator(2);
    locator.set("r1", "acc-1");
    locator.set("r2", "acc-2");
    expect(locator.get("r1")).toBe("acc-1"); // r1 is now the most recently used
    locator.set("r3", "acc-3");
    expect(locator.get("r2")).toBeUndefined();
    expect(locator.get("r1")).toBe("acc-1");
    expect(locator.get("r3")).toBe("acc-3");
    expect(locator.size).toBe(2);
  });
});

describe("GroupCommit with acrossKeys: false", () => {
  it("gives each batch the items of a single key, still in arrival order", async () => {
    const batches: string[][] = [];
    const group = new GroupCommit<string, string>({
      concurrency: 1,
      maxBatch: 64,
      acrossKeys: false,
      run: async (items) => {
        batches.push(items);
        return items.map((i) => ({ ok: true, value: i }));
      },
    });
    const all = ["a1", "b1", "a2", "c1", "b2"].map((item) => group.submit(item[0]!, item));
    expect(await Promise.all(all)).toEqual(["a1", "b1", "a2", "c1", "b2"]);
    expect(batches).toEqual([["a1", "a2"], ["b1", "b2"], ["c1"]]);
  });
});

describe("GroupCommit parking lanes (a key whose lock is held elsewhere)", () => {
  interface Started {
    readonly items: string[];
    readonly locks: BatchLocks;
    /** Says the batch has loaded, leaving these items out. */
    load(...leftOut: string[]): void;
    end(): void;
  }

  /** Batches stay open until the test loads and ends them; each item's value names who ran it. */
  function parking(options: { concurrency?: number; lanes?: number; maxLoadWaitMs?: number } = {}) {
    const batches: Started[] = [];
    const group = new GroupCommit<string, string>({
      concurrency: options.concurrency ?? 1,
      maxBatch: 64,
      ...(options.lanes ? { lanes: options.lanes } : {}),
      ...(options.maxLoadWaitMs ? { stagger: { splitFrom: 64, maxLoadWaitMs: options.maxLoadWaitMs } } : {}),
      run: (items, loaded, locks) =>
        new Promise((resolve) =>
          batches.push({
            items,
            locks,
            load: (...leftOut) => loaded(leftOut.map((x) => items.indexOf(x))),
            end: () => resolve(items.map((i): Settled<string> => ({ ok: true, value: `${i} by ${locks.lane === null ? "slot" : `lane ${locks.lane}`}` }))),
          }),
        ),
    });
    const submit = (...items: string[]) => items.map((item) => group.submit(item.split("#")[0]!, item));
    const turn = () => new Promise((r) => setImmediate(r));
    const shape = () => batches.map((b) => `${b.locks.lane === null ? "slot" : `lane ${b.locks.lane}`}: ${b.items.join(" ")}`);
    return { batches, submit, turn, shape };
  }

  it("a left-out key's items, and every later one, wait for its lane outside the slots while other keys go on", async () => {
    const g = parking();
    const first = g.submit("a#1", "b#1");
    await g.turn();
    g.batches[0]!.load("a#1");
    const later = g.submit("a#2", "c#1");
    await g.turn();
    // The one slot is still busy; a#2 waits behind a#1, whose lane waits for the lock.
    expect(g.shape()).toEqual(["slot: a#1 b#1", "lane a: a#1"]);
    g.batches[0]!.end();
    await g.turn();
    expect(g.shape()).toEqual(["slot: a#1 b#1", "lane a: a#1", "slot: c#1"]);
    expect(await first[1]).toBe("b#1 by slot");
    g.batches[2]!.load();
    g.batches[2]!.end();
    await g.turn();
    // The lane has the lock: a#2 goes back to the queue, and (batches not staggered) runs once the lane has ended.
    g.batches[1]!.load();
    await g.turn();
    expect(g.shape()).toHaveLength(3);
    g.batches[1]!.end();
    await g.turn();
    expect(g.shape()).toEqual(["slot: a#1 b#1", "lane a: a#1", "slot: c#1", "slot: a#2"]);
    g.batches[3]!.end();
    expect(await Promise.all([...first, ...later])).toEqual(["a#1 by lane a", "b#1 by slot", "a#2 by slot", "c#1 by slot"]);
  });

  it("staggered: once its lane holds the lock, the key's later items go back to the slots and may wait there for it", async () => {
    const g = parking({ concurrency: 2, maxLoadWaitMs: 60_000 });
    void g.submit("a#1", "b#1");
    await g.turn();
    g.batches[0]!.load("a#1");
    void g.submit("a#2", "b#2");
    await g.turn();
    expect(g.shape()).toEqual(["slot: a#1 b#1", "lane a: a#1", "slot: b#2"]);
    // b's lock is held by a loaded batch of the group (brief to wait for); a's is not.
    expect([g.batches[2]!.locks.heldByOther("b"), g.batches[2]!.locks.heldByOther("a")]).toEqual([true, false]);
    g.batches[2]!.load();
    g.batches[1]!.load();
    g.batches[0]!.end();
    await g.turn();
    expect(g.shape()).toEqual(["slot: a#1 b#1", "lane a: a#1", "slot: b#2", "slot: a#2"]);
    expect(g.batches[3]!.locks.heldByOther("a")).toBe(true); // the lane's
    g.batches[1]!.end();
    await g.turn();
    expect(g.batches[3]!.locks.heldByOther("a")).toBe(false);
  });

  it("runs at most `lanes` lanes; a parked key waits for a free one", async () => {
    const g = parking({ lanes: 1 });
    const all = g.submit("a#1", "b#1", "c#1");
    await g.turn();
    g.batches[0]!.load("a#1", "b#1");
    g.batches[0]!.end();
    await g.turn();
    expect(g.shape()).toEqual(["slot: a#1 b#1 c#1", "lane a: a#1"]);
    g.batches[1]!.load();
    g.batches[1]!.end();
    await g.turn();
    expect(g.shape()).toEqual(["slot: a#1 b#1 c#1", "lane a: a#1", "lane b: b#1"]);
    g.batches[2]!.load();
    g.batches[2]!.end();
    expect(await Promise.all(all)).toEqual(["a#1 by lane a", "b#1 by lane b", "c#1 by slot"]);
  });

  it("a lane that gives up waiting for now lets the other parked keys take their turn first", async () => {
    const g = parking({ lanes: 1 });
    const all = g.submit("a#1", "b#1");
    await g.turn();
    g.batches[0]!.load("a#1", "b#1");
    g.batches[0]!.end();
    g.batches[1]!.load("a#1"); // lane a: still locked, gives up for now
    g.batches[1]!.end();
    await g.turn();
    g.batches[2]!.load();
    g.batches[2]!.end();
    await g.turn();
    expect(g.shape()).toEqual(["slot: a#1 b#1", "lane a: a#1", "lane b: b#1", "lane a: a#1"]);
    g.batches[3]!.load();
    g.batches[3]!.end();
    expect(await Promise.all(all)).toEqual(["a#1 by lane a", "b#1 by lane b"]);
  });

  it("staggered: a batch started past maxLoadWaitMs takes none of the keys of the batch still loading", async () => {
    const g = parking({ concurrency: 2, maxLoadWaitMs: 20 });
    void g.submit("a#1");
    await g.turn();
    void g.submit("a#2", "b#1");
    while (g.batches.length < 2) await new Promise((r) => setTimeout(r, 5));
    // a#1's batch may yet leave a out: a#2 must not get ahead of it.
    expect(g.shape()).toEqual(["slot: a#1", "slot: b#1"]);
    g.batches[0]!.load("a#1");
    await g.turn();
    expect(g.shape()).toEqual(["slot: a#1", "slot: b#1", "lane a: a#1 a#2"]);
  });

  it("items left out after loading (a failed batch's commands running again alone) keep their place before the key's later items", async () => {
    const g = parking();
    const all = g.submit("a#1", "a#2", "b#1");
    await g.turn();
    g.batches[0]!.load();
    all.push(...g.submit("a#3"));
    await g.turn();
    g.batches[0]!.load("a#2");
    expect(g.shape()).toEqual(["slot: a#1 a#2 b#1", "lane a: a#2 a#3"]);
    g.batches[0]!.end();
    g.batches[1]!.load();
    g.batches[1]!.end();
    expect(await Promise.all(all)).toEqual(["a#1 by slot", "a#2 by lane a", "b#1 by slot", "a#3 by lane a"]);
  });
});
