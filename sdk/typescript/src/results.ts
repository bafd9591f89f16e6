/**
 * Results as the provider signed them.
 *
 * GetJobDetails answers a job that has results with `signed_results`: the
 * statement (canonical JSON of the job id, the dataset DIDs, the algorithm
 * DID and the results manifest) and the provider's Ed25519 signature of its
 * UTF-8 bytes. A download is checked against the size and sha256 that
 * statement gives, so neither the transport nor a tampered job record can
 * change a result unnoticed.
 */
import { createHash, createPublicKey, verify } from "node:crypto";

import { IntegrityError } from "./errors.js";
import type { SignedResults } from "./gen/c2d/provider/v1/provider_pb.js";

/** One result file as the provider signed it. */
export interface SignedResultFile {
  index: number;
  /** Relative to /data/outputs, or "algorithm.log". */
  path: string;
  size: bigint;
  /** Lowercase hex. */
  sha256: string;
  /** "RESULT_KIND_OUTPUT" or "RESULT_KIND_ALGORITHM_LOG". */
  kind: string;
}

/** What the provider's signature covers. */
export interface ResultsStatement {
  jobId: string;
  datasetDids: string[];
  algorithmDid: string;
  files: SignedResultFile[];
}

// The statement's manifest is proto3 JSON: fields at their default value
// (index 0, size 0) are left out, 64-bit integers are strings.
interface StatementJson {
  job_id?: string;
  dataset_dids?: string[];
  algorithm_did?: string;
  results?: {
    files?: { index?: number; path?: string; size?: string; sha256?: string; kind?: string }[];
  };
}

/**
 * The statement of `signed`, once its signature by `signingPublicKey` (the
 * provider's Ed25519 key, hex) checks out; an IntegrityError otherwise.
 */
export function verifyResultsStatement(signed: SignedResults | undefined, signingPublicKey: string): ResultsStatement {
  if (signed === undefined || signed.statementJson === "") {
    throw new IntegrityError("the job has no signed results statement (it has no results yet)");
  }
  if (signed.publicKey.toLowerCase() !== signingPublicKey.toLowerCase()) {
    throw new IntegrityError(
      `the results are signed by key ${signed.publicKey}, not by the provider's key ${signingPublicKey}`,
    );
  }
  if (!ed25519Verifies(signingPublicKey, Buffer.from(signed.statementJson, "utf8"), signed.signature)) {
    throw new IntegrityError("the provider's signature of the results statement does not verify");
  }
  const statement = JSON.parse(signed.statementJson) as StatementJson;
  return {
    jobId: statement.job_id ?? "",
    datasetDids: statement.dataset_dids ?? [],
    algorithmDid: statement.algorithm_did ?? "",
    files: (statement.results?.files ?? []).map((file) => ({
      index: file.index ?? 0,
      path: file.path ?? "",
      size: BigInt(file.size ?? "0"),
      sha256: file.sha256 ?? "",
      kind: file.kind ?? "RESULT_KIND_UNSPECIFIED",
    })),
  };
}

function ed25519Verifies(publicKeyHex: string, data: Buffer, signatureHex: string): boolean {
  const publicKey = hexBytes(publicKeyHex);
  const signature = hexBytes(signatureHex);
  if (publicKey?.length !== 32 || signature?.length !== 64) {
    return false;
  }
  const key = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: publicKey.toString("base64url") }, format: "jwk" });
  return verify(null, data, key, signature);
}

function hexBytes(text: string): Buffer | undefined {
  const hex = text.replace(/^0x/i, "");
  return /^([0-9a-fA-F]{2})*$/.test(hex) ? Buffer.from(hex, "hex") : undefined;
}

/**
 * Passes a result file's chunks through, in order, and checks at the end
 * that they are exactly the bytes the statement names (size and sha256):
 * an IntegrityError otherwise, before anyone takes the file as complete.
 */
export async function* checkedChunks(
  file: SignedResultFile,
  chunks: AsyncIterable<{ offset: bigint; data: Uint8Array }>,
): AsyncGenerator<Uint8Array> {
  const hash = createHash("sha256");
  let received = 0n;
  for await (const chunk of chunks) {
    if (chunk.offset !== received) {
      throw new IntegrityError(`${file.path}: a chunk at offset ${chunk.offset}, expected ${received}`);
    }
    received += BigInt(chunk.data.length);
    if (received > file.size) {
      throw new IntegrityError(`${file.path}: more than the ${file.size} bytes the provider signed`);
    }
    hash.update(chunk.data);
    yield chunk.data;
  }
  const digest = hash.digest("hex");
  if (received !== file.size || digest !== file.sha256) {
    throw new IntegrityError(
      `${file.path}: received ${received} bytes with sha256 ${digest}; the provider signed ${file.size} bytes with sha256 ${file.sha256}`,
    );
  }
}
