import { LEVEL_MARKS, LEVEL_MS, type UsageAmounts, type UsageDelta, type UsageDimension, type UsageLevel, USAGE_DIMENSIONS } from "../../src/domain/usage.js";

/** A row of a coarser level: one dimension's value in one UTC hour or day. */
export interface LevelDelta extends UsageAmounts {
  readonly accountId: string;
  readonly start: Date;
  readonly dim: UsageDimension;
  readonly value: string;
  /** The figures before each of the level's marks (LEVEL_MARKS), in order. */
  readonly prefixes: readonly UsageAmounts[];
}

/**
 * The model of a level's share of some rollup additions, as the persist statement sums it in SQL
 * (src/store/usage-rollup.ts levelAdditionsSql; Reconcile checks the stored levels against the
 * slots): each slot's sums go to its UTC hour (or day) once per dimension, and to each of the
 * level's prefixes it lies before.
 */
export function levelDeltas(deltas: readonly UsageDelta[], level: UsageLevel): LevelDelta[] {
  const span = LEVEL_MS[level];
  const marks = LEVEL_MARKS[level];
  const rows = new Map<string, LevelDelta>();
  for (const d of deltas) {
    const start = new Date(Math.floor(d.slot.getTime() / span) * span);
    for (const dim of USAGE_DIMENSIONS) {
      const value = d[dim];
      const key = `${d.accountId}\u0000${start.getTime()}\u0000${dim}\u0000${value}`;
      let row = rows.get(key);
      if (!row) {
        const prefixes = marks.map(zeroAmounts);
        row = { accountId: d.accountId, start, dim, value, consumed: 0n, restored: 0n, granted: 0n, expired: 0n, generations: 0n, prefixes };
        rows.set(key, row);
      }
      addAmounts(row, d);
      const offset = d.slot.getTime() - start.getTime();
      marks.forEach((mark, k) => {
        if (offset < mark) addAmounts(row.prefixes[k]!, d);
      });
    }
  }
  return [...rows.values()];
}

function zeroAmounts(): UsageAmounts {
  return { consumed: 0n, restored: 0n, granted: 0n, expired: 0n, generations: 0n };
}

function addAmounts(to: UsageAmounts, a: UsageAmounts): void {
  to.consumed += a.consumed;
  to.restored += a.restored;
  to.granted += a.granted;
  to.expired += a.expired;
  to.generations += a.generations;
}

