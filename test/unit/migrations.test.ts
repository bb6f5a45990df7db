import { existsSync, readdirSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { migrations } from "../../src/store/migrations/index.js";

/**
 * A migration is history: a database made today must pass through the statements an older one
 * ran, so each migration writes its SQL out and never calls live code (store/usage-rollup.ts and
 * the like move on; a migration that called them would do something else each time they did).
 * test/fixtures/migrations holds every migration's statements as it ran them (for the usage
 * levels' migrations, taken from the commit that added each); a change to one is a failure here,
 * and a change of schema is a new migration.
 */
const DIR = "src/store/migrations";
const FIXTURES = "test/fixtures/migrations";

/** Whitespace is layout, not meaning: statements are compared with each run of it as one space. */
function collapse(sql: string): string {
  return sql.replace(/\s+/g, " ").trim();
}

async function statementsOf(M: (typeof migrations)[number]["class"]): Promise<string[]> {
  // A migration only collects statements in up() (addSql); the driver is never reached.
  const m = new M({} as never, {} as never);
  await m.up();
  return m.getQueries().map((q) => collapse(String(q)));
}

describe("migrations", () => {
  it("are all listed, in order of their names", () => {
    const files = readdirSync(DIR).filter((f) => /^Migration\d+\w*\.ts$/.test(f)).map((f) => f.replace(/\.ts$/, ""));
    expect(migrations.map((m) => m.name)).toEqual([...files].sort());
  });

  it("import nothing but the migration base class", () => {
    const imports = migrations.flatMap(({ name }) =>
      [...readFileSync(`${DIR}/${name}.ts`, "utf8").matchAll(/^import .* from "([^"]+)";$/gm)].map((m) => `${name}: ${m[1]}`),
    );
    expect(imports.filter((i) => !i.endsWith(": @mikro-orm/migrations"))).toEqual([]);
    expect(imports).toHaveLength(migrations.length);
  });

  for (const { name, class: M } of migrations) {
    it(`${name} runs the statements it ran`, async () => {
      const file = `${FIXTURES}/${name}.json`;
      // A new migration: its statements are recorded once, when it is added (the message holds them).
      if (!existsSync(file)) expect.fail(`${file} is missing; record the new migration's statements in it:\n${JSON.stringify(await statementsOf(M), null, 1)}`);
      const ran = (JSON.parse(readFileSync(file, "utf8")) as string[]).map(collapse);
      expect(ran.length).toBeGreaterThan(0);
      expect(await statementsOf(M)).toEqual(ran);
    });
  }

  it("the comparison notices a changed statement and ignores layout", () => {
    expect(collapse("create table t (\n  a int\n);")).toBe(collapse("create table t ( a int );"));
    expect(collapse("create table t (a int);")).not.toBe(collapse("create table t (a bigint);"));
  });
});
