import { randomUUID } from "node:crypto";
import { toBinary } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import {
  Code,
  CommitResponseSchema,
  ConnectError,
  ErrorInfoSchema,
  type CreditClients,
  createCreditClients,
  ReleaseReason,
  ReleaseResponseSchema,
  ReserveResponseSchema,
} from "../../../src/client/index.js";
import { sleep } from "./stack.js";

/** Codes that are an answer (the call ran and said no); anything else is retried with the same key. */
const ANSWERS = new Set([Code.InvalidArgument, Code.NotFound, Code.FailedPrecondition, Code.AlreadyExists, Code.PermissionDenied, Code.Unauthenticated, Code.OutOfRange]);

/** Clients without SDK retries: the load generator runs its own loop so it can count attempts. */
export function rawClients(url: string, timeoutMs = 10_000): CreditClients {
  return createCreditClients({ baseUrl: url, caller: "reliability", retry: { maxAttempts: 1 }, defaultTimeoutMs: timeoutMs });
}

export interface AttemptLog {
  /** Failed attempts by code name, with the time they happened (performance.now()). */
  readonly failures: { code: string; at: number; message: string }[];
  /** Every call's latency (first attempt to final answer), with its start time. */
  readonly latencies: { at: number; ms: number; ok: boolean }[];
}

export function newAttemptLog(): AttemptLog {
  return { failures: [], latencies: [] };
}

/**
 * Calls until an answer arrives (success or a business refusal), reusing the same request (and so
 * the same idempotency key) on every attempt. Gives up after `giveUpMs`.
 */
export async function untilAnswered<T>(log: AttemptLog, call: () => Promise<T>, giveUpMs = 90_000): Promise<{ ok: true; value: T } | { ok: false; error: ConnectError }> {
  const t0 = performance.now();
  let backoff = 20;
  for (;;) {
    const at = performance.now();
    try {
      const value = await call();
      log.latencies.push({ at: t0, ms: performance.now() - t0, ok: true });
      return { ok: true, value };
    } catch (err) {
      const e = ConnectError.from(err);
      if (ANSWERS.has(e.code)) {
        log.latencies.push({ at: t0, ms: performance.now() - t0, ok: false });
        return { ok: false, error: e };
      }
      log.failures.push({ code: Code[e.code], at, message: e.rawMessage });
      if (performance.now() - t0 > giveUpMs) throw new Error(`no answer after ${giveUpMs} ms: ${e.message}`, { cause: err });
      await sleep(Math.random() * backoff);
      backoff = Math.min(backoff * 2, 500);
    }
  }
}

export type Ack =
  | { kind: "reserve"; accountId: string; reservationId: string; amount: bigint; key: string; abandoned: boolean }
  | { kind: "commit"; accountId: string; reservationId: string; amount: bigint; key: string }
  | { kind: "release"; accountId: string; reservationId: string; key: string };

/** An acknowledged call with its exact request and response bytes, for replays. */
export interface Replayable {
  readonly method: "reserve" | "commit" | "release";
  readonly request: Record<string, unknown>;
  readonly response: Uint8Array;
}

export interface LoadResult {
  readonly acks: Ack[];
  readonly replayables: Replayable[];
  readonly refusals: { code: string; reason: string; message: string }[];
  readonly log: AttemptLog;
  cycles: number;
}

export interface LoadOptions {
  readonly clients: () => CreditClients;
  readonly accounts: readonly string[];
  readonly workers: number;
  /** Share of holds left to expire (TTL = the server default). */
  readonly abandonShare: number;
  /** TTL of holds that will be settled. */
  readonly settleTtlMs: number;
  readonly stop: () => boolean;
}

/** Closed-loop Reserve → Commit | Release | abandon, each call retried with its own key until answered. */
export async function runHoldLoad(options: LoadOptions): Promise<LoadResult> {
  const result: LoadResult = { acks: [], replayables: [], refusals: [], log: newAttemptLog(), cycles: 0 };
  const worker = async () => {
    while (!options.stop()) {
      const accountId = options.accounts[Math.floor(Math.random() * options.accounts.length)]!;
      const amount = BigInt(1 + Math.floor(Math.random() * 100));
      const abandoned = Math.random() < options.abandonShare;
      const reserveKey = `rsv-${randomUUID()}`;
      const reserveReq = {
        accountId,
        idempotencyKey: reserveKey,
        cost: { case: "amount" as const, value: amount },
        metadata: { job_id: reserveKey },
        ...(abandoned ? {} : { ttl: durationFromMs(options.settleTtlMs) }),
      };
      const reserved = await untilAnswered(result.log, () => options.clients().credit.reserve(reserveReq));
      if (!reserved.ok) {
        result.refusals.push({ code: Code[reserved.error.code], reason: reasonOf(reserved.error), message: reserved.error.rawMessage });
        continue;
      }
      const reservationId = reserved.value.reservation!.reservationId;
      result.acks.push({ kind: "reserve", accountId, reservationId, amount, key: reserveKey, abandoned });
      result.replayables.push({ method: "reserve", request: reserveReq, response: toBinary(ReserveResponseSchema, reserved.value) });
      if (abandoned) {
        result.cycles += 1;
        continue;
      }
      if (Math.random() < 0.7) {
        const actual = BigInt(Math.floor(Math.random() * Number(amount + 1n)));
        const key = `cmt-${randomUUID()}`;
        const req = { reservationId, idempotencyKey: key, actual: { case: "amount" as const, value: actual } };
        const done = await untilAnswered(result.log, () => options.clients().credit.commit(req));
        if (done.ok) {
          result.acks.push({ kind: "commit", accountId, reservationId, amount: actual, key });
          result.replayables.push({ method: "commit", request: req, response: toBinary(CommitResponseSchema, done.value) });
        } else result.refusals.push({ code: Code[done.error.code], reason: reasonOf(done.error), message: done.error.rawMessage });
      } else {
        const key = `rel-${randomUUID()}`;
        const req = { reservationId, idempotencyKey: key, reason: ReleaseReason.GENERATION_FAILED, detail: "reliability" };
        const done = await untilAnswered(result.log, () => options.clients().credit.release(req));
        if (done.ok) {
          result.acks.push({ kind: "release", accountId, reservationId, key });
          result.replayables.push({ method: "release", request: req, response: toBinary(ReleaseResponseSchema, done.value) });
        } else result.refusals.push({ code: Code[done.error.code], reason: reasonOf(done.error), message: done.error.rawMessage });
      }
      result.cycles += 1;
    }
  };
  await Promise.all(Array.from({ length: options.workers }, worker));
  return result;
}

export function reasonOf(err: ConnectError): string {
  return err.findDetails(ErrorInfoSchema)[0]?.reason ?? "";
}

/** Funds accounts with one ADJUSTMENT bucket each (no expiry), so every hold draws from one bucket. */
export async function fundAccounts(clients: CreditClients, prefix: string, count: number, amount: bigint): Promise<string[]> {
  const ids = Array.from({ length: count }, () => `${prefix}-${randomUUID()}`);
  for (const accountId of ids) {
    await clients.admin.adjustCredits({ accountId, amount, reason: "reliability funding", idempotencyKey: `fund-${accountId}` });
  }
  return ids;
}
