import { randomUUID } from "node:crypto";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";

/** The NATS server with JetStream the tests publish to (the machine's, started by .ci/run when down). */
export const TEST_NATS_URL = process.env["TEST_NATS_URL"] ?? "nats://127.0.0.1:4222";

/** A stream name and subject prefix of a test's own, so tests never read each other's messages. */
export function newStream(): { stream: string; prefix: string } {
  const id = randomUUID().replaceAll("-", "").slice(0, 12);
  return { stream: `TEST_RELAY_${id}`, prefix: `test.relay.${id}` };
}

export interface StreamMessage {
  readonly seq: number;
  readonly subject: string;
  readonly msgId: string | undefined;
  readonly data: Uint8Array;
}

export async function natsConnection(url = TEST_NATS_URL): Promise<NatsConnection> {
  return connect({ servers: url, name: "credit-tests" });
}

/** Messages in the stream (0 when it does not exist yet). */
export async function streamCount(nc: NatsConnection, stream: string): Promise<number> {
  const jsm = await jetstreamManager(nc);
  try {
    return (await jsm.streams.info(stream)).state.messages;
  } catch {
    return 0;
  }
}

/** Every message of the stream, in stream order, read with an ordered consumer. */
export async function readStream(nc: NatsConnection, stream: string): Promise<StreamMessage[]> {
  const total = await streamCount(nc, stream);
  const out: StreamMessage[] = [];
  if (total === 0) return out;
  const consumer = await jetstream(nc).consumers.get(stream);
  while (out.length < total) {
    const batch = await consumer.fetch({ max_messages: Math.min(5000, total - out.length), expires: 2000 });
    let got = 0;
    for await (const m of batch) {
      out.push({ seq: m.seq, subject: m.subject, msgId: m.headers?.get("Nats-Msg-Id"), data: m.data });
      got += 1;
    }
    if (got === 0) throw new Error(`stream ${stream}: read ${out.length} of ${total} messages, then nothing more`);
  }
  return out;
}

/** Removes a test's stream (ignores one that is not there). */
export async function deleteStream(nc: NatsConnection, stream: string): Promise<void> {
  const jsm = await jetstreamManager(nc);
  await jsm.streams.delete(stream).catch(() => undefined);
}

/** Polls `check` until it returns a value, or throws after `ms` (no fixed sleep decides an outcome). */
export async function waitFor<T>(what: string, check: () => Promise<T | null | undefined | false>, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value !== null && value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
