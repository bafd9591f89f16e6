/**
 * c2d's TypeScript SDK: a provider's consumer API over gRPC, every request
 * signed as the provider verifies it. The generated messages and services
 * are under `gen/` (buf + protoc-gen-es, `make sdk-ts`).
 */
export { canonicalJson, type JsonValue } from "./canonical.js";
export {
  MESSAGE_PREFIX,
  SIGNED_METHODS,
  Signer,
  canonicalMessage,
  recoverSigner,
  requestSchemaOf,
  signedFields,
  type SignedRequest,
} from "./signing.js";
export * from "./gen/c2d/common/v1/common_pb.js";
export * from "./gen/c2d/provider/v1/asset_pb.js";
export * from "./gen/c2d/provider/v1/auth_pb.js";
export * from "./gen/c2d/provider/v1/ledger_pb.js";
export * from "./gen/c2d/provider/v1/provider_pb.js";
