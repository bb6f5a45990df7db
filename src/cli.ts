import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  type AutoTopUpRule,
  AutoTopUpOutcome,
  AutoTopUpState,
  BalanceAlertState,
  BucketKind,
  createCreditClients,
  type CreditClients,
  type Event,
  EventKind,
  Granularity,
  LedgerEntryKind,
  LimitMode,
  SpendPeriod,
  UsageDimension,
} from "./client/index.js";
import { sha256 } from "./rpc/auth.js";

/**
 * credit-admin: the operators' command line, built on the client SDK.
 *   credit-admin balance <account>
 *   credit-admin entries <account> [--kind HOLD] [--limit 50]
 *   credit-admin adjust <account> <amount> --reason "…" [--expires 2027-01-31T00:00:00Z]
 *   credit-admin reconcile <account>
 *   credit-admin alert <account> <credits>|<percent>%   (balance alert: a number of credits, or a percent of the plan's allowance)
 *   credit-admin caps <account> [--member M] [--holds N] [--credits N]   (caps on running holds; 0: no cap)
 *   credit-admin limits <account> [--member M]   (the spend limits that apply: used, held, left, when they reset)
 *   credit-admin set-limit <account> day|week|billing|lifetime <credits>|remove [--member M] [--soft] [--tz Europe/Paris]
 *   credit-admin usage <account> [--days 30] [--by model,member] [--hourly|--monthly] [--tz Europe/Paris]   (where the credits went)
 *   credit-admin forecast <account>   (when the credits run out at the recent pace; what expires unused)
 *   credit-admin auto-top-up <account> [set --below N --pack P|--target N [--max-per-month N] | off]   (the rule, or set it)
 *   credit-admin watch <account> [--count N]   (the balance now, then after each change, until N lines or Ctrl-C)
 *   credit-admin events [--account A] [--after CURSOR] [--kind HOLD_COMMITTED] [--limit 20] [--follow]
 *   credit-admin hash-token <token>            (for AUTH_TOKENS)
 * Server and token from CREDIT_URL (default http://127.0.0.1:50051) and CREDIT_TOKEN.
 */

const AUTO_TOP_UP_USAGE = "usage: credit-admin auto-top-up <account> [set --below <credits> --pack <pack>|--target <credits> [--max-per-month N] | off]";

/**
 * auto-top-up <account>: the rule as it stands; `set` creates or replaces it (enabled), `off`
 * disables it with its settings kept (a request out stays answerable).
 */
async function autoTopUp({ admin }: CreditClients, account: string, rest: string[], out: (text: string) => void): Promise<number> {
  const [verb] = rest;
  let rule: AutoTopUpRule | undefined;
  if (verb === undefined) {
    rule = (await admin.getAutoTopUp({ accountId: account })).rule;
  } else if (verb === "set") {
    const below = option(rest, "below") ?? "";
    const pack = option(rest, "pack");
    const target = option(rest, "target");
    const max = option(rest, "max-per-month") ?? "10";
    if (!/^\d{1,16}$/.test(below) || (pack === undefined) === (target === undefined) || (target !== undefined && !/^\d{1,16}$/.test(target)) || !/^\d{1,4}$/.test(max)) {
      out(AUTO_TOP_UP_USAGE);
      return 2;
    }
    const size = pack !== undefined ? { case: "packId" as const, value: pack } : { case: "targetCredits" as const, value: BigInt(target!) };
    rule = (await admin.setAutoTopUp({ accountId: account, thresholdCredits: BigInt(below), size, maxPerMonth: Number(max), enabled: true })).rule;
  } else if (verb === "off") {
    const current = (await admin.getAutoTopUp({ accountId: account })).rule;
    if (!current) {
      out(`account ${account} has no auto top-up rule`);
      return 1;
    }
    rule = (await admin.setAutoTopUp({ accountId: account, thresholdCredits: current.thresholdCredits, size: current.size, maxPerMonth: current.maxPerMonth, enabled: false })).rule;
  } else {
    out(AUTO_TOP_UP_USAGE);
    return 2;
  }
  if (!rule) {
    out(`account ${account} has no auto top-up rule`);
    return 0;
  }
  const size = rule.size.case === "packId" ? `pack ${rule.size.value}` : `up to ${rule.size.value} credits`;
  out(`below ${rule.thresholdCredits} credits buy ${size}; ${AutoTopUpState[rule.state]}; ${rule.monthCount} of ${rule.maxPerMonth} this month`);
  if (rule.waitingUntil) out(`this month's requests are used up: none before ${when(rule.waitingUntil)}`);
  const o = rule.outstanding;
  if (o) out(table(["REQUEST", "CREDITS", "PACK", "OUTCOME", "EXPIRES"], [[o.requestId, String(o.credits), o.packId || "-", AutoTopUpOutcome[o.outcome], when(o.expiresAt)]]));
  if (rule.lastFailure) out(`last failure: ${rule.lastFailure.requestId} at ${when(rule.lastFailure.failedAt)}: ${rule.lastFailure.reason} (${rule.failuresInRow} in a row)`);
  return 0;
}

/** Left-aligned columns under a header, like `kubectl get`. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd();
  return [line(header), ...rows.map(line)].join("\n");
}

function option(args: string[], name: string): string | undefined {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
}

const when = (t: Parameters<typeof timestampDate>[0] | undefined) => (t ? timestampDate(t).toISOString() : "-");

export async function run(args: string[], env: Record<string, string | undefined>, out: (text: string) => void): Promise<number> {
  const [command, account, ...rest] = args;
  if (command === "hash-token" && account) {
    out(sha256(account).toString("hex"));
    return 0;
  }
  const clients = createCreditClients({ baseUrl: env["CREDIT_URL"] ?? "http://127.0.0.1:50051", token: env["CREDIT_TOKEN"], caller: "credit-admin" });
  const { credit, admin } = clients;
  if (command === "events") return events(clients, args.slice(1), out);
  if (!account) {
    out("usage: credit-admin balance|entries|adjust|reconcile|alert|caps|limits|set-limit|usage|forecast|auto-top-up|watch <account> … | events [--account A] [--after CURSOR] [--kind K] [--limit N] [--follow] | hash-token <token>");
    return 2;
  }
  switch (command) {
    case "balance": {
      const { balance } = await credit.getBalance({ accountId: account });
      out(`account ${account}: available ${balance?.available ?? 0n}, held ${balance?.held ?? 0n}`);
      if (balance?.subscription) out(`plan ${balance.subscription.planId} v${balance.subscription.planVersion}, period ends ${when(balance.subscription.periodEnd)}`);
      const rows = (balance?.buckets ?? []).map((b) => [b.bucketId, BucketKind[b.kind], String(b.granted), String(b.remaining), String(b.held), when(b.expiresAt)]);
      out(table(["BUCKET", "KIND", "GRANTED", "REMAINING", "HELD", "EXPIRES"], rows));
      if (balance?.bucketsTruncated) out(`(the first ${rows.length} of ${balance.bucketCount} buckets, in consumption order)`);
      return 0;
    }
    case "watch": {
      // One line per state, from WatchBalance through the SDK (which reconnects by itself).
      const count = Number(option(rest, "count") ?? 0);
      const stop = new AbortController();
      process.once("SIGINT", () => stop.abort());
      let printed = 0;
      try {
        for await (const u of clients.watchBalance(account, { signal: stop.signal })) {
          out(`sequence ${u.sequence}  available ${u.balance.available}  held ${u.balance.held}  as of ${when(u.balance.asOf)}`);
          printed += 1;
          if (count > 0 && printed >= count) break;
        }
      } catch (err) {
        if (!stop.signal.aborted) throw err;
      }
      return 0;
    }
    case "entries": {
      const kind = option(rest, "kind");
      const kinds = kind ? [LedgerEntryKind[kind.toUpperCase() as keyof typeof LedgerEntryKind]].filter((k) => k !== undefined) : [];
      const { entries } = await admin.listLedgerEntries({ accountId: account, pageSize: Number(option(rest, "limit") ?? 50), kinds });
      const rows = entries.map((e) => [String(e.entryId), when(e.createdAt), LedgerEntryKind[e.kind], String(e.amount), e.bucketId, e.reservationId || "-", e.caller]);
      out(table(["ID", "TIME", "KIND", "AMOUNT", "BUCKET", "RESERVATION", "CALLER"], rows));
      return 0;
    }
    case "adjust": {
      const [amount] = rest;
      const reason = option(rest, "reason");
      if (!amount || !/^\d{1,16}$/.test(amount) || !reason) {
        out("usage: credit-admin adjust <account> <amount> --reason \"…\" [--expires ISO-8601]");
        return 2;
      }
      const expires = option(rest, "expires");
      const { bucket, balance } = await admin.adjustCredits({
        accountId: account,
        amount: BigInt(amount),
        reason,
        expiresAt: expires ? timestampFromDate(new Date(expires)) : undefined,
      });
      out(`granted ${bucket?.granted} credits in bucket ${bucket?.bucketId}; available now ${balance?.available}`);
      return 0;
    }
    case "caps": {
      // Caps on running holds: --holds N and --credits N (0 or absent: no cap), for --member M or the whole account.
      const holds = option(rest, "holds") ?? "0";
      const credits = option(rest, "credits") ?? "0";
      if (!/^\d{1,7}$/.test(holds) || !/^\d{1,18}$/.test(credits)) {
        out("usage: credit-admin caps <account> [--member M] [--holds N] [--credits N]");
        return 2;
      }
      const memberId = option(rest, "member") ?? "";
      const { limit } = await admin.setConcurrencyLimit({ accountId: account, memberId, maxOpenHolds: Number(holds), maxHeldCredits: BigInt(credits) });
      const scope = memberId ? `member ${memberId}` : "the account";
      const count = limit?.maxOpenHolds ? `at most ${limit.maxOpenHolds} holds` : "any number of holds";
      const held = limit?.maxHeldCredits ? `at most ${limit.maxHeldCredits} credits held` : "no cap on credits held";
      out(`${scope}: ${count} running, ${held}; running now: ${limit?.openHolds ?? 0} holds holding ${limit?.heldCredits ?? 0n} credits`);
      return 0;
    }
    case "limits": {
      const { limits } = await credit.getSpendLimits({ accountId: account, memberId: option(rest, "member") ?? "" });
      if (limits.length === 0) {
        out("no spend limit applies");
        return 0;
      }
      const rows = limits.map((l) => [
        l.memberId || "(account)", SpendPeriod[l.period], LimitMode[l.mode], String(l.maxCredits), String(l.used), String(l.held), String(l.remaining), when(l.resetsAt), l.timeZone,
      ]);
      out(table(["SCOPE", "PERIOD", "MODE", "LIMIT", "USED", "HELD", "LEFT", "RESETS", "ZONE"], rows));
      return 0;
    }
    case "set-limit": {
      // set-limit <account> <period> <credits>|remove [--member M] [--soft] [--tz ZONE]
      const period = { day: SpendPeriod.DAY, week: SpendPeriod.WEEK, billing: SpendPeriod.BILLING_PERIOD, lifetime: SpendPeriod.LIFETIME }[rest[0] ?? ""];
      const value = rest[1] ?? "";
      if (period === undefined || !/^(\d{1,16}|remove)$/.test(value)) {
        out("usage: credit-admin set-limit <account> day|week|billing|lifetime <credits>|remove [--member M] [--soft] [--tz ZONE]");
        return 2;
      }
      const memberId = option(rest, "member") ?? "";
      const scope = memberId ? `member ${memberId}` : "the account";
      if (value === "remove") {
        const { removed } = await admin.removeSpendLimit({ accountId: account, memberId, period });
        out(`removed the ${SpendPeriod[period]} limit of ${scope} (${removed?.used ?? 0n} of ${removed?.maxCredits ?? 0n} used)`);
        return 0;
      }
      const mode = rest.includes("--soft") ? LimitMode.SOFT : LimitMode.HARD;
      const { limit } = await admin.setSpendLimit({ accountId: account, memberId, period, maxCredits: BigInt(value), mode, timeZone: option(rest, "tz") ?? "" });
      out(`${scope}: ${LimitMode[mode]} ${SpendPeriod[period]} limit of ${limit?.maxCredits} credits (${limit?.timeZone}); used ${limit?.used}, held ${limit?.held}, left ${limit?.remaining}, resets ${when(limit?.resetsAt)}`);
      return 0;
    }
    case "usage": {
      // The last --days days (default 30) up to now, by day (or --hourly, --monthly), grouped --by dimensions.
      const days = Number(option(rest, "days") ?? 30);
      const by = (option(rest, "by") ?? "").split(",").filter((d) => d !== "");
      const dims = by.map((d) => ({ model: UsageDimension.MODEL, kind: UsageDimension.KIND, member: UsageDimension.MEMBER, caller: UsageDimension.CALLER })[d]);
      if (!Number.isInteger(days) || days < 1 || dims.some((d) => d === undefined)) {
        out("usage: credit-admin usage <account> [--days N] [--by model,kind,member,caller] [--hourly|--monthly] [--tz ZONE]");
        return 2;
      }
      const granularity = rest.includes("--hourly") ? Granularity.HOUR : rest.includes("--monthly") ? Granularity.MONTH : Granularity.DAY;
      // Up to now by the account's clock (a test clock may run ahead of this machine's).
      const asOf = (await credit.getBalance({ accountId: account })).balance?.asOf;
      const end = asOf ? timestampDate(asOf) : new Date();
      const { rows } = await credit.getUsage({
        accountId: account,
        startTime: timestampFromDate(new Date(end.getTime() - days * 86_400_000)),
        endTime: timestampFromDate(end),
        granularity,
        groupBy: dims as UsageDimension[],
        timeZone: option(rest, "tz") ?? "",
      });
      out(
        table(
          ["START", ...by.map((d) => d.toUpperCase()), "CONSUMED", "RESTORED", "GRANTED", "EXPIRED", "GENERATIONS"],
          rows.map((r) => [when(r.start), ...by.map((d) => r.group[d] || "-"), String(r.consumed), String(r.restored), String(r.granted), String(r.expired), String(r.generations)]),
        ),
      );
      return 0;
    }
    case "forecast": {
      const f = await credit.forecastBalance({ accountId: account });
      out(`burn rate ${f.burnRatePerDay} credits/day; runs out ${f.runsOutAt ? when(f.runsOutAt) : "not before the next reset"}; next reset ${when(f.nextResetAt)}`);
      if (f.expiringUnused.length > 0) {
        out(table(["BUCKET", "KIND", "EXPIRES UNUSED", "AT"], f.expiringUnused.map((e) => [e.bucket?.bucketId ?? "-", BucketKind[e.bucket?.kind ?? 0] ?? "-", String(e.amount), when(e.expiresAt)])));
      }
      return 0;
    }
    case "alert": {
      const match = /^(\d{1,16})(%?)$/.exec(rest[0] ?? "");
      if (!match) {
        out("usage: credit-admin alert <account> <credits>|<percent>%");
        return 2;
      }
      const threshold = match[2] ? { case: "percentOfAllowance" as const, value: Number(match[1]) } : { case: "credits" as const, value: BigInt(match[1]!) };
      const { alert, balance } = await admin.setBalanceAlert({ accountId: account, threshold });
      const state = BalanceAlertState[alert?.state ?? BalanceAlertState.UNSPECIFIED];
      out(
        alert?.active
          ? `alert below ${alert.thresholdCredits} credits (re-arms at ${alert.recoverAt}), ${state}; available now ${balance?.available}`
          : `alert set, inactive until the account has a plan; available now ${balance?.available}`,
      );
      return 0;
    }
    case "auto-top-up":
      return autoTopUp(clients, account, rest, out);
    case "reconcile": {
      const { differences, consistent } = await admin.reconcile({ accountId: account });
      out(consistent ? `account ${account}: consistent` : table(["SUBJECT", "FIELD", "STORED", "FROM ENTRIES"], differences.map((d) => [d.subject, d.field, String(d.stored), String(d.fromEntries)])));
      return consistent ? 0 : 1;
    }
    default:
      out(`unknown command ${command}`);
      return 2;
  }
}

/** What an event says, in a few words. */
function summary(event: Event): string {
  const p = event.payload;
  switch (p.case) {
    case "hold": {
      const r = p.value.reservation!;
      return `hold ${r.reservationId} held ${r.heldAmount} captured ${r.capturedAmount} returned ${r.releasedAmount}`;
    }
    case "creditsGranted":
      return `+${p.value.amount} ${BucketKind[p.value.bucket?.kind ?? 0]} ${p.value.source}`;
    case "creditsExpired":
      return `-${p.value.amount} from ${p.value.bucket?.bucketId}`;
    case "creditsExpiring":
      return `${p.value.amount} expire at ${when(p.value.expiresAt)}`;
    case "planChanged":
      return `${p.value.previousPlan?.planId ?? "-"} → ${p.value.plan?.planId} charge ${p.value.proratedCharge?.amountMinor ?? 0n} ${p.value.proratedCharge?.currencyCode ?? ""}`;
    case "periodRenewed":
      return `${p.value.plan?.planId} until ${when(p.value.periodEnd)}${p.value.billingPeriodRenewed ? ` charge ${p.value.charge?.amountMinor} ${p.value.charge?.currencyCode}` : ""}`;
    case "balanceAlert":
      return `available ${p.value.available} (threshold ${p.value.threshold})`;
    case "testClockAdvanced":
      return `+${p.value.advancedMs} ms`;
    default:
      return "";
  }
}

function eventRow(e: Event): string[] {
  return [e.cursor, when(e.occurredAt), e.accountId, String(e.accountSequence), EventKind[e.kind], summary(e)];
}

const EVENT_HEADER = ["CURSOR", "OCCURRED", "ACCOUNT", "SEQ", "KIND", "WHAT"];

/** One page of the event feed as a table, or (--follow) every event as it comes, one line each, until interrupted. */
async function events(clients: CreditClients, args: string[], out: (text: string) => void): Promise<number> {
  const kind = option(args, "kind");
  const code = kind ? EventKind[kind.toUpperCase().replace(/^EVENT_KIND_/, "") as keyof typeof EventKind] : undefined;
  if (kind && code === undefined) {
    out(`unknown event kind ${kind}`);
    return 2;
  }
  const request = { afterCursor: option(args, "after") ?? "", accountId: option(args, "account") ?? "", kinds: code === undefined ? [] : [code] };
  if (args.includes("--follow")) {
    const stop = new AbortController();
    process.once("SIGINT", () => stop.abort());
    try {
      for await (const e of clients.events.streamEvents(request, { signal: stop.signal, timeoutMs: 0 })) out(eventRow(e).join("  "));
    } catch (err) {
      if (!stop.signal.aborted) throw err;
    }
    return 0;
  }
  const page = await clients.events.listEvents({ ...request, pageSize: Number(option(args, "limit") ?? 20) });
  out(table(EVENT_HEADER, page.events.map(eventRow)));
  out(`next cursor: ${page.nextCursor}`);
  return 0;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  run(process.argv.slice(2), process.env, (text) => console.log(text)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(err instanceof Error ? err.message : String(err));
      process.exit(1);
    },
  );
}
