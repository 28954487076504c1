// Typed client of buckets.v1.Agent: unary calls as promises, operations started with a request
// id chosen once (a retried call joins the same operation), and a progress follower that
// reconnects from the last sequence number.

import type { AgentClient as AgentStub } from "./generated/buckets/v1/Agent";
import type { BackupRequest } from "./generated/buckets/v1/BackupRequest";
import type { Capabilities__Output } from "./generated/buckets/v1/Capabilities";
import type { CheckCopyTargetRequest } from "./generated/buckets/v1/CheckCopyTargetRequest";
import type { CopyFilesRequest } from "./generated/buckets/v1/CopyFilesRequest";
import type { DeleteProjectRequest } from "./generated/buckets/v1/DeleteProjectRequest";
import type { DrainRequest } from "./generated/buckets/v1/DrainRequest";
import type { EnsureProjectRequest } from "./generated/buckets/v1/EnsureProjectRequest";
import type { FileEntry__Output } from "./generated/buckets/v1/FileEntry";
import type { ForgetRequest } from "./generated/buckets/v1/ForgetRequest";
import type { FreezeRequest } from "./generated/buckets/v1/FreezeRequest";
import type { FreezeResponse__Output } from "./generated/buckets/v1/FreezeResponse";
import type { HostStatus__Output } from "./generated/buckets/v1/HostStatus";
import type { ListFilesRequest } from "./generated/buckets/v1/ListFilesRequest";
import type { ListFilesResponse__Output } from "./generated/buckets/v1/ListFilesResponse";
import type { ListOperationsRequest } from "./generated/buckets/v1/ListOperationsRequest";
import type { ListOperationsResponse__Output } from "./generated/buckets/v1/ListOperationsResponse";
import type { ListProjectsResponse__Output } from "./generated/buckets/v1/ListProjectsResponse";
import type { ListSnapshotsRequest } from "./generated/buckets/v1/ListSnapshotsRequest";
import type { ListSnapshotsResponse__Output } from "./generated/buckets/v1/ListSnapshotsResponse";
import type { Operation__Output } from "./generated/buckets/v1/Operation";
import type { OperationState__Output } from "./generated/buckets/v1/OperationState";
import type { PreCopyRequest } from "./generated/buckets/v1/PreCopyRequest";
import type { ProgressEvent__Output } from "./generated/buckets/v1/ProgressEvent";
import type { ProgressUpdate__Output } from "./generated/buckets/v1/ProgressUpdate";
import type { ProjectStatus__Output } from "./generated/buckets/v1/ProjectStatus";
import type { ReadFileRequest } from "./generated/buckets/v1/ReadFileRequest";
import type { ReadFileResponse__Output } from "./generated/buckets/v1/ReadFileResponse";
import type { RestoreRequest } from "./generated/buckets/v1/RestoreRequest";
import type { Snapshot__Output } from "./generated/buckets/v1/Snapshot";
import type { UndoRestoreRequest } from "./generated/buckets/v1/UndoRestoreRequest";
import type { VerifyRequest } from "./generated/buckets/v1/VerifyRequest";

import { ClientOptions, newRequestId, ServiceClient, toBigInt } from "./connection";
import { follow, Reading } from "./follow";

export const TERMINAL_STATES: ReadonlySet<OperationState__Output> = new Set<OperationState__Output>([
  "SUCCEEDED", "SUCCEEDED_WITH_WARNINGS", "UP_TO_DATE", "FAILED", "CANCELLED", "INTERRUPTED",
]);
export const OK_STATES: ReadonlySet<OperationState__Output> = new Set<OperationState__Output>([
  "SUCCEEDED", "SUCCEEDED_WITH_WARNINGS", "UP_TO_DATE",
]);

/** An operation request whose request_id the client fills in when it is absent. */
type Started<T extends { request_id?: string }> = Omit<T, "request_id"> & { request_id?: string };

/** How a ProgressUpdate reads for the follower (shared by every caller of StreamProgress). */
export function readProgress(update: ProgressUpdate__Output): Reading<ProgressEvent__Output> {
  if (update.update === "event" && update.event) {
    return { kind: "event", event: update.event, seq: toBigInt(update.event.seq), terminal: update.event.terminal };
  }
  if (update.update === "operation" && update.operation) {
    return { kind: "state", finished: TERMINAL_STATES.has(update.operation.state),
      lastSeq: toBigInt(update.operation.last_seq) };
  }
  return { kind: "keepalive" };
}

export class AgentClient extends ServiceClient<AgentStub> {
  constructor(options: ClientOptions) {
    super("Agent", options);
  }

  private start<T extends { request_id?: string }>(method: string, request: Started<T>): Promise<Operation__Output> {
    // Chosen once, before any retry: a retried call joins the operation the first one started.
    return this.unary(method, { ...request, request_id: request.request_id || newRequestId() });
  }

  // ------------------------------------------------------------ operations

  backup(request: Started<BackupRequest>) { return this.start("Backup", request); }
  restore(request: Started<RestoreRequest>) { return this.start("Restore", request); }
  undoRestore(request: Started<UndoRestoreRequest>) { return this.start("UndoRestore", request); }
  verify(request: Started<VerifyRequest>) { return this.start("Verify", request); }
  ensureProject(request: Started<EnsureProjectRequest>) { return this.start("EnsureProject", request); }
  preCopy(request: Started<PreCopyRequest>) { return this.start("PreCopy", request); }
  drain(request: Started<DrainRequest> = {}) { return this.start("Drain", request); }
  deleteProject(request: Started<DeleteProjectRequest>) { return this.start("DeleteProject", request); }
  forget(request: Started<ForgetRequest>) { return this.start("Forget", request); }
  copyFiles(request: Started<CopyFilesRequest>) { return this.start("CopyFiles", request); }

  async checkCopyTarget(request: CheckCopyTargetRequest): Promise<boolean> {
    return (await this.unary<CheckCopyTargetRequest, { exists: boolean }>("CheckCopyTarget", request)).exists;
  }

  getOperation(operationId: string): Promise<Operation__Output> {
    return this.unary("GetOperation", { operation_id: operationId });
  }

  cancelOperation(operationId: string): Promise<Operation__Output> {
    return this.unary("CancelOperation", { operation_id: operationId });
  }

  /** Every page of ListOperations (newest first). */
  listOperations(request: Omit<ListOperationsRequest, "page_token"> = {}): Promise<Operation__Output[]> {
    return this.allPages("ListOperations", request, (page: ListOperationsResponse__Output) => page.operations);
  }

  /**
   * The operation's events with seq >= `fromSeq`, in order, until the terminal one; the stream is
   * reopened from the next sequence number when it drops (see follow()). Seqs are decimal strings
   * (int64); `fromSeq` takes a bigint, number or such a string.
   */
  progress(operationId: string, fromSeq: bigint | number | string = 1n,
    onReconnect?: (fromSeq: bigint, reason: string) => void): AsyncGenerator<ProgressEvent__Output, void, undefined> {
    return follow<ProgressUpdate__Output, ProgressEvent__Output>({
      open: (seq) => this.serverStream("StreamProgress", { operation_id: operationId, from_seq: seq.toString() }),
      read: readProgress,
      idleTimeoutMs: this.options.streamIdleTimeoutMs,
      reconnectAttempts: this.options.reconnectAttempts,
      backoffMs: (failures) => this.backoffMs(failures),
      what: `progress of operation ${operationId}`,
      onReconnect,
    }, toBigInt(fromSeq));
  }

  /** Follow the operation to its terminal event and return the terminal Operation. */
  async wait(operationId: string): Promise<Operation__Output> {
    const seen = await this.getOperation(operationId);
    if (!TERMINAL_STATES.has(seen.state)) {
      for await (const _ of this.progress(operationId, toBigInt(seen.last_seq) + 1n)) { /* to the end */ }
    }
    return this.getOperation(operationId);
  }

  // ------------------------------------------------------------ status

  getProjectStatus(projectId: string): Promise<ProjectStatus__Output> {
    return this.unary("GetProjectStatus", { project_id: projectId });
  }

  getHostStatus(): Promise<HostStatus__Output> {
    return this.unary("GetHostStatus", {});
  }

  listProjects(): Promise<ListProjectsResponse__Output> {
    return this.unary("ListProjects", {});
  }

  getCapabilities(): Promise<Capabilities__Output> {
    return this.unary("GetCapabilities", {});
  }

  // ------------------------------------------------------------ browsing

  /** Every page of ListSnapshots, newest first. */
  listSnapshots(request: Omit<ListSnapshotsRequest, "page_token">): Promise<Snapshot__Output[]> {
    return this.allPages("ListSnapshots", request, (page: ListSnapshotsResponse__Output) => page.snapshots);
  }

  /** Every page of ListFiles. */
  listFiles(request: Omit<ListFilesRequest, "page_token">): Promise<FileEntry__Output[]> {
    return this.allPages("ListFiles", request, (page: ListFilesResponse__Output) => page.entries);
  }

  readFile(request: ReadFileRequest): Promise<ReadFileResponse__Output> {
    return this.unary("ReadFile", request);
  }

  // ------------------------------------------------------------ move lock and change reports

  freeze(request: FreezeRequest): Promise<FreezeResponse__Output> {
    return this.unary("Freeze", request);
  }

  async thaw(projectId: string): Promise<boolean> {
    return (await this.unary<object, { frozen: boolean }>("Thaw", { project_id: projectId })).frozen;
  }

  async markEdited(projectId: string, when?: Date): Promise<void> {
    const time = when === undefined ? undefined
      : { seconds: Math.floor(when.getTime() / 1000).toString(), nanos: (when.getTime() % 1000) * 1_000_000 };
    await this.unary("MarkEdited", { project_id: projectId, ...(time ? { time } : {}) });
  }

  // ------------------------------------------------------------ internals

  private async allPages<Req extends object, Page extends { next_page_token: string }, Item>(
    method: string, request: Req, items: (page: Page) => Item[]): Promise<Item[]> {
    const result: Item[] = [];
    let token = "";
    do {
      const page: Page = await this.unary(method, { ...request, page_token: token });
      result.push(...items(page));
      token = page.next_page_token;
    } while (token);
    return result;
  }
}
