/**
 * Answers the Python tests' questions about this SDK (tests/sdk_typescript/),
 * so the provider's own code checks what the TypeScript side produces:
 * reads a JSON list of cases on stdin, writes a JSON list of answers.
 *
 * - {"op": "sign", "privateKey", "method", "nonce": "<decimal>", "request": <proto3 JSON>}
 *     -> {"address", "fields", "message", "signature", "signed": <the request, signed, as proto3 JSON>}
 * - {"op": "recover", "method", "request": <proto3 JSON with its signature>}
 *     -> {"address"} (whose key signed it)
 * - {"op": "verifyStatement", "signedResults": <SignedResults as proto3 JSON>, "signingPublicKey"}
 *     -> {"statement"} or {"error"}
 * - {"op": "checkChunks", "file": {"path", "size", "sha256"}, "chunks": [{"offset", "base64"}]}
 *     -> {"received": <base64>} or {"error"}
 * - {"op": "signedMethods"} -> the names of the RPCs the SDK signs
 * - {"op": "call", "provider", "privateKey", "method", "args": [...]}: a ProviderClient method
 *     -> {"result": <its answer as JSON>} or {"refusal": {"status", "reason", "domain", "fieldViolations"}}
 * A case that fails answers {"error": "<Error name>: <message>"}.
 */
import { fromJson, toJson, type DescMessage, type JsonValue as ProtoJson } from "@bufbuild/protobuf";

import {
  C2dError,
  ProviderClient,
  SIGNED_METHODS,
  SignedResultsSchema,
  Signer,
  canonicalMessage,
  checkedChunks,
  recoverSigner,
  requestSchemaOf,
  signedFields,
  verifyResultsStatement,
  type JsonValue,
  type SignedRequest,
} from "../src/index.js";

type Case = { op: string; [key: string]: unknown };

async function answer(question: Case): Promise<unknown> {
  switch (question.op) {
    case "sign": {
      const method = String(question.method);
      const schema = requestSchemaOf(method);
      const signer = new Signer(String(question.privateKey));
      const request = fromJson(schema, question.request as ProtoJson) as SignedRequest;
      const nonce = BigInt(String(question.nonce));
      const fields = signedFields(schema, request);
      signer.sign(method, request, nonce);
      return {
        address: signer.address,
        fields,
        message: canonicalMessage(method, fields, nonce),
        signature: request.signature?.signature,
        signed: toJson(schema as DescMessage, request),
      };
    }
    case "recover": {
      const method = String(question.method);
      const schema = requestSchemaOf(method);
      const request = fromJson(schema, question.request as ProtoJson) as SignedRequest;
      const signature = request.signature;
      if (signature === undefined) {
        throw new TypeError("the request has no signature");
      }
      const fields = signedFields(schema, request);
      return { address: recoverSigner(method, fields, signature.nonce, signature.signature) };
    }
    case "verifyStatement": {
      const signed = fromJson(SignedResultsSchema, question.signedResults as ProtoJson);
      const statement = verifyResultsStatement(signed, String(question.signingPublicKey));
      return { statement: { ...statement, files: statement.files.map((f) => ({ ...f, size: f.size.toString() })) } };
    }
    case "checkChunks": {
      const file = question.file as { path: string; size: string; sha256: string };
      const chunks = (question.chunks as { offset: string; base64: string }[]).map((chunk) => ({
        offset: BigInt(chunk.offset),
        data: Buffer.from(chunk.base64, "base64"),
      }));
      const received: Uint8Array[] = [];
      const signed = { index: 0, kind: "RESULT_KIND_OUTPUT", ...file, size: BigInt(file.size) };
      for await (const data of checkedChunks(signed, iterate(chunks))) {
        received.push(data);
      }
      return { received: Buffer.concat(received).toString("base64") };
    }
    case "signedMethods":
      return [...SIGNED_METHODS.keys()];
    case "call": {
      const client = ProviderClient.connect(String(question.provider), new Signer(String(question.privateKey)));
      const method = String(question.method) as "jobDetails" | "startCompute" | "downloadResult" | "resultLink";
      const call = client[method] as (...args: unknown[]) => Promise<unknown>;
      try {
        return { result: JSON.parse(JSON.stringify(await call.apply(client, question.args as unknown[]), bigints)) };
      } catch (error) {
        if (!(error instanceof C2dError)) {
          throw error;
        }
        const { status, reason, domain, fieldViolations } = error;
        return { refusal: { status, reason, domain, fieldViolations, message: error.message } };
      }
    }
    default:
      throw new RangeError(`unknown op ${JSON.stringify(question.op)}`);
  }
}

function bigints(_key: string, value: unknown): unknown {
  return typeof value === "bigint" ? value.toString() : value;
}

async function* iterate<T>(items: T[]): AsyncGenerator<T> {
  yield* items;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) {
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString("utf8");
}

const answers: JsonValue[] = [];
for (const question of JSON.parse(await readStdin()) as Case[]) {
  try {
    answers.push((await answer(question)) as JsonValue);
  } catch (error) {
    answers.push({ error: error instanceof Error ? `${error.name}: ${error.message}` : String(error) });
  }
}
process.stdout.write(`${JSON.stringify(answers)}\n`);
