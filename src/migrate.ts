import { pino } from "pino";
import { loadDatabaseUrl } from "./config.js";
import { migrate } from "./store/database.js";

/**
 * `npm run migrate` (or `node dist/migrate.js`): creates the database if missing and applies
 * pending migrations, then exits. Deployments run it once before starting servers with
 * DB_MIGRATE=false, so no server loads the migrator.
 */
const log = pino({ base: { service: "credit-migrate" } });

migrate(loadDatabaseUrl()).then(
  () => {
    log.info("database migrated");
    process.exit(0);
  },
  (err: unknown) => {
    log.fatal({ err }, "migration failed");
    process.exit(1);
  },
);
