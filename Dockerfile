# syntax=docker/dockerfile:1
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev

FROM node:24-bookworm-slim
# Production mode (src/config.ts): the server refuses to start without AUTH_TOKENS and
# IDEMPOTENCY_SECRET, and refuses test clocks; ENVIRONMENT cannot turn it back while this is set.
ENV NODE_ENV=production
# Two malloc arenas instead of eight per core: the server allocates natively from a few threads, and spare
# arenas only hold freed memory resident (10-12 MB of RSS in the benches; docs/decisions.md, "Heap cap").
ENV MALLOC_ARENA_MAX=2
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
USER node
EXPOSE 50051
# The old-generation cap keeps the resident set under 200 MB (docs/performance.md); the live heap is far below it.
# The young-generation cap keeps the old generation's headroom above the young generation's size: without it
# V8 grows semi-spaces to 32 MB and then marks the old generation without pause (docs/decisions.md, "Heap cap").
# Scavenges run on the main thread alone: with a core or two shared with other work, parallel helpers waited for a core (docs/decisions.md, "Heap cap").
CMD ["node", "--enable-source-maps", "--max-old-space-size=128", "--max-semi-space-size=16", "--no-parallel-scavenge", "dist/main.js"]
