/**
 * The handler maps are typed from the generated service descriptors: `npm run typecheck` fails
 * if a handler names a method or a field the proto does not have, takes another method's request,
 * or a service lacks a handler. Each `@ts-expect-error` below is such a mistake; if one stopped
 * being an error (the typing loosened back to `Record<string, any>`), typecheck fails on the
 * unused directive. The runtime assertions only keep the file a test.
 */
import { describe, expect, it } from "vitest";
import { CreditAdminService } from "../../src/gen/credit/v1/admin_service_pb.js";
import { type CommitRequest, CreditService, type ReserveRequest } from "../../src/gen/credit/v1/credit_service_pb.js";
import { EncodedResponse, implement, type ServiceHandlers, type SomeHandlers } from "../../src/rpc/grpc-adapter.js";

const answer = async () => new EncodedResponse(new Uint8Array());

describe("typed handler maps", () => {
  it("a handler's request is its method's message: a field the proto lacks is a compile error", () => {
    const reserve: ServiceHandlers<typeof CreditService>["reserve"] = async (req, ctx) => {
      expect(typeof req.accountId).toBe("string");
      expect(typeof ctx.caller).toBe("string");
      // @ts-expect-error a field ReserveRequest does not have
      void req.acountId;
      // @ts-expect-error the caller is in the context, not in an invented metadata header
      void ctx.metadata;
      return answer();
    };
    expect(reserve).toBeTypeOf("function");
  });

  it("a method the service lacks, or another method's request, is a compile error", () => {
    const misnamed = {
      // @ts-expect-error CreditService has no method "reserveCredits"
      reserveCredits: answer,
    } satisfies SomeHandlers<typeof CreditService>;
    const crossed = {
      // @ts-expect-error Commit takes a CommitRequest, not a ReserveRequest
      commit: async (_req: ReserveRequest) => answer(),
    } satisfies SomeHandlers<typeof CreditService>;
    const fine = { commit: async (_req: CommitRequest) => answer() } satisfies SomeHandlers<typeof CreditService>;
    expect([misnamed, crossed, fine]).toHaveLength(3);
  });

  it("a service bound without a handler for each of its methods is a compile error", () => {
    const bind = () =>
      // @ts-expect-error CreditAdminService's methods are missing
      implement(CreditAdminService, { reserve: answer });
    expect(bind).toBeTypeOf("function");
  });
});
