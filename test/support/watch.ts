import { ConnectError } from "@connectrpc/connect";
import { expect } from "vitest";
import type { WatchBalanceResponse } from "../../src/client/index.js";
import { ErrorInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";

/** A message of a watch stream and when (Date.now()) it arrived. */
export interface Received<T> {
  readonly message: T;
  readonly receivedAtMs: number;
}

/**
 * Reads a stream in the background and keeps every message with its arrival time, so a test can
 * wait for a condition on what arrived (never for a fixed time) and check the whole sequence.
 */
export class StreamRecorder<T = WatchBalanceResponse> {
  readonly received: Received<T>[] = [];
  error: ConnectError | null = null;
  ended = false;
  private readonly waiters = new Set<() => void>();
  readonly done: Promise<void>;

  constructor(
    stream: AsyncIterable<T>,
    private readonly abort?: AbortController,
  ) {
    this.done = (async () => {
      try {
        for await (const message of stream) {
          this.received.push({ message, receivedAtMs: Date.now() });
          this.wakeAll();
        }
      } catch (err) {
        this.error = ConnectError.from(err);
      } finally {
        this.ended = true;
        this.wakeAll();
      }
    })();
  }

  get messages(): T[] {
    return this.received.map((r) => r.message);
  }

  /** The first message (from `from` on) that satisfies `test`; fails after `timeoutMs` or when the stream ends first. */
  async until(test: (message: T) => boolean, timeoutMs = 10_000, from = 0): Promise<Received<T>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.received.slice(from).find((r) => test(r.message));
      if (found) return found;
      if (this.ended) return expect.unreachable(`the stream ended (${this.error?.message ?? "OK"}) before the awaited message; got ${this.received.length}`);
      const left = deadline - Date.now();
      if (left <= 0) return expect.unreachable(`no awaited message within ${timeoutMs} ms; got ${this.received.length}`);
      await this.change(left);
    }
  }

  /** Waits for the stream to end (with an error or not), at most `timeoutMs`. */
  async end(timeoutMs = 10_000): Promise<ConnectError | null> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ended) {
      const left = deadline - Date.now();
      if (left <= 0) return expect.unreachable(`the stream did not end within ${timeoutMs} ms`);
      await this.change(left);
    }
    return this.error;
  }

  /** The ErrorInfo reason the stream ended with. */
  reason(): string | undefined {
    return this.error?.findDetails(ErrorInfoSchema)[0]?.reason;
  }

  cancel(): void {
    this.abort?.abort();
  }

  private change(timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.waiters.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, timeoutMs);
      this.waiters.add(wake);
    });
  }

  private wakeAll(): void {
    for (const wake of [...this.waiters]) wake();
  }
}
