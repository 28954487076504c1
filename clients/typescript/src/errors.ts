// BucketsError: every failed call of this SDK, with the google.rpc.ErrorInfo the service sent.
//
// The buckets services put a google.rpc.Status with one ErrorInfo into the
// `grpc-status-details-bin` trailer of every error (protos/ERRORS.md): `reason` (a stable
// UPPER_SNAKE cause such as OPERATION_CONFLICT), `domain` ("buckets.v1") and `metadata` (the ids
// the error is about: operation_id, project_id, snapshot_id, request_id, move_id ...). Programs
// branch on `code` and `reason` and read ids from `metadata`; the message is for people.

import * as grpc from "@grpc/grpc-js";
import * as protobuf from "protobufjs";

export const STATUS_DETAILS_KEY = "grpc-status-details-bin";
const ERROR_INFO_TYPE_URL = "type.googleapis.com/google.rpc.ErrorInfo";

// google/rpc/status.proto and error_details.proto (ErrorInfo), Any spelled out with the same
// wire format: two messages are all this reads, no .proto files to ship.
const RPC_PROTO = `
syntax = "proto3";
package google.rpc;
message Any { string type_url = 1; bytes value = 2; }
message Status { int32 code = 1; string message = 2; repeated Any details = 3; }
message ErrorInfo { string reason = 1; string domain = 2; map<string, string> metadata = 3; }
`;
const rpcRoot = protobuf.parse(RPC_PROTO, { keepCase: true }).root;
const StatusType = rpcRoot.lookupType("google.rpc.Status");
const ErrorInfoType = rpcRoot.lookupType("google.rpc.ErrorInfo");

/** The decoded google.rpc.ErrorInfo of a failed call. */
export interface ErrorInfo {
  reason: string;
  domain: string;
  metadata: Record<string, string>;
}

/** The decoded google.rpc.Status of the trailer: its code, message and the type URLs of its details. */
export interface RpcStatus {
  code: number;
  message: string;
  detailTypes: string[];
  errorInfo: ErrorInfo | null;
}

/**
 * Decode a `grpc-status-details-bin` value (google.rpc.Status) and its first ErrorInfo.
 * Throws on bytes that are no Status (protobufjs' decode error).
 */
export function decodeStatusDetails(bytes: Uint8Array): RpcStatus {
  const status = StatusType.toObject(StatusType.decode(bytes), { defaults: true }) as {
    code: number; message: string; details: Array<{ type_url: string; value: Uint8Array }>;
  };
  let errorInfo: ErrorInfo | null = null;
  for (const detail of status.details) {
    if (detail.type_url === ERROR_INFO_TYPE_URL && errorInfo === null) {
      const info = ErrorInfoType.toObject(ErrorInfoType.decode(detail.value), { defaults: true }) as ErrorInfo;
      errorInfo = { reason: info.reason, domain: info.domain, metadata: { ...info.metadata } };
    }
  }
  return { code: status.code, message: status.message, detailTypes: status.details.map((d) => d.type_url), errorInfo };
}

/**
 * A failed call: `code` (grpc status number) and `codeName` ("ABORTED"), `message`, and the
 * service's ErrorInfo as `reason`, `domain`, `metadata` (empty strings / {} when the status has
 * none: one grpc made itself, such as UNAVAILABLE for a refused connection, or an error this SDK
 * made, such as a progress stream given up).
 */
export class BucketsError extends Error {
  readonly code: grpc.status;
  readonly codeName: string;
  readonly reason: string;
  readonly domain: string;
  readonly metadata: Readonly<Record<string, string>>;
  /** The whole decoded google.rpc.Status, when the trailer carried one. */
  readonly status: RpcStatus | null;

  constructor(code: grpc.status, message: string, status: RpcStatus | null = null) {
    super(message);
    this.name = "BucketsError";
    this.code = code;
    this.codeName = grpc.status[code] ?? String(code);
    this.status = status;
    this.reason = status?.errorInfo?.reason ?? "";
    this.domain = status?.errorInfo?.domain ?? "";
    this.metadata = Object.freeze({ ...(status?.errorInfo?.metadata ?? {}) });
  }

  override toString(): string {
    return `${this.codeName}${this.reason ? ` (${this.reason})` : ""}: ${this.message}`;
  }

  /**
   * The BucketsError of a failed grpc-js call (a ServiceError); anything else (already a
   * BucketsError: itself) becomes UNKNOWN. A trailer whose code differs from the call's is not
   * trusted (ignored), as grpcio-status does.
   */
  static from(error: unknown): BucketsError {
    if (error instanceof BucketsError) return error;
    const service = error as Partial<grpc.ServiceError>;
    if (typeof service?.code !== "number") {
      return new BucketsError(grpc.status.UNKNOWN, error instanceof Error ? error.message : String(error));
    }
    let status: RpcStatus | null = null;
    const raw = service.metadata?.get(STATUS_DETAILS_KEY) ?? [];
    if (raw.length > 0 && Buffer.isBuffer(raw[0])) {
      try {
        const decoded = decodeStatusDetails(raw[0]);
        status = decoded.code === service.code ? decoded : null;
      } catch {
        status = null; // not a google.rpc.Status: a peer that is no buckets service
      }
    }
    return new BucketsError(service.code, service.details ?? service.message ?? "", status);
  }
}
