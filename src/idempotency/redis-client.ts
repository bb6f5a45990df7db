import type { EventEmitter } from "node:events";
import { Cluster, Redis } from "ioredis";
import type { Config, RedisClusterNode } from "../config.js";

/** What the idempotency cache talks to: one Redis node, or a Redis Cluster. */
export type RedisConnection = Redis | Cluster;

/** No call waits longer than this on Redis; after it, the Postgres backstop decides. */
const COMMAND_TIMEOUT_MS = 500;
const CONNECT_TIMEOUT_MS = 2000;
/** Reconnect back-off while Redis (or the whole cluster) is away: 200 ms steps up to 2 s. */
const backoff = (attempt: number): number => Math.min(attempt * 200, 2000);

/**
 * A Redis client that fails fast instead of queueing while Redis is away, so a call never waits
 * on Redis: the Postgres backstop takes over, and the client keeps reconnecting in the background.
 */
export function createRedisClient(url: string): Redis {
  return new Redis(url, {
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
 */
export function createRedisClusterClient(nodes: readonly RedisClusterNode[]): Cluster {
  return new Cluster(
    nodes.map(({ host, port }) => ({ host, port })),
    {
      enableOfflineQueue: false,
      enableReadyCheck: true,
      enableAutoPipelining: true,
      clusterRetryStrategy: backoff,
      slotsRefreshTimeout: 1000,
      redisOptions: {
        maxRetriesPerRequest: 0,
        commandTimeout: COMMAND_TIMEOUT_MS,
        connectTimeout: CONNECT_TIMEOUT_MS,
      },
    },
  );
}

/** A Redis Cluster client when REDIS_CLUSTER_NODES is set, otherwise the single node at REDIS_URL. */
export function createRedisConnection(config: Pick<Config, "REDIS_URL" | "REDIS_CLUSTER_NODES">): RedisConnection {
  const nodes = config.REDIS_CLUSTER_NODES;
  return nodes !== undefined && nodes.length > 0 ? createRedisClusterClient(nodes) : createRedisClient(config.REDIS_URL);
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
