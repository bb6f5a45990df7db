import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { type sendUnaryData, Server, ServerCredentials, type ServerWritableStream, type ServiceDefinition } from "@grpc/grpc-js";
import { framed, startWatchers } from "./watchers.js";
import { peakRssMb, processCpuMs } from "./proc.js";
import { SERVER_ENV, SERVER_NODE_FLAGS } from "./setup.js";
import { arg } from "./args.js";

/**
 * npm run bench:stream-floor [-- --streams N] [--accounts N] [--rate N] [--seconds N] [--heap MB]
 *
 * What a server-streaming call costs in @grpc/grpc-js itself, with none of this service's code:
 * the floor under bench:watch's figures. A bare grpc-js server (this file with --serve, its own
 * process, the container's heap flags and `--heap` as bench:watch passes it) registers a stream
 * at WatchBalance's path that answers every request with one message and then, on a timer,
 * writes `--rate` messages a second: one ~120-byte message (a sequence and a filler, pre-encoded
 * as the service's are) to every stream of a random account, as a change of that account would.
 * The watchers are bench:watch's own (bench/watch-clients.ts: a worker thread, node:http2, 100
 * streams per connection, streams spread over the accounts). Reported: the server's CPU per message,
 * the watchers' CPU per message (this process), and the server's peak RSS with every stream open
 * and after the timed writes. Set against bench:watch, this says how much of its per-message cost
 * and of its memory is the library's and how much is ours.
 */


const STREAMS = arg("streams", 10_000);
const ACCOUNTS = arg("accounts", 1000);
/** bench:watch's writes: ~500–700 cycles/s, two changes each, ten watchers per account. */
const RATE = arg("rate", 12_000);
const SECONDS = arg("seconds", 20);
const HEAP = arg("heap", 256);
const PER_CONNECTION = 100;
const PATH = "/credit.v1.CreditService/WatchBalance";

/** A WatchBalanceResponse-shaped message: field 1 (sequence, varint), then a filler of the size of a balance. */
function message(sequence: number): Buffer {
  const varint: number[] = [];
  let v = sequence;
  while (v >= 0x80) {
    varint.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  varint.push(v);
  return Buffer.concat([Buffer.from([0x08, ...varint]), Buffer.from([0x12, 110]), Buffer.alloc(110, 0x41)]);
}

/** The account id of a WatchBalanceRequest (field 1, a short string). */
function accountOf(request: Buffer): string {
  return request[0] === 0x0a ? request.subarray(2, 2 + request[1]!).toString() : "";
}

function serve(): void {
  const watchers = new Map<string, ServerWritableStream<Buffer, Buffer>[]>();
  const sequences = new Map<string, number>();
  const definition: ServiceDefinition = {
    watch: {
      path: PATH,
      requestStream: false,
      responseStream: true,
      requestSerialize: (b: Buffer) => b,
      requestDeserialize: (b: Buffer) => b,
      responseSerialize: (b: Buffer) => b,
      responseDeserialize: (b: Buffer) => b,
    },
  };
  const server = new Server();
  server.addService(definition, {
    watch: (call: ServerWritableStream<Buffer, Buffer>) => {
      const account = accountOf(call.request);
      const list = watchers.get(account) ?? [];
      list.push(call);
      watchers.set(account, list);
      call.write(message(sequences.get(account) ?? 0));
    },
  } as Record<string, (call: ServerWritableStream<Buffer, Buffer>, callback?: sendUnaryData<Buffer>) => void>);
  server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (err, port) => {
    if (err) throw err;
    process.send!({ type: "listening", port });
  });
  const accounts = () => [...watchers.keys()];
  let timer: NodeJS.Timeout | undefined;
  process.on("message", (m: { type: "go"; rate: number } | { type: "stop" }) => {
    if (m.type === "stop") {
      clearInterval(timer);
      process.send!({ type: "stopped", sequences: Object.fromEntries(sequences) });
      return;
    }
    const ids = accounts();
    const started = performance.now();
    let sent = 0;
    // Catches up with the rate every millisecond: the timer's granularity decides nothing about the count.
    timer = setInterval(() => {
      const due = ((performance.now() - started) / 1000) * m.rate;
      while (sent < due) {
        const account = ids[Math.floor(Math.random() * ids.length)]!;
        const sequence = (sequences.get(account) ?? 0) + 1;
        sequences.set(account, sequence);
        const bytes = message(sequence);
        for (const call of watchers.get(account)!) call.write(bytes);
        sent += watchers.get(account)!.length;
      }
    }, 1);
  });
}

async function main(): Promise<void> {
  const server = spawn(process.execPath, [...SERVER_NODE_FLAGS, `--max-old-space-size=${HEAP}`, "--import", "tsx", fileURLToPath(import.meta.url), "--serve"], {
    env: { ...process.env, ...SERVER_ENV },
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  process.on("exit", () => server.kill("SIGKILL"));
  type FromServer = { type: "listening"; port: number } | { type: "stopped"; sequences: Record<string, number> };
  const next = <T extends FromServer["type"]>(type: T) =>
    new Promise<Extract<FromServer, { type: T }>>((resolve) => {
      const on = (m: FromServer) => {
        if (m.type !== type) return;
        server.off("message", on);
        resolve(m as Extract<FromServer, { type: T }>);
      };
      server.on("message", on);
    });
  const { port } = await next("listening");
  console.log(`bare grpc-js: server RSS before any stream ${peakRssMb(server.pid!).toFixed(0)} MB`);

  // WatchBalanceRequest { account_id = 1 }, written by hand: the bare server reads only that field.
  const requests = Array.from({ length: ACCOUNTS }, (_, i) => {
    const id = Buffer.from(`floor-${i + 1}`);
    return framed(Buffer.concat([Buffer.from([0x0a, id.length]), id]));
  });
  const { opened, dump, close } = startWatchers({ authority: `http://127.0.0.1:${port}`, requests, streams: STREAMS, perConnection: PER_CONNECTION });
  const openMs = await opened;
  await dump([], 0);
  console.log(`bare grpc-js: ${STREAMS} streams over ${ACCOUNTS} accounts open in ${(openMs / 1000).toFixed(1)} s; server peak RSS ${peakRssMb(server.pid!).toFixed(0)} MB`);

  const before = [processCpuMs(server.pid!), processCpuMs(process.pid)];
  const start = performance.now();
  server.send({ type: "go", rate: RATE });
  await new Promise((r) => setTimeout(r, SECONDS * 1000)); // the measured window: a duration, not an order
  server.send({ type: "stop" });
  const { sequences } = await next("stopped");
  const got = await dump(
    requests.map((_, i) => sequences[`floor-${i + 1}`] ?? 0),
    10_000,
  );
  const seconds = (performance.now() - start) / 1000;
  const cpu = [processCpuMs(server.pid!) - before[0]!, processCpuMs(process.pid) - before[1]!];
  const messages = got.sequences.reduce((n, s) => n + s.length, 0);
  const missing = got.sequences.filter((s, w) => (s.at(-1) ?? 0) < (sequences[`floor-${(w % ACCOUNTS) + 1}`] ?? 0)).length;
  console.log(
    `bare grpc-js: ${messages} messages in ${seconds.toFixed(1)} s (${(messages / seconds).toFixed(0)}/s); CPU µs per message: server ${((cpu[0]! * 1000) / messages).toFixed(1)}, watchers ${((cpu[1]! * 1000) / messages).toFixed(1)}; ${missing} watchers short of their account's last message`,
  );
  console.log(`bare grpc-js: server peak RSS ${peakRssMb(server.pid!).toFixed(0)} MB`);
  close();
  server.kill("SIGTERM");
  process.exit(0);
}

if (process.argv.includes("--serve")) serve();
else
  void main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
