import { Worker } from "node:worker_threads";
import type { WatchClientsDump, WatchClientsInput, WatchClientsMessage } from "./watch-clients.js";

type Records = Extract<WatchClientsMessage, { type: "records" }>;

/** A request body as gRPC frames it on the wire: no compression flag, a 4-byte length, the bytes. */
export function framed(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(5 + body.length);
  new DataView(out.buffer).setUint32(1, body.length);
  out.set(body, 5);
  return out;
}

/** The watchers of bench/watch-clients.ts in their worker thread, as bench:watch and bench:stream-floor drive them. */
export interface Watchers {
  /** Resolves with the ms it took every stream to receive its first message. */
  readonly opened: Promise<number>;
  /** Every watcher's records since the last dump, once each has seen its account's target (or after `timeoutMs`). */
  dump(targets: number[], timeoutMs: number): Promise<Records>;
  close(): void;
}

export function startWatchers(input: WatchClientsInput): Watchers {
  const worker = new Worker(new URL("./watch-clients.ts", import.meta.url), { workerData: input });
  let records: ((m: Records) => void) | null = null;
  const opened = new Promise<number>((resolve) =>
    worker.on("message", (m: WatchClientsMessage) => {
      if (m.type === "open") resolve(m.ms);
      else if (m.type === "ended") console.log(`watcher ${m.watcher} ended: ${m.why}`);
      else records?.(m);
    }),
  );
  worker.on("error", (err) => {
    console.error(err);
    process.exit(1);
  });
  return {
    opened,
    dump: (targets, timeoutMs) =>
      new Promise<Records>((resolve) => {
        records = resolve;
        worker.postMessage({ type: "dump", targets, timeoutMs } satisfies WatchClientsDump);
      }),
    close: () => worker.postMessage({ type: "close" }),
  };
}
