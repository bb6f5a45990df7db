import { randomUUID } from "node:crypto";
import { create, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { Client, credentials, type ServiceError } from "@grpc/grpc-js";
import {
  CommitRequestSchema,
  GetBalanceRequestSchema,
  ReleaseRequestSchema,
  ReserveRequestSchema,
  ReserveResponseSchema,
} from "../src/gen/credit/v1/credit_service_pb.js";
import { ReleaseReason, ReservationSchema } from "../src/gen/credit/v1/types_pb.js";
import { HealthCheckRequestSchema } from "../src/gen/grpc/health/v1/health_pb.js";
import { encodeMessage } from "../src/rpc/binary-encoder.js";

/**
 * The load generator: its own process, a @grpc/grpc-js client (far cheaper per call than the
 * connect client), closed-loop workers. Reads a JSON job from argv[2], prints a JSON result.
 */
export interface LoadJob {
  readonly target: string;
  readonly workload: "cycle" | "balance" | "noop";
  /** Accounts `${prefix}1` … `${prefix}${count}` (ids are generated, not passed: argv has a size limit). */
  readonly accounts: { readonly prefix: string; readonly count: number };
  readonly concurrency: number;
  readonly durationMs: number;
  /** Per-worker calls per second; 0 = as fast as possible (closed loop). */
  readonly ratePerWorker: number;
  /** The cycle's Reserve carries this member_id (absent: none, ""), so that the member's spend limits apply. */
  readonly memberId?: string;
}

export interface LoadResult {
  readonly ops: number;
  readonly elapsedMs: number;
  readonly latenciesMs: Record<string, number[]>;
  readonly errors: Record<string, number>;
  readonly cpuMs: number;
}

/**
 * Reserve's reservation id, read straight off the wire (ReserveResponse.reservation.reservation_id):
 * the load generator needs nothing else of the response, and decoding all of it (a reservation
 * and a balance) would cost it more CPU than the call itself.
 */
function reservationIdOf(bytes: Buffer): string | null {
  const outer = new BinaryReader(bytes);
  while (outer.pos < outer.len) {
    const [field, wire] = outer.tag();
    if (field !== ReserveResponseSchema.field.reservation.number) {
      outer.skip(wire);
      continue;
    }
    const inner = new BinaryReader(outer.bytes());
    while (inner.pos < inner.len) {
      const [f, w] = inner.tag();
      if (f === ReservationSchema.field.reservationId.number) return inner.string();
      inner.skip(w);
    }
  }
  return null;
}

/** A unary call whose response is not looked at: its bytes are left undecoded, as a load generator need not pay for them. */
function unaryUnread<I extends DescMessage>(client: Client, path: string, input: I) {
  return call(client, path, input, (b: Buffer) => b);
}

function call<I extends DescMessage, R>(client: Client, path: string, input: I, deserialize: (b: Buffer) => R) {
  return (message: MessageShape<I>) =>
    new Promise<R>((resolve, reject) =>
      client.makeUnaryRequest(
        path,
        (m: MessageShape<I>) => encodeMessage(input, m),
        deserialize,
        message,
        (err: ServiceError | null, res?: R) => (err ? reject(err) : resolve(res!)),
      ),
    );
}

async function main(): Promise<void> {
  const job = JSON.parse(process.argv[2]!) as LoadJob;
  const client = new Client(job.target, credentials.createInsecure(), {
    "grpc.max_receive_message_length": 4 << 20,
    // Neither channelz nor retries are used: without them grpc-js skips their per-call bookkeeping.
    "grpc.enable_channelz": 0,
    "grpc.enable_retries": 0,
  });
  const reserve = call(client, "/credit.v1.CreditService/Reserve", ReserveRequestSchema, reservationIdOf);
  // Only Reserve's answer is read (its reservation id); every call's status is checked.
  const commit = unaryUnread(client, "/credit.v1.CreditService/Commit", CommitRequestSchema);
  const release = unaryUnread(client, "/credit.v1.CreditService/Release", ReleaseRequestSchema);
  const balance = unaryUnread(client, "/credit.v1.CreditService/GetBalance", GetBalanceRequestSchema);
  const noop = unaryUnread(client, "/grpc.health.v1.Health/Check", HealthCheckRequestSchema);

  const latencies: Record<string, number[]> = {};
  const errors: Record<string, number> = {};
  const timed = async <T>(name: string, call: () => Promise<T>): Promise<T | null> => {
    const t0 = performance.now();
    try {
      const out = await call();
      (latencies[name] ??= []).push(performance.now() - t0);
      return out;
    } catch (err) {
      const code = `${name}:${(err as ServiceError).code ?? "?"}`;
      errors[code] = (errors[code] ?? 0) + 1;
      return null;
    }
  };

  const memberId = job.memberId ?? "";
  let ops = 0;
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  const deadline = start + job.durationMs;
  const worker = async (w: number) => {
    let i = 0;
    // Paced workers start spread over one period, so their calls arrive evenly rather than all at
    // once each period (which would be bursts at the full rate, not the rate asked for).
    if (job.ratePerWorker > 0) await new Promise((r) => setTimeout(r, (w / job.concurrency) * (1000 / job.ratePerWorker)));
    while (performance.now() < deadline) {
      const began = performance.now();
      const accountId = `${job.accounts.prefix}${1 + ((w * 7919 + i * 104729) % job.accounts.count)}`;
      i += 1;
      if (job.workload === "noop") await timed("Noop", () => noop(create(HealthCheckRequestSchema, {})));
      else if (job.workload === "balance") await timed("GetBalance", () => balance(create(GetBalanceRequestSchema, { accountId })));
      else {
        const held = await timed("Reserve", () =>
          reserve(create(ReserveRequestSchema, { accountId, idempotencyKey: randomUUID(), memberId, cost: { case: "amount", value: 5n } })),
        );
        const reservationId = held;
        if (reservationId) {
          if (i % 10 === 0) {
            await timed("Release", () =>
              release(create(ReleaseRequestSchema, { reservationId, idempotencyKey: randomUUID(), reason: ReleaseReason.CANCELLED })),
            );
          } else {
            await timed("Commit", () => commit(create(CommitRequestSchema, { reservationId, idempotencyKey: randomUUID(), actual: { case: "amount", value: 4n } })));
          }
        }
      }
      ops += 1;
      if (job.ratePerWorker > 0) {
        const wait = 1000 / job.ratePerWorker - (performance.now() - began);
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      }
    }
  };
  await Promise.all(Array.from({ length: job.concurrency }, (_, w) => worker(w)));
  const elapsedMs = performance.now() - start;
  const used = process.cpuUsage(cpu0);
  client.close();
  const result: LoadResult = { ops, elapsedMs, latenciesMs: latencies, errors, cpuMs: (used.user + used.system) / 1000 };
  process.stdout.write(JSON.stringify(result));
}

void main();
