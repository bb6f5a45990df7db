import type { LedgerEventKind } from "../domain/events.js";

/** Characters a subject token keeps as they are; every other byte is escaped. */
const PLAIN = /^[A-Za-z0-9_-]$/;

/**
 * An account id as one NATS subject token. Account ids are printable ASCII without spaces
 * (rpc/decode.ts), but '.', '*' and '>' mean something in a subject, so every character other
 * than letters, digits, '-' and '_' becomes '%' and its two upper-case hex digits, as in a URL:
 * `org.42/team` → `org%2E42%2Fteam`. The mapping is one-to-one ('%' itself becomes `%25`), so a
 * consumer computes the token of an account the same way (docs/events.md "Broker relay").
 */
export function subjectToken(accountId: string): string {
  let out = "";
  for (const ch of accountId) {
    if (PLAIN.test(ch)) out += ch;
    else for (const byte of Buffer.from(ch, "utf8")) out += `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/** `<prefix>.<kind in lower case>.<account token>`, e.g. `credit.events.hold_created.acct-1`. */
export function eventSubject(prefix: string, kind: LedgerEventKind, accountId: string): string {
  return `${prefix}.${kind.toLowerCase()}.${subjectToken(accountId)}`;
}
