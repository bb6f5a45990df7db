import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { dayOf, isTimeZone, monthOf, weekOf } from "../../src/domain/time-zone.js";

const iso = (d: Date) => d.toISOString();
const span = (s: { start: Date; end: Date }) => [iso(s.start), iso(s.end)];

describe("calendar spans in a time zone", () => {
  it("a day in UTC and in zones ahead of and behind it", () => {
    const at = new Date("2030-01-15T12:00:00Z");
    expect(span(dayOf("UTC", at))).toEqual(["2030-01-15T00:00:00.000Z", "2030-01-16T00:00:00.000Z"]);
    expect(span(dayOf("Europe/Paris", at))).toEqual(["2030-01-14T23:00:00.000Z", "2030-01-15T23:00:00.000Z"]);
    expect(span(dayOf("America/Los_Angeles", at))).toEqual(["2030-01-15T08:00:00.000Z", "2030-01-16T08:00:00.000Z"]);
    // 23:30 UTC is already the next day in Paris.
    expect(span(dayOf("Europe/Paris", new Date("2030-01-15T23:30:00Z")))).toEqual(["2030-01-15T23:00:00.000Z", "2030-01-16T23:00:00.000Z"]);
    // Half- and quarter-hour offsets.
    expect(iso(dayOf("Asia/Kolkata", at).start)).toBe("2030-01-14T18:30:00.000Z");
    expect(iso(dayOf("Asia/Kathmandu", at).start)).toBe("2030-01-14T18:15:00.000Z");
  });

  it("days across daylight-saving changes are 23 and 25 hours", () => {
    const spring = dayOf("Europe/Paris", new Date("2030-03-31T12:00:00Z"));
    expect(span(spring)).toEqual(["2030-03-30T23:00:00.000Z", "2030-03-31T22:00:00.000Z"]);
    const autumn = dayOf("Europe/Paris", new Date("2030-10-27T12:00:00Z"));
    expect(autumn.end.getTime() - autumn.start.getTime()).toBe(25 * 3_600_000);
  });

  it("a day whose midnight the clocks skip starts at the first instant that exists", () => {
    // America/Santiago springs forward at 24:00 (00:00 → 01:00) in early September.
    const d = dayOf("America/Santiago", new Date("2029-09-02T12:00:00Z"));
    expect(iso(d.start)).toBe("2029-09-02T04:00:00.000Z"); // 01:00 local (UTC−3), the transition
    expect(d.end.getTime() - d.start.getTime()).toBe(23 * 3_600_000);
  });

  it("weeks start on Monday 00:00 local; months on the 1st", () => {
    expect(span(weekOf("UTC", new Date("2030-01-15T12:00:00Z")))).toEqual(["2030-01-14T00:00:00.000Z", "2030-01-21T00:00:00.000Z"]);
    // A Sunday evening in New York is the same week; Monday 00:00 there is 05:00 UTC.
    expect(iso(weekOf("America/New_York", new Date("2030-01-21T03:00:00Z")).start)).toBe("2030-01-14T05:00:00.000Z");
    expect(iso(weekOf("America/New_York", new Date("2030-01-21T05:00:00Z")).start)).toBe("2030-01-21T05:00:00.000Z");
    // A week across the turn of the year.
    expect(span(weekOf("UTC", new Date("2031-01-01T00:00:00Z")))).toEqual(["2030-12-30T00:00:00.000Z", "2031-01-06T00:00:00.000Z"]);
    expect(span(monthOf("Europe/Paris", new Date("2030-12-31T23:30:00Z")))).toEqual(["2030-12-31T23:00:00.000Z", "2031-01-31T23:00:00.000Z"]);
  });

  it("any instant lies in its day, week and month, and the spans tile time (property)", () => {
    const zones = ["UTC", "Europe/Paris", "America/Los_Angeles", "Asia/Kolkata", "Australia/Lord_Howe", "America/Santiago", "Pacific/Chatham"];
    fc.assert(
      fc.property(fc.integer({ min: Date.UTC(2000, 0, 1), max: Date.UTC(2060, 0, 1) }), fc.constantFrom(...zones), (ms, zone) => {
        const at = new Date(ms);
        for (const of of [dayOf, weekOf, monthOf]) {
          const s = of(zone, at);
          expect(s.start.getTime()).toBeLessThanOrEqual(ms);
          expect(s.end.getTime()).toBeGreaterThan(ms);
          // The next span starts where this one ends.
          expect(of(zone, s.end).start.getTime()).toBe(s.end.getTime());
        }
        const day = dayOf(zone, at);
        expect((day.end.getTime() - day.start.getTime()) / 1_800_000).toBeGreaterThanOrEqual(44); // ≥ 22 h
        expect((day.end.getTime() - day.start.getTime()) / 1_800_000).toBeLessThanOrEqual(52); // ≤ 26 h
      }),
      { numRuns: 300 }, // fast-check prints the seed and path of a failure, to replay it
    );
  });

  it("knows IANA names and refuses others", () => {
    expect(isTimeZone("UTC")).toBe(true);
    expect(isTimeZone("Europe/Paris")).toBe(true);
    expect(isTimeZone("Mars/Olympus")).toBe(false);
    expect(isTimeZone("")).toBe(false);
    expect(isTimeZone("x".repeat(65))).toBe(false);
  });
});
