import { describe, expect, it } from "vitest";
import { eventSubject, subjectToken } from "../../src/broker/subjects.js";
import { parseConfig } from "../../src/config.js";

describe("broker subjects", () => {
  it("keep letters, digits, '-' and '_' and escape everything else one-to-one", () => {
    expect(subjectToken("acct-1_B")).toBe("acct-1_B");
    expect(subjectToken("org.42/team*>%")).toBe("org%2E42%2Fteam%2A%3E%25");
    expect(eventSubject("credit.events", "HOLD_CREATED", "a.b")).toBe("credit.events.hold_created.a%2Eb");
  });

  it("match the formula docs/events.md gives consumers, for every character an account id may hold", () => {
    let all = "";
    for (let c = 0x21; c <= 0x7e; c++) all += String.fromCharCode(c);
    const documented = (id: string) => encodeURIComponent(id).replace(/[.!~*'()]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase());
    expect(subjectToken(all)).toBe(documented(all));
    expect(subjectToken(all)).toMatch(/^[A-Za-z0-9_%-]+$/);
  });
});

describe("broker relay configuration", () => {
  const base = { DATABASE_URL: "postgres://x@127.0.0.1/db" };

  it("is off by default, with the documented defaults", () => {
    const c = parseConfig(base);
    expect(c.EVENTS_BROKER_URL).toBeUndefined();
    expect(c.EVENTS_BROKER_STREAM).toBe("CREDIT_EVENTS");
    expect(c.EVENTS_BROKER_SUBJECT_PREFIX).toBe("credit.events");
    expect(c.EVENTS_BROKER_DUPLICATE_WINDOW_SECONDS).toBe(600);
  });

  it("takes nats:// URLs, several comma-separated", () => {
    expect(parseConfig({ ...base, EVENTS_BROKER_URL: "nats://127.0.0.1:4222" }).EVENTS_BROKER_URL).toBe("nats://127.0.0.1:4222");
    expect(parseConfig({ ...base, EVENTS_BROKER_URL: "nats://a:4222,nats://b:4222" }).EVENTS_BROKER_URL).toBe("nats://a:4222,nats://b:4222");
  });

  it("refuses what would not work, naming the variable", () => {
    expect(() => parseConfig({ ...base, EVENTS_BROKER_URL: "amqp://127.0.0.1:5672" })).toThrow(/EVENTS_BROKER_URL/);
    expect(() => parseConfig({ ...base, EVENTS_BROKER_URL: "nats://a:4222", EVENT_OUTBOX_ENABLED: "false" })).toThrow(/EVENTS_BROKER_URL: the broker relay publishes the outbox/);
    expect(() => parseConfig({ ...base, EVENTS_BROKER_STREAM: "credit.events" })).toThrow(/EVENTS_BROKER_STREAM/);
    expect(() => parseConfig({ ...base, EVENTS_BROKER_SUBJECT_PREFIX: "credit.>" })).toThrow(/EVENTS_BROKER_SUBJECT_PREFIX/);
    expect(() => parseConfig({ ...base, EVENTS_BROKER_SUBJECT_PREFIX: "credit..events" })).toThrow(/EVENTS_BROKER_SUBJECT_PREFIX/);
  });
});
