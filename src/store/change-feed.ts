import pg from "pg";
import type { ChangeFeed, WrittenAccount } from "../app/ports.js";

/** The channel every ledger write notifies, with the changed accounts' ids separated by spaces. */
export const CHANGES_CHANNEL = "credit_account_changes";

/** Account ids never contain a space (rpc/decode.ts), so a space separates them in a payload. */
export function changePayloads(accountIds: Iterable<string>, maxBytes = 7000): string[] {
  const out: string[] = [];
  let current = "";
  for (const id of accountIds) {
    if (current.length > 0 && current.length + 1 + id.length > maxBytes) {
      out.push(current);
      current = "";
    }
    current = current.length === 0 ? id : `${current} ${id}`;
  }
  if (current.length > 0) out.push(current);
  return out;
}

export interface ChangeFeedOptions {
  /** Opens the listening connection (not from the pool: it stays checked out for LISTEN). */
  readonly connect: () => pg.Client;
  /** Wait before listening again after the connection is lost. */
  readonly retryMs: number;
  /** How often the listening connection is checked. */
  readonly checkMs: number;
  /** A check not answered within this long loses the connection. */
  readonly checkTimeoutMs: number;
  readonly onState?: (live: boolean, err?: unknown) => void;
  /**
   * Whether a notifying backend is one of this process's own ledger connections: their writes
   * were published directly, with their books, and their notifications are not told again.
   */
  readonly isOwnBackend?: (pid: number) => boolean;
}

/**
 * The change feed of the Postgres ledger: this process's writes are published directly (before
 * their callers are answered); every process's writes arrive as NOTIFY on CHANGES_CHANNEL, which
 * Postgres delivers only once their transaction has committed. A dedicated connection LISTENs; if
 * it fails, or does not answer a check in time, the feed is not live (and says anything may have
 * changed) until a new connection LISTENs again.
 */
export class PostgresChangeFeed implements ChangeFeed {
  private current: pg.Client | null = null;
  private listeners: ((accountIds: readonly string[] | null, written: readonly WrittenAccount[]) => void)[] = [];
  private told = 0;
  private stopped = false;
  private retry: NodeJS.Timeout | null = null;
  private check: NodeJS.Timeout | null = null;
  private readonly lost = new WeakSet<pg.Client>();

  constructor(private readonly options: ChangeFeedOptions) {}

  get live(): boolean {
    return this.current !== null;
  }

  get sequence(): number {
    return this.told;
  }

  subscribe(listener: (accountIds: readonly string[] | null, written: readonly WrittenAccount[]) => void): void {
    this.listeners.push(listener);
  }

  /** This process's own writes (`written`: the books it committed, if it did). */
  publish(accountIds: readonly string[], written: readonly WrittenAccount[] = []): void {
    if (accountIds.length > 0) this.emit(accountIds, written);
  }

  /** Starts listening (and keeps trying in the background if the database is not there yet). */
  start(): Promise<void> {
    return this.open();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retry) clearTimeout(this.retry);
    if (this.check) clearInterval(this.check);
    const client = this.current;
    this.current = null;
    await client?.end().catch(() => undefined);
  }

  private emit(accountIds: readonly string[] | null, written: readonly WrittenAccount[] = []): void {
    this.told += 1;
    for (const listener of this.listeners) listener(accountIds, written);
  }

  private async open(): Promise<void> {
    if (this.stopped) return;
    const client = this.options.connect();
    client.on("notification", (message) => {
      if (message.channel !== CHANGES_CHANNEL || client !== this.current || !message.payload) return;
      if (this.options.isOwnBackend?.(message.processId)) return;
      this.emit(message.payload.split(" "));
    });
    client.on("error", (err) => this.lose(client, err));
    client.on("end", () => this.lose(client, new Error("listening connection closed")));
    try {
      await client.connect();
      await client.query(`listen ${CHANGES_CHANNEL}`);
    } catch (err) {
      this.lose(client, err);
      return;
    }
    if (this.stopped) {
      await client.end().catch(() => undefined);
      return;
    }
    this.current = client;
    // Whatever was read before this LISTEN may have missed a change: start afresh.
    this.emit(null);
    this.options.onState?.(true);
    this.check = setInterval(() => void this.checkConnection(client), this.options.checkMs);
    this.check.unref();
  }

  private async checkConnection(client: pg.Client): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("listening connection did not answer in time")), this.options.checkTimeoutMs);
    });
    try {
      await Promise.race([client.query("select 1"), late]);
    } catch (err) {
      this.lose(client, err);
    } finally {
      clearTimeout(timer);
    }
  }

  private lose(client: pg.Client, err: unknown): void {
    if (this.lost.has(client)) return;
    this.lost.add(client);
    if (client === this.current) {
      this.current = null;
      if (this.check) clearInterval(this.check);
      this.check = null;
      this.emit(null);
      this.options.onState?.(false, err);
    }
    client.removeAllListeners("end");
    client.removeAllListeners("error");
    client.on("error", () => undefined);
    void client.end().catch(() => undefined);
    if (!this.stopped && this.retry === null) {
      this.retry = setTimeout(() => {
        this.retry = null;
        void this.open();
      }, this.options.retryMs);
      this.retry.unref();
    }
  }
}
