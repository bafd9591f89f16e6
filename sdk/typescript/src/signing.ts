/**
 * Signing requests exactly as the provider verifies them
 * (services/provider/domain/identity.py; docs/signing.md).
 *
 * Every call that acts for an account carries `signature {address, nonce,
 * signature}`: an EIP-191 `personal_sign` signature by that address over
 *
 *     c2d:v1:<method>:<nonce>:<canonical JSON of the request's fields>
 *
 * - `<method>`: the RPC's name, e.g. `StartCompute` (binds the signature to
 *   one RPC);
 * - `<nonce>`: decimal, greater than the last nonce the address used;
 * - the fields: the request's proto3 JSON form with the .proto field names
 *   (default values left out, 64-bit integers as strings, enums by name),
 *   without `signature`, as canonical JSON (canonical.ts).
 */
import { create, toJson, type DescMessage, type Message, type MessageShape } from "@bufbuild/protobuf";
import { Wallet, getAddress, verifyMessage } from "ethers";

import { canonicalJson, type JsonValue } from "./canonical.js";
import { AssetService } from "./gen/c2d/provider/v1/asset_pb.js";
import { ConsumerSignatureSchema, type ConsumerSignature } from "./gen/c2d/provider/v1/auth_pb.js";
import { LedgerService } from "./gen/c2d/provider/v1/ledger_pb.js";
import { ProviderService } from "./gen/c2d/provider/v1/provider_pb.js";

export const MESSAGE_PREFIX = "c2d:v1";
const METHOD = /^[A-Za-z0-9_./-]+$/;
const SIGNATURE_FIELD = "signature";

/** Each RPC that must be signed, by name, with its request's schema: the ones whose request has a `signature`. */
export const SIGNED_METHODS: ReadonlyMap<string, DescMessage> = new Map(
  [ProviderService, AssetService, LedgerService]
    .flatMap((service) => service.methods)
    .filter((method) => method.input.fields.some((field) => field.name === SIGNATURE_FIELD))
    .map((method) => [method.name, method.input]),
);

/** What is signed of a request: its proto3 JSON form (.proto field names) without `signature`. */
export function signedFields<Desc extends DescMessage>(
  schema: Desc,
  request: MessageShape<Desc>,
): { [key: string]: JsonValue } {
  const fields = toJson(schema, request, { useProtoFieldName: true }) as { [key: string]: JsonValue };
  delete fields[SIGNATURE_FIELD];
  return fields;
}

/** The text signed for `method` with these fields and nonce. */
export function canonicalMessage(method: string, fields: { [key: string]: JsonValue }, nonce: bigint): string {
  if (!METHOD.test(method)) {
    throw new RangeError(`method must match ${METHOD.source}, got ${JSON.stringify(method)}`);
  }
  if (nonce < 0n) {
    throw new RangeError(`a nonce is a non-negative integer, got ${nonce}`);
  }
  return `${MESSAGE_PREFIX}:${method}:${nonce}:${canonicalJson(fields)}`;
}

/** The checksummed address whose key made `signature` over this request's message (EIP-191). */
export function recoverSigner(
  method: string,
  fields: { [key: string]: JsonValue },
  nonce: bigint,
  signature: string,
): string {
  return getAddress(verifyMessage(canonicalMessage(method, fields, nonce), signature));
}

/** The schema of a signed RPC's request, or a RangeError naming the signed RPCs. */
export function requestSchemaOf(method: string): DescMessage {
  const schema = SIGNED_METHODS.get(method);
  if (schema === undefined) {
    throw new RangeError(`${method} is not a signed RPC; these are: ${[...SIGNED_METHODS.keys()].join(", ")}`);
  }
  return schema;
}

/** A request message with a `signature` field (every signed RPC's request). */
export type SignedRequest = Message & { signature?: ConsumerSignature };

/** One Ethereum account (a secp256k1 key) that signs requests. */
export class Signer {
  readonly address: string;
  private readonly wallet: Wallet;
  private lastNonce = 0n;

  /** `privateKey`: 32 bytes as hex, `0x` optional. */
  constructor(privateKey: string) {
    const hex = privateKey.trim().replace(/^0x/i, "");
    if (!/^[0-9a-fA-F]{64}$/.test(hex)) {
      throw new RangeError("a private key is 32 bytes as hex (64 hex digits, 0x optional)");
    }
    this.wallet = new Wallet(`0x${hex}`);
    this.address = this.wallet.address;
  }

  /** A signer with a fresh random key. */
  static random(): Signer {
    return new Signer(Wallet.createRandom().privateKey);
  }

  /** The key as 0x-hex: a secret, to be written only where its owner alone can read it. */
  get privateKey(): string {
    return this.wallet.privateKey;
  }

  /** The last nonce this signer gave (0n before the first). */
  get lastNonceGiven(): bigint {
    return this.lastNonce;
  }

  /**
   * Microseconds since the epoch, above every nonce this signer gave before:
   * increasing across restarts, so no nonce store is needed.
   */
  nextNonce(): bigint {
    const now = BigInt(Date.now()) * 1000n;
    this.lastNonce = now > this.lastNonce ? now : this.lastNonce + 1n;
    return this.lastNonce;
  }

  /** The 65-byte signature (0x-hex: r, s, v = 27 or 28) of the canonical message. */
  signMessage(method: string, fields: { [key: string]: JsonValue }, nonce: bigint): string {
    return this.wallet.signMessageSync(canonicalMessage(method, fields, nonce));
  }

  /**
   * Fills `request.signature` (this address, a fresh nonce unless one is
   * given, the signature) for the RPC `method` and returns the request.
   */
  sign<T extends SignedRequest>(method: string, request: T, nonce: bigint = this.nextNonce()): T {
    const schema = requestSchemaOf(method);
    if (request.$typeName !== schema.typeName) {
      throw new TypeError(`${method} takes a ${schema.typeName}, not a ${request.$typeName}`);
    }
    const fields = signedFields(schema, request as unknown as MessageShape<DescMessage>);
    request.signature = create(ConsumerSignatureSchema, {
      address: this.address,
      nonce,
      signature: this.signMessage(method, fields, nonce),
    });
    return request;
  }
}
