// @buckets/client: TypeScript SDK of the buckets gRPC services. See README.md.
export { AgentClient, OK_STATES, TERMINAL_STATES, readProgress } from "./agent";
export {
  ClientOptions, RetryOptions, ServiceClient, TlsOptions, LOADER_OPTIONS, PROTO_DIR, channelCredentials,
  loadServices, newRequestId, tlsFromFiles, toBigInt,
} from "./connection";
export { BucketsError, ErrorInfo, RpcStatus, STATUS_DETAILS_KEY, decodeStatusDetails } from "./errors";
export { CallOptions, ENDING_KINDS, HubClient, LogEnd, RetryMoveOptions, RUNNING_JOB, readLog } from "./hub";
export { FollowSpec, Reading, RECONNECT_CODES, follow } from "./follow";
export type * as agentTypes from "./generated/agent";
export type * as hubTypes from "./generated/hub";
