import type { EventEmitter } from "node:events";
import { readFileSync } from "node:fs";
import type { ConnectionOptions } from "node:tls";
import { Cluster, Redis } from "ioredis";
import type { Config, RedisClusterNode } from "../config.js";

/** What the idempotency cache talks to: one Redis node, or a Redis Cluster. */
export type RedisConnection = Redis | Cluster;

/** No call waits longer than this on Redis; after it, the Postgres backstop decides. */
const COMMAND_TIMEOUT_MS = 500;
const CONNECT_TIMEOUT_MS = 2000;
/** Reconnect back-off while Redis (or the whole cluster) is away: 200 ms steps up to 2 s. */
const backoff = (attempt: number): number => Math.min(attempt * 200, 2000);

/** How the service proves itself to Redis and protects the connection (AUTH and TLS). */
export interface RedisSecurity {
  readonly username?: string;
  readonly password?: string;
  /** TLS options (e.g. the CA to trust); unset: plain TCP, unless the URL is `rediss://`. */
  readonly tls?: ConnectionOptions;
}

/** The AUTH and TLS settings of the config, for one node or every node of a cluster. */
export function redisSecurity(config: Pick<Config, "REDIS_USERNAME" | "REDIS_PASSWORD" | "REDIS_TLS" | "REDIS_TLS_CA_FILE">): RedisSecurity {
  const tls = config.REDIS_TLS_CA_FILE !== undefined ? { ca: readFileSync(config.REDIS_TLS_CA_FILE) } : config.REDIS_TLS ? {} : undefined;
  return {
    ...(config.REDIS_USERNAME !== undefined && { username: config.REDIS_USERNAME }),
    ...(config.REDIS_PASSWORD !== undefined && { password: config.REDIS_PASSWORD }),
    ...(tls !== undefined && { tls }),
  };
}

/**
 * A Redis client that fails fast instead of queueing while Redis is away, so a call never waits
 * on Redis: the Postgres backstop takes over, and the client keeps reconnecting in the background.
 * `redis://user:pass@host:port/db` and `rediss://` (TLS) URLs are understood by ioredis itself;
 * `security` adds what the URL does not say (the URL's own user and password win).
 */
export function createRedisClient(url: string, security: RedisSecurity = {}): Redis {
  return new Redis(url, {
    ...security,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: COMMAND_TIMEOUT_MS,
    connectTimeout: CONNECT_TIMEOUT_MS,
    enableAutoPipelining: true,
    retryStrategy: backoff,
  });
}

/**
 * The cluster counterpart of createRedisClient, with the same fail-fast behaviour: no offline
 * queue (a command while the cluster is not ready fails at once), every command bounded by the
 * 500 ms command timeout (it covers the MOVED / failover / CLUSTERDOWN retries too, because the
 * timer starts at the first send and is never reset), auto-pipelining per node, and the same
 * back-off to reconnect when no node answers. A node that goes away is not reconnected on its
 * own: the next command for its slots follows the cluster's MOVED answer (ioredis' default).
 * `security` (AUTH, TLS) applies to every node.
 */
export function createRedisClusterClient(nodes: readonly RedisClusterNode[], security: RedisSecurity = {}): Cluster {
  return new Cluster(
    nodes.map(({ host, port }) => ({ host, port })),
    {
      enableOfflineQueue: false,
      enableReadyCheck: true,
      enableAutoPipelining: true,
      clusterRetryStrategy: backoff,
      slotsRefreshTimeout: 1000,
      redisOptions: {
        ...security,
        maxRetriesPerRequest: 0,
        commandTimeout: COMMAND_TIMEOUT_MS,
        connectTimeout: CONNECT_TIMEOUT_MS,
      },
    },
  );
}

/** A Redis Cluster client when REDIS_CLUSTER_NODES is set, otherwise the single node at REDIS_URL. */
export function createRedisConnection(
  config: Pick<Config, "REDIS_URL" | "REDIS_CLUSTER_NODES" | "REDIS_USERNAME" | "REDIS_PASSWORD" | "REDIS_TLS" | "REDIS_TLS_CA_FILE">,
): RedisConnection {
  const nodes = config.REDIS_CLUSTER_NODES;
  const security = redisSecurity(config);
  return nodes !== undefined && nodes.length > 0 ? createRedisClusterClient(nodes, security) : createRedisClient(config.REDIS_URL, security);
}

/**
 * The connection to every node that serves slots in the client's slot map. A node named there
 * without a connection (it died: the client drops the connection of a node that goes away) fails
 * the lookup, and asks for a fresh slot map, which names the replica promoted in its place once
 * the cluster has failed over, and reconnects a node that came back.
 */
function slotOwners(cluster: Cluster): Redis[] {
  const connected = new Map(cluster.nodes("master").map((node) => [`${node.options.host}:${node.options.port}`, node]));
  const owners = new Set(cluster.slots.map((keys) => keys[0]).filter((key) => key !== undefined));
  if (owners.size === 0) throw new Error("no Redis Cluster slot map yet");
  return [...owners].map((owner) => {
    const node = connected.get(owner);
    if (node !== undefined) return node;
    cluster.refreshSlotsCache();
    throw new Error(`no connection to Redis Cluster node ${owner}, which serves slots`);
  });
}

/**
 * Resolves once Redis answers a PING — on a cluster, every node serving slots, so a cluster
 * with one node hung or gone does not count as back — within `timeoutMs`; rejects otherwise.
 */
export async function probeRedis(redis: RedisConnection, timeoutMs: number): Promise<void> {
  const nodes = redis instanceof Cluster ? slotOwners(redis) : [redis];
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Redis did not answer PING within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    await Promise.race([Promise.all(nodes.map((node) => node.ping())), late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Waits until the client is ready or `timeoutMs` passes; the service starts either way. A cluster
 * is ready once it has the slot map and CLUSTER INFO reports cluster_state:ok.
 */
export function waitReady(redis: RedisConnection, timeoutMs: number): Promise<boolean> {
  if (redis.status === "ready") return Promise.resolve(true);
  // Both clients are EventEmitters that emit "ready"; one signature serves both.
  const emitter: EventEmitter = redis;
  return new Promise((resolve) => {
    const done = (ready: boolean) => {
      clearTimeout(timer);
      emitter.off("ready", onReady);
      resolve(ready);
    };
    const onReady = () => done(true);
    const timer = setTimeout(() => done(false), timeoutMs);
    emitter.on("ready", onReady);
  });
}
