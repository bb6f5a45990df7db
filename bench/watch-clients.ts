import { connect, constants, type ClientHttp2Session } from "node:http2";
import { parentPort, workerData } from "node:worker_threads";

/**
 * The watchers of bench/watch.ts, in a worker thread of their own so that their event loop never
 * delays the writers'. They speak gRPC over node:http2 directly and read of each message only its
 * sequence (field 1, the first on the wire): the measuring side spends as little as it can of the
 * two cores it shares with the server and Postgres, which is what a dashboard's browsers on other
 * machines would cost the server's machine. Every message a watcher receives is recorded as
 * (sequence, time); the main thread matches them to the writes' answers.
 */

export interface WatchClientsInput {
  readonly authority: string;
  /** One request (length-prefixed gRPC message) per account. */
  readonly requests: readonly Uint8Array[];
  readonly streams: number;
  readonly perConnection: number;
}

/** From the worker. Times are absolute (performance.timeOrigin + now), comparable across threads. */
export type WatchClientsMessage =
  | { readonly type: "open"; readonly ms: number }
  | { readonly type: "ended"; readonly watcher: number; readonly why: string }
  /** Per watcher: sequences and receive times, in order. */
  | { readonly type: "records"; readonly sequences: Float64Array[]; readonly times: Float64Array[] };

/** To the worker: reply with the records once every watcher of account i has seen `targets[i]`, or after `timeoutMs`. */
export interface WatchClientsDump {
  readonly type: "dump";
  readonly targets: number[];
  readonly timeoutMs: number;
}

const now = () => performance.timeOrigin + performance.now();

/** The sequence of a WatchBalanceResponse: field 1, varint, first on the wire (absent when 0). */
function sequenceOf(message: Buffer): number {
  if (message.length === 0 || message[0] !== 0x08) return 0;
  let value = 0;
  let scale = 1;
  for (let i = 1; i < message.length; i++) {
    const byte = message[i]!;
    value += (byte & 0x7f) * scale;
    if ((byte & 0x80) === 0) break;
    scale *= 128;
  }
  return value;
}

class Recorder {
  sequences: number[] = [];
  times: number[] = [];
  seen = -1;
}

function run(input: WatchClientsInput): void {
  const port = parentPort!;
  const accounts = input.requests.length;
  const recorders = Array.from({ length: input.streams }, () => new Recorder());
  const sessions: ClientHttp2Session[] = [];
  let firsts = 0;
  const started = now();
  for (let i = 0; i < input.streams; i++) {
    if (i % input.perConnection === 0) sessions.push(connect(input.authority));
    const recorder = recorders[i]!;
    const stream = sessions.at(-1)!.request({
      [constants.HTTP2_HEADER_METHOD]: "POST",
      [constants.HTTP2_HEADER_PATH]: "/credit.v1.CreditService/WatchBalance",
      [constants.HTTP2_HEADER_CONTENT_TYPE]: "application/grpc",
      [constants.HTTP2_HEADER_TE]: "trailers",
    });
    stream.end(input.requests[i % accounts]!);
    let pending: Buffer = Buffer.alloc(0);
    stream.on("data", (chunk: Buffer) => {
      const at = now();
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      while (pending.length >= 5) {
        const length = pending.readUInt32BE(1);
        if (pending.length < 5 + length) break;
        const sequence = sequenceOf(pending.subarray(5, 5 + length));
        pending = pending.subarray(5 + length);
        if (recorder.seen < 0) {
          firsts += 1;
          if (firsts === input.streams) port.postMessage({ type: "open", ms: now() - started } satisfies WatchClientsMessage);
        }
        recorder.seen = sequence;
        recorder.sequences.push(sequence);
        recorder.times.push(at);
      }
    });
    stream.on("trailers", (trailers) => port.postMessage({ type: "ended", watcher: i, why: `grpc-status ${String(trailers["grpc-status"])} ${String(trailers["grpc-message"] ?? "")}` } satisfies WatchClientsMessage));
    stream.on("error", (err: Error) => port.postMessage({ type: "ended", watcher: i, why: err.message } satisfies WatchClientsMessage));
  }

  port.on("message", (message: WatchClientsDump | { type: "close" }) => {
    if (message.type === "close") {
      for (const s of sessions) s.destroy();
      port.close();
      return;
    }
    const deadline = now() + message.timeoutMs;
    const check = () => {
      const behind = recorders.some((r, i) => r.seen < message.targets[i % accounts]!);
      if (behind && now() < deadline) {
        setTimeout(check, 10); // polls the condition: the records are complete once every watcher has its account's last write
        return;
      }
      const sequences = recorders.map((r) => Float64Array.from(r.sequences));
      const times = recorders.map((r) => Float64Array.from(r.times));
      for (const r of recorders) {
        r.sequences = [];
        r.times = [];
      }
      port.postMessage({ type: "records", sequences, times } satisfies WatchClientsMessage);
    };
    check();
  });
}

run(workerData as WatchClientsInput);
