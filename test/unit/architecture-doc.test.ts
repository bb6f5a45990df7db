import { existsSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";

/**
 * docs/architecture.md walks a Reserve through named files and says where each rule lives. A
 * file renamed or split without the document following it would send a newcomer to nothing.
 */
const DOC = "docs/architecture.md";

/** Every `path/to/file.ts`-like name in backticks; names under src/ may be written without it. */
function namedFiles(text: string): string[] {
  const names = [...text.matchAll(/`([\w./-]+\/[\w.-]+\.(?:ts|proto|md|json))`/g)].map((m) => m[1]!);
  return [...new Set(names.map((n) => (/^(src|docs|proto|test|bench)\//.test(n) ? n : `src/${n}`)))];
}

describe(DOC, () => {
  it("names only files that exist", () => {
    const named = namedFiles(readFileSync(DOC, "utf8"));
    expect(named.length).toBeGreaterThan(20);
    expect(named.filter((f) => !existsSync(f))).toEqual([]);
  });

  it("the check itself notices a missing file", () => {
    expect(namedFiles("see `src/app/no-such-file.ts` and `domain/holds.ts`").filter((f) => !existsSync(f))).toEqual(["src/app/no-such-file.ts"]);
  });
});
