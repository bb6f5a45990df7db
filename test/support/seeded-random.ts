/**
 * A small seeded generator of numbers in [0, 1) (a linear congruential one: enough to spread
 * test values, and the same sequence for a seed on every machine, so a printed seed replays).
 */
export function seededRandom(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** The seed a random test runs with: `variable` from the environment when set (a replay), else a new one. */
export function testSeed(variable: string): number {
  return Number(process.env[variable] ?? Math.floor(Math.random() * 2 ** 31));
}
