import { randomUUID } from "node:crypto";
import { create, type DescMessage, fromBinary, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { Client, credentials, type ServiceError } from "@grpc/grpc-js";
import {
  CommitRequestSchema,
  CommitResponseSchema,
  GetBalanceRequestSchema,
  GetBalanceResponseSchema,
  ReleaseRequestSchema,
  ReleaseResponseSchema,
  ReserveRequestSchema,
  ReserveResponseSchema,
} from "../src/gen/credit/v1/credit_service_pb.js";
import { ReleaseReason } from "../src/gen/credit/v1/types_pb.js";
import { HealthCheckRequestSchema, HealthCheckResponseSchema } from "../src/gen/health/v1/health_pb.js";

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
}

export interface LoadResult {
  readonly ops: number;
  readonly elapsedMs: number;
  readonly latenciesMs: Record<string, number[]>;
  readonly errors: Record<string, number>;
  readonly cpuMs: number;
}

function unary<I extends DescMessage, O extends DescMessage>(client: Client, path: string, input: I, output: O) {
  return (message: MessageShape<I>) =>
    new Promise<MessageShape<O>>((resolve, reject) =>
      client.makeUnaryRequest(
        path,
        (m: MessageShape<I>) => Buffer.from(toBinary(input, m)),
        (b: Buffer) => fromBinary(output, b),
        message,
        (err: ServiceError | null, res?: MessageShape<O>) => (err ? reject(err) : resolve(res!)),
      ),
    );
}

async function main(): Promise<void> {
  const job = JSON.parse(process.argv[2]!) as LoadJob;
  const client = new Client(job.target, credentials.createInsecure(), { "grpc.max_receive_message_length": 4 << 20 });
  const reserve = unary(client, "/credit.v1.CreditService/Reserve", ReserveRequestSchema, ReserveResponseSchema);
  const commit = unary(client, "/credit.v1.CreditService/Commit", CommitRequestSchema, CommitResponseSchema);
  const release = unary(client, "/credit.v1.CreditService/Release", ReleaseRequestSchema, ReleaseResponseSchema);
  const balance = unary(client, "/credit.v1.CreditService/GetBalance", GetBalanceRequestSchema, GetBalanceResponseSchema);
  const noop = unary(client, "/grpc.health.v1.Health/Check", HealthCheckRequestSchema, HealthCheckResponseSchema);

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

  let ops = 0;
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  const deadline = start + job.durationMs;
  const worker = async (w: number) => {
    let i = 0;
    while (performance.now() < deadline) {
      const began = performance.now();
      const accountId = `${job.accounts.prefix}${1 + ((w * 7919 + i * 104729) % job.accounts.count)}`;
      i += 1;
      if (job.workload === "noop") await timed("Noop", () => noop(create(HealthCheckRequestSchema, {})));
      else if (job.workload === "balance") await timed("GetBalance", () => balance(create(GetBalanceRequestSchema, { accountId })));
      else {
        const held = await timed("Reserve", () =>
          reserve(create(ReserveRequestSchema, { accountId, idempotencyKey: randomUUID(), cost: { case: "amount", value: 5n } })),
        );
        const reservationId = held?.reservation?.reservationId;
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
