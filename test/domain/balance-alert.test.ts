import { describe, expect, it } from "vitest";
import type { AccountBook } from "../../src/domain/account-book.js";
import { checkBalanceAlert, crossing, describeAlert, hysteresis, setBalanceAlert, thresholdCredits, validThreshold } from "../../src/domain/balance-alert.js";
import { release } from "../../src/domain/holds.js";
import { adjustment, BASIC, hold, newBook, subscribed, T0, unwrap } from "./fixtures.js";

const NO_DEFAULT = { defaultPercent: 0 };
const TEN_PERCENT = { defaultPercent: 10 };

/** The alert events the book stated since `from`. */
function alertsSince(book: AccountBook, from: number): string[] {
  return book.events.slice(from).map((e) => e.kind).filter((k) => k.startsWith("BALANCE_"));
}

describe("crossing: the alert's cycle", () => {
  it("fires LOW once on the way down, EXHAUSTED at 0, and re-arms only past threshold + hysteresis", () => {
    const threshold = 100n; // hysteresis 10: recovers at 110
    const steps: [bigint, string[], string][] = [
      [150n, [], "ARMED"],
      [100n, [], "ARMED"], // at the threshold is not below it
      [99n, ["BALANCE_LOW"], "LOW"],
      [50n, [], "LOW"], // still below: nothing again
      [105n, [], "LOW"], // above the threshold but within the hysteresis
      [90n, [], "LOW"],
      [0n, ["BALANCE_EXHAUSTED"], "EXHAUSTED"],
      [0n, [], "EXHAUSTED"],
      [60n, [], "EXHAUSTED"], // a little back: stays exhausted (no flapping back to LOW)
      [109n, [], "EXHAUSTED"],
      [110n, ["BALANCE_RECOVERED"], "ARMED"],
      [99n, ["BALANCE_LOW"], "LOW"], // armed again: the next fall fires again
      [110n, ["BALANCE_RECOVERED"], "ARMED"],
    ];
    let state: "ARMED" | "LOW" | "EXHAUSTED" = "ARMED";
    for (const [available, events, after] of steps) {
      const next = crossing(state, available, threshold);
      expect([available, next.events, next.state]).toEqual([available, events, after]);
      state = next.state;
    }
  });

  it("a fall from above the threshold straight to 0 states LOW and then EXHAUSTED", () => {
    expect(crossing("ARMED", 0n, 100n)).toEqual({ state: "EXHAUSTED", events: ["BALANCE_LOW", "BALANCE_EXHAUSTED"] });
  });

  it("a threshold of 0 credits only tells exhaustion, and recovers at 1", () => {
    expect(crossing("ARMED", 1n, 0n)).toEqual({ state: "ARMED", events: [] });
    expect(crossing("ARMED", 0n, 0n)).toEqual({ state: "EXHAUSTED", events: ["BALANCE_EXHAUSTED"] });
    expect(crossing("EXHAUSTED", 1n, 0n)).toEqual({ state: "ARMED", events: ["BALANCE_RECOVERED"] });
  });

  it("hysteresis is a tenth of the threshold, at least 1 credit", () => {
    expect([0n, 1n, 9n, 10n, 19n, 20n, 100n, 1005n].map(hysteresis)).toEqual([1n, 1n, 1n, 1n, 1n, 2n, 10n, 100n]);
  });

  it("validates thresholds: credits not negative, percent 1 to 100", () => {
    expect(validThreshold({ kind: "credits", credits: 0n })).toBe(true);
    expect(validThreshold({ kind: "credits", credits: -1n })).toBe(false);
    expect([0, 1, 100, 101, 2.5].map((percent) => validThreshold({ kind: "percent", percent }))).toEqual([false, true, true, false, false]);
  });
});

describe("the threshold that applies to an account", () => {
  it("its own credits; its own percent of the plan's allowance; else the default percent for an account with a plan", () => {
    const { book } = subscribed(BASIC, T0); // allowance 1000
    expect(thresholdCredits(book, TEN_PERCENT)).toBe(100n);
    expect(thresholdCredits(book, NO_DEFAULT)).toBeNull();
    book.setAlertThreshold({ kind: "percent", percent: 25 });
    expect(thresholdCredits(book, NO_DEFAULT)).toBe(250n);
    book.setAlertThreshold({ kind: "credits", credits: 7n });
    expect(thresholdCredits(book, TEN_PERCENT)).toBe(7n);
  });

  it("an account without a plan has no default, and a percent of no allowance is no alert", () => {
    const book = newBook();
    adjustment(book, "adj", 500n, null);
    expect(thresholdCredits(book, TEN_PERCENT)).toBeNull();
    book.setAlertThreshold({ kind: "percent", percent: 50 });
    expect(describeAlert(book, TEN_PERCENT)).toMatchObject({ thresholdCredits: null, recoverAt: null, isDefault: false });
  });
});

describe("checkBalanceAlert on a book", () => {
  it("states the crossing as events and moves the state; nothing while nothing crosses", () => {
    const book = newBook();
    adjustment(book, "adj", 200n, null);
    setBalanceAlert(book, { kind: "credits", credits: 100n }, T0, NO_DEFAULT);
    expect(book.alert.state).toBe("ARMED");
    let n = book.events.length;
    const big = hold(book, "r1", 150n); // available 50: below 100
    checkBalanceAlert(book, T0, NO_DEFAULT);
    expect(alertsSince(book, n)).toEqual(["BALANCE_LOW"]);
    n = book.events.length;
    hold(book, "r2", 10n);
    checkBalanceAlert(book, T0, NO_DEFAULT);
    expect(alertsSince(book, n)).toEqual([]);
    hold(book, "r3", 40n); // available 0
    checkBalanceAlert(book, T0, NO_DEFAULT);
    expect(alertsSince(book, n)).toEqual(["BALANCE_EXHAUSTED"]);
    n = book.events.length;
    unwrap(release(book, big, "CANCELLED", "", T0)); // available 150 ≥ 110
    checkBalanceAlert(book, T0, NO_DEFAULT);
    expect(alertsSince(book, n)).toEqual(["BALANCE_RECOVERED"]);
    expect(book.alert.state).toBe("ARMED");
    const recovered = book.events.at(-1)!;
    expect(recovered).toMatchObject({ kind: "BALANCE_RECOVERED", available: 150n, alert: { thresholdCredits: 100n, recoverAt: 110n, state: "ARMED" } });
  });

  it("SetBalanceAlert is a change of its own (BALANCE_ALERT_SET) and judges the balance on the new threshold at once", () => {
    const book = newBook();
    adjustment(book, "adj", 50n, null);
    const changes = book.changeCount;
    const n = book.events.length;
    const view = setBalanceAlert(book, { kind: "credits", credits: 80n }, T0, NO_DEFAULT);
    expect(book.changeCount).toBeGreaterThan(changes);
    expect(book.events.slice(n).map((e) => e.kind)).toEqual(["BALANCE_ALERT_SET", "BALANCE_LOW"]);
    expect(view).toMatchObject({ threshold: { kind: "credits", credits: 80n }, thresholdCredits: 80n, recoverAt: 88n, state: "LOW", isDefault: false });
    // Lowering it below the balance past the hysteresis recovers.
    const m = book.events.length;
    setBalanceAlert(book, { kind: "credits", credits: 10n }, T0, NO_DEFAULT);
    expect(book.events.slice(m).map((e) => e.kind)).toEqual(["BALANCE_ALERT_SET", "BALANCE_RECOVERED"]);
  });

  it("with no threshold nothing is stated, whatever the balance", () => {
    const book = newBook();
    adjustment(book, "adj", 10n, null);
    hold(book, "r", 10n);
    const n = book.events.length;
    checkBalanceAlert(book, T0, TEN_PERCENT); // no plan: the default does not apply
    expect(book.events.length).toBe(n);
    expect(book.alert.state).toBe("ARMED");
  });
});
