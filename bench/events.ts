import { mkdirSync, writeFileSync } from "node:fs";
import pg from "pg";
import { create } from "@bufbuild/protobuf";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { Client, credentials, type ServiceError } from "@grpc/grpc-js";
import { ListEventsRequestSchema, StreamEventsRequestSchema } from "../src/gen/credit/v1/event_service_pb.js";
import { encodeMessage } from "../src/rpc/binary-encoder.js";
import type { Reservation } from "../src/domain/reservation.js";
import { encodeEvent } from "../src/rpc/event-encoding.js";
import { PostgresCpuMeter, processCpuMs } from "./proc.js";
import { buildAndMigrate, recreateDatabase, startRedis, startServer } from "./setup.js";
import { arg } from "./args.js";

/**
 * npm run bench:events [-- --events 1000000] [-- --rounds 3]
 *
 * StreamEvents and ListEvents catching up from a backlog: the feed is filled by SQL with
 * `--events` real HOLD_CREATED events (10 per batch, as group commit writes them, every batch
 * already numbered), then, in rounds, one client streams the whole feed from the start (and one
 * pages through it with ListEvents at 1,000 a page): events per second, and the CPU the server
 * and Postgres spent per 1,000 events. The client is @grpc/grpc-js reading only what it needs
 * off the wire (as bench/load.ts does): decoding every event with protobuf-es costs a Node
 * consumer about 45 µs an event, more than the server spends sending it, and would measure the
 * client. A consumer's own decoding is its own cost (reported here as the client's CPU).
 */

const EVENTS = arg("events", 1_000_000);
const ROUNDS = arg("rounds", 3);
const PER_BATCH = 10;
const ACCOUNTS = 1000;
const BASE = process.env["BENCH_EVENTS_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/credit_bench_events";
const DB_NAME = new URL(BASE).pathname.slice(1);

function step(message: string): void {
  process.stderr.write(`bench:events: ${message}\n`);
}

/** The payload of a typical HOLD_CREATED: a spec-less hold with two metadata labels. */
function samplePayload(): Buffer {
  const now = new Date();
  const reservation: Reservation = {
    id: "6f1c1f3e-8b0a-4d0e-9a53-3f2c1b7d9e10",
    accountId: "bench-events-0001",
    status: "HELD",
    heldAmount: 120n,
    capturedAmount: 0n,
    releasedAmount: 0n,
    allocations: [],
    expiresAt: new Date(now.getTime() + 600_000),
    createdAt: now,
    settledAt: null,
    metadata: { model: "flux-pro", job_id: "job-981" },
    releaseReason: null,
    releaseDetail: "",
    pricing: null,
    memberId: "",
  };
  return Buffer.from(encodeEvent({ kind: "HOLD_CREATED", reservation }));
}

async function fill(url: string, events: number): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const batches = Math.ceil(events / PER_BATCH);
  await client.query("begin");
  await client.query(`insert into event_batches (batch_id, position, event_count, recorded_at) select g, g, $1, now() from generate_series(1, $2::bigint) g`, [PER_BATCH, batches]);
  await client.query(
    `insert into events (batch_id, idx, account_id, account_sequence, kind, occurred_at, payload)
     select b, i, 'bench-events-' || lpad((b % $2)::text, 4, '0'), (b / $2) * $3 + i + 1, 'HOLD_CREATED', now(), $4
       from generate_series(1, $1::bigint) b, generate_series(0, $3 - 1) i`,
    [batches, ACCOUNTS, PER_BATCH, samplePayload()],
  );
  await client.query(`select setval('event_batch_ids', $1)`, [batches]);
  await client.query("commit");
  await client.query("analyze event_batches, events");
  await client.end();
}

async function main(): Promise<void> {
  step("fresh database, build, migrations");
  await recreateDatabase(BASE);
  await buildAndMigrate(BASE);
  step(`filling the feed with ${EVENTS} events`);
  await fill(BASE, EVENTS);
  const redis = await startRedis();
  const { proc, port } = await startServer({ DATABASE_URL: BASE, REDIS_URL: redis.url, GRPC_PORT: "0", GRPC_HOST: "127.0.0.1", METRICS_PORT: "0", LOG_LEVEL: "warn" });
  const client = new Client(`127.0.0.1:${port}`, credentials.createInsecure(), { "grpc.max_receive_message_length": 8 << 20, "grpc.enable_channelz": 0 });
  const stream = (afterCursor: string, until: number) =>
    new Promise<number>((resolve, reject) => {
      let n = 0;
      const call = client.makeServerStreamRequest(
        "/credit.v1.CreditEventService/StreamEvents",
        (m: ReturnType<typeof create<typeof StreamEventsRequestSchema>>) => encodeMessage(StreamEventsRequestSchema, m),
        (b: Buffer) => b,
        create(StreamEventsRequestSchema, { afterCursor }),
      );
      call.on("data", () => {
        n += 1;
        if (n === until) {
          call.cancel();
          resolve(n);
        }
      });
      call.on("error", (err: ServiceError) => (err.code === 1 ? resolve(n) : reject(err)));
    });
  /** One ListEvents page: how many events, and next_cursor (read off the wire). */
  const list = (afterCursor: string) =>
    new Promise<{ count: number; next: string }>((resolve, reject) =>
      client.makeUnaryRequest(
        "/credit.v1.CreditEventService/ListEvents",
        (m: ReturnType<typeof create<typeof ListEventsRequestSchema>>) => encodeMessage(ListEventsRequestSchema, m),
        (b: Buffer) => {
          const r = new BinaryReader(b);
          let count = 0;
          let next = "";
          while (r.pos < r.len) {
            const [field, wire] = r.tag();
            if (field === 2) next = r.string();
            else {
              if (field === 1) count += 1;
              r.skip(wire);
            }
          }
          return { count, next };
        },
        create(ListEventsRequestSchema, { afterCursor, pageSize: 1000 }),
        (err, res) => (err ? reject(err) : resolve(res!)),
      ),
    );
  type PerKind = { stream: number; list: number };
  const rounds: { stream: number; list: number; serverCpuMsPer1000: PerKind; postgresCpuMsPer1000: PerKind; clientCpuMsPer1000: PerKind }[] = [];
  try {
    for (let round = 0; round < ROUNDS; round++) {
      step(`round ${round + 1}/${ROUNDS}: StreamEvents from the start`);
      let cpu0 = processCpuMs(proc.pid!);
      let meter = new PostgresCpuMeter([DB_NAME]);
      let t0 = performance.now();
      let own0 = process.cpuUsage();
      const n = await stream("", EVENTS);
      const streamMs = performance.now() - t0;
      const streamServer = processCpuMs(proc.pid!) - cpu0;
      const streamPostgres = meter.stop();
      const ownCpu = (u: NodeJS.CpuUsage) => (u.user + u.system) / 1000;
      const streamClient = ownCpu(process.cpuUsage(own0));

      step(`round ${round + 1}/${ROUNDS}: ListEvents from the start, 1,000 a page`);
      cpu0 = processCpuMs(proc.pid!);
      meter = new PostgresCpuMeter([DB_NAME]);
      t0 = performance.now();
      own0 = process.cpuUsage();
      let listed = 0;
      let cursor = "";
      for (;;) {
        const page = await list(cursor);
        listed += page.count;
        if (page.next === cursor) break;
        cursor = page.next;
      }
      const listMs = performance.now() - t0;
      const listServer = processCpuMs(proc.pid!) - cpu0;
      const listPostgres = meter.stop();
      const listClient = ownCpu(process.cpuUsage(own0));
      if (listed !== EVENTS) throw new Error(`ListEvents read ${listed} events, expected ${EVENTS}`);
      rounds.push({
        stream: (n / streamMs) * 1000,
        list: (listed / listMs) * 1000,
        serverCpuMsPer1000: { stream: (streamServer / n) * 1000, list: (listServer / listed) * 1000 },
        postgresCpuMsPer1000: { stream: (streamPostgres / n) * 1000, list: (listPostgres / listed) * 1000 },
        clientCpuMsPer1000: { stream: (streamClient / n) * 1000, list: (listClient / listed) * 1000 },
      });
      const r = rounds.at(-1)!;
      console.log(
        `round ${round + 1}: StreamEvents ${r.stream.toFixed(0)} events/s, ListEvents ${r.list.toFixed(0)} events/s; ` +
          `CPU ms per 1,000 events server ${r.serverCpuMsPer1000.stream.toFixed(1)} / ${r.serverCpuMsPer1000.list.toFixed(1)}, ` +
          `Postgres ${r.postgresCpuMsPer1000.stream.toFixed(1)} / ${r.postgresCpuMsPer1000.list.toFixed(1)}, ` +
          `this client ${r.clientCpuMsPer1000.stream.toFixed(1)} / ${r.clientCpuMsPer1000.list.toFixed(1)}`,
      );
    }
    mkdirSync("bench/results", { recursive: true });
    writeFileSync("bench/results/events.json", JSON.stringify({ events: EVENTS, perBatch: PER_BATCH, rounds }, null, 2));
  } finally {
    client.close();
    proc.kill("SIGTERM");
    redis.proc.kill("SIGTERM");
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
