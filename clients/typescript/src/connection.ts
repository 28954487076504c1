// One generic client of any buckets.v1 service: channel (plaintext, TLS or mTLS), bearer token,
// a deadline per call, retry of UNAVAILABLE, errors as BucketsError. AgentClient (agent.ts) is a
// thin typed layer on it, HubClient (hub.ts) another.
//
// 64-bit fields: the protos are loaded with longs as String, so every int64/uint64 of a response
// is a decimal string (exact, JSON-safe); requests take number | string | Long. `toBigInt`
// turns one into a bigint for arithmetic. Enums are their names ("SUCCEEDED"), fields keep their
// proto names (snake_case: project_id), as the generated types in src/generated/ say.

import { randomUUID } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

import { BucketsError } from "./errors";

/** Must equal the options of scripts/generate.js (proto-loader-gen-types). */
export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

/** Where the package keeps its copy of protos/ (made by `npm run build`). */
export const PROTO_DIR = path.resolve(__dirname, "..", "..", "protos");
const VERSIONED = "buckets/v1";

/** TLS to the service: PEM bytes. `ca`: roots for the server's certificate (default: the
 * system's); `cert` + `key`: the client certificate (mTLS); `serverName`: the name checked in the
 * server's certificate instead of the target's host. */
export interface TlsOptions {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  serverName?: string;
}

/** TlsOptions read from PEM files. */
export function tlsFromFiles(files: { caFile?: string; certFile?: string; keyFile?: string; serverName?: string }): TlsOptions {
  const read = (file?: string) => (file === undefined ? undefined : fs.readFileSync(file));
  return { ca: read(files.caFile), cert: read(files.certFile), key: read(files.keyFile), serverName: files.serverName };
}

export interface RetryOptions {
  /** Tries in all for a call failing with UNAVAILABLE (1: no retry). Default 5. */
  attempts?: number;
  initialBackoffMs?: number;
  maxBackoffMs?: number;
}

export interface ClientOptions {
  /** host:port */
  target: string;
  /** Absent: plaintext (loopback, tests). */
  tls?: TlsOptions;
  /** Sent as `authorization: Bearer <token>` on every call, streams included. */
  token?: string;
  /** Deadline of each unary call attempt. Default 30 s. */
  deadlineMs?: number;
  retry?: RetryOptions;
  /** A followed stream with no message this long is reopened (services send keep-alives). Default 120 s. */
  streamIdleTimeoutMs?: number;
  /** Consecutive failed reopenings of a followed stream before giving up. Default 20. */
  reconnectAttempts?: number;
  /** Where the buckets/v1/*.proto files are (default: the package's copy). */
  protoDir?: string;
  channelOptions?: grpc.ChannelOptions;
}

const servicesByDir = new Map<string, grpc.GrpcObject>();

/** Every service of protos/buckets/v1/*.proto, loaded once per directory (by glob: a new .proto
 * file's services are there with no change here). */
export function loadServices(protoDir: string = PROTO_DIR): grpc.GrpcObject {
  let loaded = servicesByDir.get(protoDir);
  if (loaded === undefined) {
    const files = fs.readdirSync(path.join(protoDir, VERSIONED)).filter((n) => n.endsWith(".proto")).sort()
      .map((n) => `${VERSIONED}/${n}`);
    const definition = protoLoader.loadSync(files, { ...LOADER_OPTIONS, includeDirs: [protoDir] });
    loaded = grpc.loadPackageDefinition(definition);
    servicesByDir.set(protoDir, loaded);
  }
  return loaded;
}

/** Channel credentials for `tls` (insecure without). */
export function channelCredentials(tls?: TlsOptions): grpc.ChannelCredentials {
  if (tls === undefined) return grpc.credentials.createInsecure();
  if ((tls.cert === undefined) !== (tls.key === undefined)) {
    throw new Error("TLS: cert and key go together (mTLS)");
  }
  return grpc.credentials.createSsl(tls.ca ?? null, tls.key ?? null, tls.cert ?? null);
}

/** A 64-bit field (a decimal string in responses) or any integer as a bigint. */
export function toBigInt(value: string | number | bigint | { toString(): string }): bigint {
  return typeof value === "bigint" ? value : BigInt(value.toString());
}

export function newRequestId(): string {
  return randomUUID();
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

type UnaryMethod<Req, Res> = (request: Req, metadata: grpc.Metadata, options: grpc.CallOptions,
  callback: (error: grpc.ServiceError | null, response?: Res) => void) => grpc.ClientUnaryCall;
type StreamMethod<Req, Res> = (request: Req, metadata: grpc.Metadata, options?: grpc.CallOptions)
  => grpc.ClientReadableStream<Res>;

/**
 * The client of one service `buckets.v1.<service>` (e.g. "Agent", "Hub"); `Stub` is the
 * generated client interface (src/generated/buckets/v1/<Service>.ts).
 */
export class ServiceClient<Stub extends grpc.Client> {
  readonly options: Required<Pick<ClientOptions, "deadlineMs" | "streamIdleTimeoutMs" | "reconnectAttempts">>
    & ClientOptions;
  readonly stub: Stub;

  constructor(service: string, options: ClientOptions) {
    if (!options.target) throw new Error("ClientOptions.target is empty");
    this.options = { deadlineMs: 30_000, streamIdleTimeoutMs: 120_000, reconnectAttempts: 20, ...options };
    const v1 = (loadServices(options.protoDir).buckets as grpc.GrpcObject).v1 as grpc.GrpcObject;
    const Constructor = v1[service] as grpc.ServiceClientConstructor | undefined;
    if (typeof Constructor !== "function") throw new Error(`no service buckets.v1.${service} in the protos`);
    const channelOptions: grpc.ChannelOptions = {
      // ReadFile answers hold up to the agent's limit (64 MiB sent at most).
      "grpc.max_receive_message_length": 64 * 1024 * 1024,
      "grpc.initial_reconnect_backoff_ms": 100,
      "grpc.max_reconnect_backoff_ms": 2_000,
      ...(options.tls?.serverName ? { "grpc.ssl_target_name_override": options.tls.serverName } : {}),
      ...options.channelOptions,
    };
    this.stub = new Constructor(options.target, channelCredentials(options.tls), channelOptions) as unknown as Stub;
  }

  close(): void {
    this.stub.close();
  }

  /** The call metadata: the bearer token, when there is one. */
  metadata(): grpc.Metadata {
    const metadata = new grpc.Metadata();
    if (this.options.token) metadata.set("authorization", `Bearer ${this.options.token}`);
    return metadata;
  }

  /**
   * Call the unary RPC `method` (the proto name, e.g. "GetOperation"); each attempt has a deadline
   * of `deadlineMs`; UNAVAILABLE is retried with jittered exponential backoff up to
   * `retry.attempts` tries in all. Rejects with BucketsError.
   */
  async unary<Req, Res>(method: string, request: Req, deadlineMs?: number): Promise<Res> {
    const rpc = (this.stub as unknown as Record<string, UnaryMethod<Req, Res>>)[method];
    if (typeof rpc !== "function") throw new Error(`no unary method ${method}`);
    const attempts = Math.max(1, this.options.retry?.attempts ?? 5);
    for (let attempt = 1; ; attempt++) {
      try {
        return await new Promise<Res>((resolve, reject) => {
          const deadline = new Date(Date.now() + (deadlineMs ?? this.options.deadlineMs));
          rpc.call(this.stub, request, this.metadata(), { deadline }, (error, response) =>
            error ? reject(BucketsError.from(error)) : resolve(response as Res));
        });
      } catch (error) {
        const failure = BucketsError.from(error);
        if (failure.code !== grpc.status.UNAVAILABLE || attempt >= attempts) throw failure;
        await sleep(this.backoffMs(attempt));
      }
    }
  }

  /** Open the server-streaming RPC `method` (no deadline: a follower bounds it by silence). */
  serverStream<Req, Res>(method: string, request: Req): grpc.ClientReadableStream<Res> {
    const rpc = (this.stub as unknown as Record<string, StreamMethod<Req, Res>>)[method];
    if (typeof rpc !== "function") throw new Error(`no streaming method ${method}`);
    return rpc.call(this.stub, request, this.metadata());
  }

  /** Milliseconds to wait after the `failures`-th consecutive failure (1-based), jittered in [0.5, 1]. */
  backoffMs(failures: number): number {
    const initial = this.options.retry?.initialBackoffMs ?? 200;
    const max = this.options.retry?.maxBackoffMs ?? 5_000;
    return Math.min(max, initial * 2 ** Math.max(0, failures - 1)) * (0.5 + Math.random() / 2);
  }
}
