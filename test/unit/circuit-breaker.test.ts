import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { CircuitBreaker } from "../../src/idempotency/circuit-breaker.js";

/** A breaker whose probe answers as `answers` says at the time it runs, counting probes and changes. */
function breaker(threshold = 3) {
  const state = { answers: false, probes: 0, changes: [] as boolean[] };
  const b = new CircuitBreaker({
    failureThreshold: threshold,
    probeIntervalMs: 1000,
    probe: async () => {
      state.probes += 1;
      if (!state.answers) throw new Error("no answer");
    },
    onChange: (open) => state.changes.push(open),
  });
  return { b, state };
}

describe("circuit breaker", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("opens on the third failure in a row, and a success in between starts the count again", () => {
    const { b, state } = breaker();
    b.failure(new Error("1"));
    b.failure(new Error("2"));
    b.success();
    b.failure(new Error("1"));
    b.failure(new Error("2"));
    expect(b.open).toBe(false);
    b.failure(new Error("3"));
    expect(b.open).toBe(true);
    b.failure(new Error("4")); // already open: told once
    expect(state.changes).toEqual([true]);
    b.stop();
  });

  it("trip opens at once", () => {
    const { b, state } = breaker();
    b.trip(new Error("connection refused"));
    expect([b.open, state.changes]).toEqual([true, [true]]);
    b.stop();
  });

  it("open, probes once per interval until the probe answers, then closes and stops probing", async () => {
    const { b, state } = breaker();
    b.trip(new Error("down"));
    await vi.advanceTimersByTimeAsync(999);
    expect(state.probes).toBe(0);
    await vi.advanceTimersByTimeAsync(1);
    expect(state.probes).toBe(1);
    await vi.advanceTimersByTimeAsync(2000);
    expect([state.probes, b.open]).toEqual([3, true]);
    state.answers = true;
    await vi.advanceTimersByTimeAsync(1000);
    expect([state.probes, b.open, state.changes]).toEqual([4, false, [true, false]]);
    await vi.advanceTimersByTimeAsync(5000);
    expect(state.probes).toBe(4);
  });

  it("closed again, it needs the full count of failures to open once more", async () => {
    const { b, state } = breaker();
    b.failure(new Error("1"));
    b.failure(new Error("2"));
    b.trip(new Error("down"));
    state.answers = true;
    await vi.advanceTimersByTimeAsync(1000);
    expect(b.open).toBe(false);
    b.failure(new Error("1"));
    b.failure(new Error("2"));
    expect(b.open).toBe(false);
    b.failure(new Error("3"));
    expect(b.open).toBe(true);
    b.stop();
  });

  it("stopped, it never probes again", async () => {
    const { b, state } = breaker();
    b.trip(new Error("down"));
    b.stop();
    await vi.advanceTimersByTimeAsync(10_000);
    expect(state.probes).toBe(0);
    b.trip(new Error("again"));
    expect(state.changes).toEqual([true]);
  });
});
