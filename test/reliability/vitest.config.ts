import path from "node:path";
import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/**
 * The reliability suite (`npm run test:reliability`). Its files end in `.rel.ts`, so the default
 * `npm test` (include `test/**\/*.test.ts`) never runs them. Each file starts its own Postgres,
 * Redis and server processes; files run one after another. RELIABILITY_SCALE=ci|full sets sizes.
 */
export default defineConfig({
  root,
  test: {
    include: ["test/reliability/**/*.rel.ts"],
    pool: "forks",
    fileParallelism: false,
    sequence: { shuffle: false },
    globalSetup: ["test/reliability/support/global-setup.ts"],
    testTimeout: 900_000,
    hookTimeout: 180_000,
  },
});
