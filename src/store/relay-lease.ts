import pg from "pg";
import type { EventCursor } from "../app/ports.js";
import type { RelayLease, RelayLeases } from "../app/event-relay.js";

/**
 * The class of the relay's advisory locks (the two-key form: its key space is apart from the
 * one-key locks, such as the sequencer's); the second key is the stream's name, hashed, so
 * relays to different streams do not exclude each other.
 */
export const RELAY_LOCK_CLASS = 735_190;

export interface RelayLeaseOptions {
  readonly url: string;
  /** The stream the relay publishes to: its lock and its cursor row. */
  readonly stream: string;
  /** How often the holder checks its lock connection. */
  readonly checkMs: number;
  /** A check not answered within this long loses the lease. */
  readonly checkTimeoutMs: number;
  readonly onLost?: (err: unknown) => void;
}

/**
 * Postgres' server-side keepalive on the lock connection, in seconds: a holder whose machine
 * vanished (no FIN, no RST) is found dead after about idle + interval × count = 5 s, and its
 * session, and so its lock, end then. A holder whose process died (kill -9) is found at once:
 * its kernel closes the socket and the backend sees end of file.
 */
const SERVER_KEEPALIVE = { idle: 2, interval: 1, count: 3 };

const LOAD_CURSOR = `select position, idx from event_relay_cursors where stream = $1`;
const SAVE_CURSOR = `
  insert into event_relay_cursors (stream, position, idx, published, duplicates, updated_at) values ($1, $2, $3, $4, $5, now())
  on conflict (stream) do update set position = excluded.position, idx = excluded.idx,
    published = event_relay_cursors.published + excluded.published,
    duplicates = event_relay_cursors.duplicates + excluded.duplicates, updated_at = now()`;
const BATCH_OF = `select position, event_count from event_batches where batch_id = $1`;

/**
 * The relay's lease: a session advisory lock held on a connection of its own. Postgres frees a
 * session lock when the session ends, so the lease ends with the process or its connection, with
 * no expiry to tune and no clock to trust. The cursor is written on that same connection: a
 * relay that lost its lock cannot store a cursor after the next holder's.
 */
export class PostgresRelayLeases implements RelayLeases {
  private client: pg.Client | null = null;

  constructor(private readonly options: RelayLeaseOptions) {}

  async tryAcquire(): Promise<RelayLease | null> {
    const client = this.client ?? (await this.connect());
    try {
      const { rows } = await client.query<{ got: boolean }>(`select pg_try_advisory_lock($1, hashtext($2)) as got`, [RELAY_LOCK_CLASS, this.options.stream]);
      if (rows[0]?.got !== true) return null;
    } catch (err) {
      this.drop(client);
      throw err;
    }
    // The connection now belongs to the lease; the next attempt (after it is lost) opens another.
    this.client = null;
    return new PostgresRelayLease(client, this.options);
  }

  /** Closes the connection kept for attempts (a held lease is released by its holder). */
  async close(): Promise<void> {
    const client = this.client;
    this.client = null;
    await client?.end().catch(() => undefined);
  }

  private async connect(): Promise<pg.Client> {
    const client = new pg.Client({
      connectionString: this.options.url,
      connectionTimeoutMillis: 3000,
      // The client side of the connection is watched too: a silent network must not look alive.
      keepAlive: true,
      keepAliveInitialDelayMillis: 1000,
      // The process id tells an operator (and the reliability suite) which server holds the lock.
      application_name: `credit-service-relay:${process.pid}`,
    });
    client.on("error", () => this.drop(client));
    client.on("end", () => this.drop(client));
    await client.connect();
    await client.query(`select set_config('tcp_keepalives_idle', $1, false), set_config('tcp_keepalives_interval', $2, false), set_config('tcp_keepalives_count', $3, false)`, [
      String(SERVER_KEEPALIVE.idle),
      String(SERVER_KEEPALIVE.interval),
      String(SERVER_KEEPALIVE.count),
    ]);
    this.client = client;
    return client;
  }

  private drop(client: pg.Client): void {
    if (this.client === client) this.client = null;
    void client.end().catch(() => undefined);
  }
}

class PostgresRelayLease implements RelayLease {
  private readonly controller = new AbortController();
  private readonly check: NodeJS.Timeout;
  private closed = false;

  constructor(
    private readonly client: pg.Client,
    private readonly options: RelayLeaseOptions,
  ) {
    client.removeAllListeners("error");
    client.removeAllListeners("end");
    client.on("error", (err) => this.lose(err));
    client.on("end", () => this.lose(new Error("the relay's lock connection closed")));
    this.check = setInterval(() => void this.checkConnection(), options.checkMs);
    this.check.unref();
  }

  get lost(): AbortSignal {
    return this.controller.signal;
  }

  async loadCursor(): Promise<EventCursor | null> {
    const { rows } = await this.client.query<{ position: string; idx: number | null }>(LOAD_CURSOR, [this.options.stream]);
    const row = rows[0];
    return row ? { position: BigInt(row.position), idx: row.idx } : null;
  }

  async saveCursor(cursor: EventCursor, counts: { stored: number; duplicates: number }): Promise<void> {
    this.lost.throwIfAborted();
    await this.client.query(SAVE_CURSOR, [this.options.stream, cursor.position.toString(), cursor.idx, counts.stored, counts.duplicates]);
  }

  async cursorOfEvent(eventId: string): Promise<EventCursor | null> {
    const m = /^(\d{1,19})-(\d{1,9})$/.exec(eventId);
    if (!m) return null;
    const idx = Number(m[2]);
    const { rows } = await this.client.query<{ position: string | null; event_count: number }>(BATCH_OF, [m[1]]);
    const row = rows[0];
    if (!row || row.position === null || idx >= row.event_count) return null;
    return { position: BigInt(row.position), idx: idx === row.event_count - 1 ? null : idx };
  }

  /** Lets go at once (unlocked before the session ends), so the next holder need not wait for the session's end. */
  async release(): Promise<void> {
    if (this.lost.aborted) return;
    this.controller.abort(new Error("released"));
    await this.client.query(`select pg_advisory_unlock($1, hashtext($2))`, [RELAY_LOCK_CLASS, this.options.stream]).catch(() => undefined);
    this.lose(new Error("released"));
  }

  private async checkConnection(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("the relay's lock connection did not answer in time")), this.options.checkTimeoutMs);
    });
    try {
      await Promise.race([this.client.query("select 1"), late]);
    } catch (err) {
      this.lose(err);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Stops at once: the signal aborts before anything else, then the session (and its lock) ends. */
  private lose(err: unknown): void {
    if (this.closed) return;
    this.closed = true;
    if (!this.controller.signal.aborted) this.controller.abort(err);
    clearInterval(this.check);
    this.client.removeAllListeners("end");
    this.client.removeAllListeners("error");
    this.client.on("error", () => undefined);
    void this.client.end().catch(() => undefined);
    if (!(err instanceof Error && err.message === "released")) this.options.onLost?.(err);
  }
}

const LAG = `
  select greatest(coalesce((select max(position) from event_batches), 0), s.pruned_through)
         - coalesce((select position from event_relay_cursors where stream = $1), s.pruned_through) as lag
    from event_feed_state s where s.id = 1`;

/**
 * How far the relay of `stream` is behind the feed, in feed positions (write transactions): read
 * from the database, so every server reports it, and it grows while no relay publishes.
 */
export async function relayLag(pool: pg.Pool, stream: string): Promise<number> {
  const { rows } = await pool.query<{ lag: string }>(LAG, [stream]);
  return Number(rows[0]?.lag ?? 0);
}
