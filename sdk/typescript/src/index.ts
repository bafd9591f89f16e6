/**
 * c2d's TypeScript SDK: a provider's consumer API over gRPC, every request
 * signed as the provider verifies it, results checked against the
 * provider's signature. The generated messages and services are under
 * `gen/` (buf + protoc-gen-es, `make sdk-ts`).
 */
export { canonicalJson, type JsonValue } from "./canonical.js";
export {
  ProviderClient,
  type AssetRef,
  type ClientOptions,
  type ComputeRequest,
  type DownloadedResult,
  type DownloadOptions,
  type ProviderInfo,
  type RawAlgorithm,
  type ResultSelector,
} from "./client.js";
export { C2dError, IntegrityError, LinkError, asC2dError, type FieldViolation } from "./errors.js";
export { checkedChunks, verifyResultsStatement, type ResultsStatement, type SignedResultFile } from "./results.js";
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
