import { HealthImplementation, type ServingStatus } from "grpc-health-check";

/**
 * grpc.health.v1.Health for the whole server ("") and each service. The status follows Postgres:
 * SERVING while the ledger answers, NOT_SERVING while it does not. Redis is not part of it: the
 * service keeps serving without Redis (it only loses the fast path).
 */
export class HealthReporter {
  readonly implementation: HealthImplementation;
  private current: ServingStatus = "NOT_SERVING";

  constructor(private readonly services: readonly string[]) {
    this.implementation = new HealthImplementation(Object.fromEntries(["", ...services].map((s) => [s, "NOT_SERVING" as const])));
  }

  get status(): ServingStatus {
    return this.current;
  }

  /**
   * A component that can degrade without stopping the service (Redis), reported under its own
   * health name; the server's own status ("") does not follow it.
   */
  setComponent(name: string, status: ServingStatus): void {
    this.implementation.setStatus(name, status);
  }

  set(status: ServingStatus): boolean {
    if (status === this.current) return false;
    this.current = status;
    for (const s of ["", ...this.services]) this.implementation.setStatus(s, status);
    return true;
  }
}
