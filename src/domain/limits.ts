/**
 * Input limits. A single amount is at most 10^15 credits, and an account holds at most
 * MAX_ACCOUNT_CREDITS (src/domain/balance-limit.ts), so totals and sums over an account's buckets
 * and holds stay far below int64 (9.2e18) and a Postgres bigint.
 */
export const MAX_CREDITS = 1_000_000_000_000_000n; // 1e15
export const MAX_MONEY_MINOR = 1_000_000_000_000_000n;
/** The most credits an account may hold (10^17): 100 of the largest grants, and 92 times below int64. */
export const MAX_ACCOUNT_CREDITS = 100_000_000_000_000_000n;
export const MAX_ID_LENGTH = 128;
/**
 * Free text (reasons, details) in UTF-16 code units, as JavaScript counts them: at most three
 * UTF-8 bytes each, so 3 KiB stored. Metadata likewise: 32 × (64 + 256) units, at most 30 KiB.
 */
export const MAX_TEXT_LENGTH = 1024;
export const MAX_METADATA_ENTRIES = 32;
export const MAX_METADATA_KEY_LENGTH = 64;
export const MAX_METADATA_VALUE_LENGTH = 256;
/** Ids and keys: printable ASCII without spaces, so they are safe in logs, Redis keys and URLs. */
export const ID_PATTERN = /^[\x21-\x7e]+$/;
/**
 * A balance lists its first buckets in consumption order, at most this many; its totals count
 * every bucket. With the bounds here an answer stays under 128 KiB (test/unit/answer-size.test.ts).
 */
export const MAX_BALANCE_BUCKETS = 100;
/**
 * A bucket's source reference in UTF-8 bytes. Top-up and plan references are ids (270 bytes at
 * most) and never reach it; an adjustment's reason is cut short there and stays whole on its
 * ADJUST entry.
 */
export const MAX_SOURCE_REF_BYTES = 320;
