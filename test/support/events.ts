import type { CreditClients, Event } from "../../src/client/index.js";

/**
 * Every event of the account in the feed, page by page, once the feed holds its latest change
 * (GetBalance's sequence): the sequencer numbers a commit just after it, so this waits for that
 * condition (at most 10 s) rather than for a time.
 */
export async function accountEvents(clients: CreditClients, accountId: string, pageSize = 1000): Promise<Event[]> {
  const latest = (await clients.credit.getBalance({ accountId })).sequence;
  const deadline = Date.now() + 10_000;
  for (;;) {
    const events: Event[] = [];
    let cursor = "";
    for (;;) {
      const page = await clients.events.listEvents({ afterCursor: cursor, accountId, pageSize });
      events.push(...page.events);
      // Past the last event the feed answers the cursor it was given.
      if (page.nextCursor === cursor) break;
      cursor = page.nextCursor;
    }
    if (events.at(-1)?.accountSequence === latest) return events;
    if (Date.now() > deadline) throw new Error(`the feed did not reach sequence ${latest} of ${accountId}: ${events.length} events`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}
