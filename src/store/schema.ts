import { defineEntity, p } from "@mikro-orm/postgresql";

/**
 * Table schemas. Every table carries `account_id` and leads its primary key with it, so the
 * schema can be distributed by account. Money-like columns are bigint and map to `bigint`.
 * The migrations in ./migrations are the source of the DDL; test/integration checks that
 * these schemas and the migrated database agree.
 */
export const AccountRow = defineEntity({
  name: "AccountRow",
  tableName: "accounts",
  properties: {
    accountId: p.text().primary(),
    createdAt: p.datetime().columnType("timestamptz"),
  },
});

export const BucketRow = defineEntity({
  name: "BucketRow",
  tableName: "buckets",
  properties: {
    accountId: p.text().primary(),
    bucketId: p.uuid().primary(),
    kind: p.text(),
    granted: p.bigint(),
    remaining: p.bigint(),
    held: p.bigint(),
    validFrom: p.datetime().columnType("timestamptz"),
    expiresAt: p.datetime().columnType("timestamptz").nullable(),
    sourceRef: p.text(),
    createdAt: p.datetime().columnType("timestamptz"),
  },
});

export const ReservationRow = defineEntity({
  name: "ReservationRow",
  tableName: "reservations",
  properties: {
    accountId: p.text().primary(),
    reservationId: p.uuid().primary(),
    state: p.text(),
    heldAmount: p.bigint(),
    capturedAmount: p.bigint(),
    releasedAmount: p.bigint(),
    allocations: p.json<{ bucketId: string; amount: string }[]>(),
    expiresAt: p.datetime().columnType("timestamptz"),
    createdAt: p.datetime().columnType("timestamptz"),
    settledAt: p.datetime().columnType("timestamptz").nullable(),
    metadata: p.json<Record<string, string>>(),
    releaseReason: p.text().nullable(),
    releaseDetail: p.text(),
  },
});

export const LedgerEntryRow = defineEntity({
  name: "LedgerEntryRow",
  tableName: "ledger_entries",
  properties: {
    accountId: p.text().primary(),
    entryId: p.bigint().primary().autoincrement(),
    kind: p.text(),
    bucketId: p.uuid(),
    reservationId: p.uuid().nullable(),
    amount: p.bigint(),
    idempotencyKey: p.text().nullable(),
    caller: p.text(),
    metadata: p.json<Record<string, string>>(),
    createdAt: p.datetime().columnType("timestamptz"),
  },
});

export const OperationRow = defineEntity({
  name: "OperationRow",
  tableName: "operations",
  properties: {
    accountId: p.text().primary(),
    idempotencyKey: p.text().primary(),
    method: p.text(),
    requestHash: p.blob(),
    response: p.blob(),
    createdAt: p.datetime().columnType("timestamptz"),
  },
});

export const entities = [AccountRow, BucketRow, ReservationRow, LedgerEntryRow, OperationRow];
