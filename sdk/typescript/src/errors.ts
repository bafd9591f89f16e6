/**
 * Why a call failed, as the provider says it (AIP-193): the gRPC status, the
 * ErrorInfo reason (UPPER_SNAKE_CASE, e.g. `SIGNATURE_INVALID`), the fields
 * a BadRequest names and the delay a RetryInfo asks for, so a caller can act
 * on a refusal without parsing its message.
 */
import { Code, ConnectError } from "@connectrpc/connect";

import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from "./gen/google/rpc/error_details_pb.js";

/** A field of the request that was wrong, and what is wrong with it. */
export interface FieldViolation {
  field: string;
  description: string;
}

/** A call the provider refused or could not answer. */
export class C2dError extends Error {
  /** The gRPC status name, e.g. "PERMISSION_DENIED". */
  readonly status: string;
  /** The ErrorInfo reason, e.g. "ORDER_NOT_FOUND" ("" when the server sent none). */
  readonly reason: string;
  /** The service that refused, e.g. "c2d.provider" ("" when the server sent none). */
  readonly domain: string;
  readonly metadata: Readonly<Record<string, string>>;
  readonly fieldViolations: readonly FieldViolation[];
  /** How long to wait before a retry, when the server said so. */
  readonly retryDelayMs: number | undefined;

  constructor(cause: ConnectError) {
    super(cause.rawMessage, { cause });
    this.name = "C2dError";
    this.status = statusName(cause.code);
    const info = cause.findDetails(ErrorInfoSchema)[0];
    this.reason = info?.reason ?? "";
    this.domain = info?.domain ?? "";
    this.metadata = { ...info?.metadata };
    this.fieldViolations = cause
      .findDetails(BadRequestSchema)
      .flatMap((request) => request.fieldViolations.map(({ field, description }) => ({ field, description })));
    const delay = cause.findDetails(RetryInfoSchema)[0]?.retryDelay;
    this.retryDelayMs = delay === undefined ? undefined : Number(delay.seconds) * 1000 + delay.nanos / 1e6;
  }
}

/** A result, or its statement, does not match what the provider signed. */
export class IntegrityError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "IntegrityError";
  }
}

/** A result's link did not answer with the file (refused, expired, unreachable). */
export class LinkError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "LinkError";
  }
}

/** `error` as a C2dError when it is an RPC's failure; anything else unchanged. */
export function asC2dError(error: unknown): unknown {
  return error instanceof ConnectError ? new C2dError(error) : error;
}

/** Code.PermissionDenied -> "PERMISSION_DENIED", the name gRPC's other clients use. */
function statusName(code: Code): string {
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}
