/**
 * Input limits. Amounts are capped far below int64 so that sums over many buckets and
 * holds can never overflow a Postgres bigint (9.2e18).
 */
export const MAX_CREDITS = 1_000_000_000_000_000n; // 1e15
export const MAX_MONEY_MINOR = 1_000_000_000_000_000n;
export const MAX_ID_LENGTH = 128;
export const MAX_TEXT_LENGTH = 1024;
export const MAX_METADATA_ENTRIES = 32;
export const MAX_METADATA_KEY_LENGTH = 64;
export const MAX_METADATA_VALUE_LENGTH = 256;
/** Ids and keys: printable ASCII without spaces, so they are safe in logs, Redis keys and URLs. */
export const ID_PATTERN = /^[\x21-\x7e]+$/;
