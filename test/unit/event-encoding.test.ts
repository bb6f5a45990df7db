import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { EVENT_KINDS } from "../../src/domain/events.js";
import { EventSchema } from "../../src/gen/credit/v1/event_service_pb.js";
import { EVENT_KIND_CODES, feedEventBytes } from "../../src/rpc/event-encoding.js";
import { seededRandom, testSeed } from "../support/seeded-random.js";

/**
 * The hand-written envelope of an event against protobuf-es: byte for byte the same as toBinary
 * of the same fields, on random values (the seed is printed and can be replayed with EVENT_ENCODING_SEED).
 */
const SEED = testSeed("EVENT_ENCODING_SEED");


describe("the event envelope", () => {
  it(`is toBinary's bytes for random envelopes (seed ${SEED})`, () => {
    console.log(`event envelope seed: ${SEED} (replay with EVENT_ENCODING_SEED=${SEED})`);
    const rnd = seededRandom(SEED);
    const text = (max: number) => Array.from({ length: Math.floor(rnd() * max) }, () => String.fromCodePoint(32 + Math.floor(rnd() * (rnd() < 0.1 ? 0x2000 : 95)))).join("");
    for (let i = 0; i < 500; i++) {
      const kind = EVENT_KINDS[Math.floor(rnd() * EVENT_KINDS.length)]!;
      const occurredAt = new Date(Math.floor(rnd() * 4e12) - (rnd() < 0.1 ? 3e12 : 0));
      const recordedAt = new Date(Math.floor(rnd() * 4e12));
      const sequence = rnd() < 0.05 ? 0n : BigInt(Math.floor(rnd() * 2 ** 53)) * (rnd() < 0.2 ? 1024n : 1n);
      const payload = toBinary(EventSchema, create(EventSchema, { payload: { case: "testClockAdvanced", value: { advancedMs: BigInt(i), now: timestampFromDate(recordedAt) } } }));
      const row = { eventId: text(30), cursor: text(25), accountId: text(200), sequence, kind, occurredAt, recordedAt, payload };
      const expected = toBinary(
        EventSchema,
        create(EventSchema, {
          eventId: row.eventId,
          cursor: row.cursor,
          accountId: row.accountId,
          accountSequence: sequence,
          kind: EVENT_KIND_CODES[kind],
          occurredAt: timestampFromDate(occurredAt),
          recordedAt: timestampFromDate(recordedAt),
          payload: { case: "testClockAdvanced", value: { advancedMs: BigInt(i), now: timestampFromDate(recordedAt) } },
        }),
      );
      const actual = feedEventBytes(row);
      expect(Buffer.from(actual).toString("hex"), `case ${i}`).toBe(Buffer.from(expected).toString("hex"));
      expect(fromBinary(EventSchema, actual).accountSequence).toBe(sequence);
    }
  });
});
