import { type DescFile, type DescService, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { ReflectionService } from "@grpc/reflection";

function withDependencies(file: DescFile, seen = new Map<string, DescFile>()): Map<string, DescFile> {
  if (seen.has(file.name)) return seen;
  seen.set(file.name, file);
  for (const dep of file.dependencies) withDependencies(dep, seen);
  return seen;
}

/**
 * Server reflection (v1 and v1alpha) for grpcurl and `buf curl`, built from the protobuf-es
 * descriptors: each service's file and its transitive imports, serialized as FileDescriptorProtos.
 */
export function createReflection(services: readonly DescService[]): ReflectionService {
  const definition: Record<string, { format: string; type: object; fileDescriptorProtos: Buffer[] }> = {};
  for (const service of services) {
    const files = [...withDependencies(service.file).values()];
    definition[service.typeName] = {
      format: "protobuf-es",
      type: {},
      fileDescriptorProtos: files.map((f) => Buffer.from(toBinary(FileDescriptorProtoSchema, f.proto))),
    };
  }
  return new ReflectionService(definition as unknown as ConstructorParameters<typeof ReflectionService>[0]);
}
