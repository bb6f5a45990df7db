import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Client, credentials } from "@grpc/grpc-js";
import { HealthCheckRequestSchema, HealthCheckResponse_ServingStatus, HealthCheckResponseSchema } from "./gen/grpc/health/v1/health_pb.js";

/**
 * Container health probe: exits 0 when the server on GRPC_PORT (default 50051) reports SERVING
 * over grpc.health.v1, 1 otherwise. Usage: node dist/healthcheck.js
 */
const port = process.env["GRPC_PORT"] && process.env["GRPC_PORT"] !== "0" ? process.env["GRPC_PORT"] : "50051";
const client = new Client(`127.0.0.1:${port}`, credentials.createInsecure());
client.makeUnaryRequest(
  "/grpc.health.v1.Health/Check",
  (req: Uint8Array) => Buffer.from(req),
  (bytes: Buffer) => fromBinary(HealthCheckResponseSchema, bytes),
  toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema, { service: "" })),
  { deadline: new Date(new Date().getTime() + 2000) },
  (err, response) => {
    client.close();
    process.exit(!err && response?.status === HealthCheckResponse_ServingStatus.SERVING ? 0 : 1);
  },
);
