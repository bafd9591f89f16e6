/**
 * Answers the Python tests' questions about this SDK (tests/sdk_typescript/),
 * so the provider's own code checks what the TypeScript side produces:
 * reads a JSON list of cases on stdin, writes a JSON list of answers.
 *
 * - {"op": "sign", "privateKey", "method", "nonce": "<decimal>", "request": <proto3 JSON>}
 *     -> {"address", "fields", "message", "signature", "signed": <the request, signed, as proto3 JSON>}
 * - {"op": "recover", "method", "request": <proto3 JSON with its signature>}
 *     -> {"address"} (whose key signed it)
 * - {"op": "signedMethods"} -> the names of the RPCs the SDK signs
 * A case that fails answers {"error": "<Error name>: <message>"}.
 */
import { fromJson, toJson, type DescMessage, type JsonValue as ProtoJson } from "@bufbuild/protobuf";

import {
  SIGNED_METHODS,
  Signer,
  canonicalMessage,
  recoverSigner,
  requestSchemaOf,
  signedFields,
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
    case "signedMethods":
      return [...SIGNED_METHODS.keys()];
    default:
      throw new RangeError(`unknown op ${JSON.stringify(question.op)}`);
  }
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
