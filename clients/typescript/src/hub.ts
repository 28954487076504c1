// Typed client of buckets.v1.Hub (the hub service, `buckets-hub serve`): unary calls as
// promises, moves and copies started with a request id chosen once (a retried call finds the same
// job), and a follower of a move's or a copy's log (FollowLog) that reopens the stream from the
// next sequence number and ends where the service ends it.

import type { AddHostRequest } from "./generated/buckets/v1/AddHostRequest";
import type { AddProjectRequest } from "./generated/buckets/v1/AddProjectRequest";
import type { CloneProjectRequest } from "./generated/buckets/v1/CloneProjectRequest";
import type { Copy__Output } from "./generated/buckets/v1/Copy";
import type { DrainHostResponse__Output } from "./generated/buckets/v1/DrainHostResponse";
import type { ForceOffHostResponse__Output } from "./generated/buckets/v1/ForceOffHostResponse";
import type { Host__Output } from "./generated/buckets/v1/Host";
import type { HubClient as HubStub } from "./generated/buckets/v1/Hub";
import type { HubListProjectsRequest } from "./generated/buckets/v1/HubListProjectsRequest";
import type { HubListProjectsResponse__Output } from "./generated/buckets/v1/HubListProjectsResponse";
import type { JobStatus__Output } from "./generated/buckets/v1/JobStatus";
import type { ListCopiesRequest } from "./generated/buckets/v1/ListCopiesRequest";
import type { ListHostsRequest } from "./generated/buckets/v1/ListHostsRequest";
import type { ListMovesRequest } from "./generated/buckets/v1/ListMovesRequest";
import type { ListRescuesRequest } from "./generated/buckets/v1/ListRescuesRequest";
import type { LogEntry__Output } from "./generated/buckets/v1/LogEntry";
import type { LogUpdate__Output } from "./generated/buckets/v1/LogUpdate";
import type { Move__Output } from "./generated/buckets/v1/Move";
import type { Project__Output } from "./generated/buckets/v1/Project";
import type { RefreshRequest } from "./generated/buckets/v1/RefreshRequest";
import type { RefreshResponse__Output } from "./generated/buckets/v1/RefreshResponse";
import type { Rescue__Output } from "./generated/buckets/v1/Rescue";
import type { StartCopyRequest } from "./generated/buckets/v1/StartCopyRequest";
import type { StartMoveRequest } from "./generated/buckets/v1/StartMoveRequest";

import { ClientOptions, newRequestId, ServiceClient, toBigInt } from "./connection";
import { follow, Reading } from "./follow";

/** A move's or a copy's status while it is not over (a failed move stays active: not over). */
export const RUNNING_JOB: ReadonlySet<JobStatus__Output> = new Set<JobStatus__Output>(["JOB_PENDING", "JOB_RUNNING"]);
/** The log entries that end an attempt of a job (hub_client/movelog_view.py ENDING_KINDS). */
export const ENDING_KINDS: ReadonlySet<string> = new Set(["complete", "failed", "cancelled"]);

/** A start request whose request_id the client fills in when it is absent. */
type Started<T extends { request_id?: string }> = Omit<T, "request_id"> & { request_id?: string };
/** For the calls that answer when their work is done (drain, delete, clone): a longer deadline. */
export interface CallOptions {
  deadlineMs?: number;
}

/** How a LogUpdate reads for the follower: the job (first message), an entry, a keep-alive. No
 * entry is `terminal`: entries may follow the ending one (source cleanup), so the end is the
 * stream's, judged by LogEnd. */
/** What `retryMove` may change; each unset: as the move had it. */
export interface RetryMoveOptions {
  force?: boolean;  // accept the loss of edits newer than the last backup (source down)
  force_target?: boolean;  // move to a draining target, or one that has not reported recently
}

export function readLog(update: LogUpdate__Output): Reading<LogEntry__Output> {
  if (update.update === "entry" && update.entry) {
    return { kind: "event", event: update.entry, seq: toBigInt(update.entry.seq), terminal: false };
  }
  const job = update.update === "move" ? update.move : update.update === "copy" ? update.copy : null;
  if (job) return { kind: "state", finished: !RUNNING_JOB.has(job.status), lastSeq: 0n };
  return { kind: "keepalive" };
}

/**
 * Whether a FollowLog stream that ended without error ended the log, decided as the service
 * decides it (hub_client/service/logs.py): the job no longer runs and the entry that ended its
 * last attempt (complete, failed, cancelled; an "attempt" entry starts a new one) was given out.
 * The client sees the entries it was given: from seq 1 it knows; from a later seq, until it gets
 * an entry, it takes the service's word when the job did not run as the stream opened (the ending
 * entry lies before from_seq). Anything else (a stream that ended with the job running or with no
 * ending entry seen) is no end: the follower reopens it.
 */
export class LogEnd {
  private done: boolean | null;
  private stoppedAtOpen = false;

  constructor(fromSeq: bigint) {
    this.done = fromSeq > 1n ? null : false;
  }

  /** A stream is (re)opened: nothing is known of the job until its first message. */
  opened(): void {
    this.stoppedAtOpen = false;
  }

  /** The first message of a (re)opened stream: the job as it is now. */
  job(status: JobStatus__Output): void {
    this.stoppedAtOpen = !RUNNING_JOB.has(status);
  }

  /** An entry given to the consumer (in seq order, each once). */
  entry(kind: string): void {
    if (kind === "attempt") this.done = false;
    else if (ENDING_KINDS.has(kind)) this.done = true;
  }

  ended(): boolean {
    return this.done === true || (this.done === null && this.stoppedAtOpen);
  }
}

export class HubClient extends ServiceClient<HubStub> {
  constructor(options: ClientOptions) {
    super("Hub", options);
  }

  private withDeadline<Req, Res>(method: string, request: Req, options?: CallOptions): Promise<Res> {
    return this.unary(method, request, options?.deadlineMs);
  }

  // ------------------------------------------------------------ hosts

  /** Register (or update) a host; the hub probes its agent once (`probed`, `reachable`). */
  addHost(request: AddHostRequest): Promise<Host__Output> { return this.unary("AddHost", request); }
  getHost(hostId: string, probe = false): Promise<Host__Output> {
    return this.unary("GetHost", { host_id: hostId, probe });
  }
  async listHosts(request: ListHostsRequest = {}): Promise<Host__Output[]> {
    return (await this.unary<ListHostsRequest, { hosts: Host__Output[] }>("ListHosts", request)).hosts;
  }
  /** Answers when the host's agent has backed up every dirty project (give a long deadline). */
  drainHost(hostId: string, concurrency = 0, options?: CallOptions): Promise<DrainHostResponse__Output> {
    return this.withDeadline("DrainHost", { host_id: hostId, concurrency }, options);
  }
  undrainHost(hostId: string): Promise<Host__Output> { return this.unary("UndrainHost", { host_id: hostId }); }
  forceOffHost(hostId: string): Promise<ForceOffHostResponse__Output> {
    return this.unary("ForceOffHost", { host_id: hostId });
  }
  /** false: there was no such host. FAILED_PRECONDITION (HOST_IN_USE) while something names it. */
  async removeHost(hostId: string): Promise<boolean> {
    return (await this.unary<object, { removed: boolean }>("RemoveHost", { host_id: hostId })).removed;
  }

  // ------------------------------------------------------------ projects

  addProject(request: AddProjectRequest): Promise<Project__Output> { return this.unary("AddProject", request); }
  getProject(projectId: string): Promise<Project__Output> {
    return this.unary("GetProject", { project_id: projectId });
  }
  /** Every page of ListProjects (`page_size` sets the page, 0: one page of all). */
  async listProjects(request: Omit<HubListProjectsRequest, "page_token"> = {}): Promise<Project__Output[]> {
    const projects: Project__Output[] = [];
    let token = "";
    do {
      const page: HubListProjectsResponse__Output = await this.unary("ListProjects", { ...request, page_token: token });
      projects.push(...page.projects);
      token = page.next_page_token;
    } while (token);
    return projects;
  }
  refresh(request: RefreshRequest = {}, options?: CallOptions): Promise<RefreshResponse__Output> {
    return this.withDeadline("Refresh", request, options);
  }
  /** Files, backups and records, everywhere; false: it was gone already. */
  async deleteProject(projectId: string, options?: CallOptions): Promise<boolean> {
    return (await this.withDeadline<object, { deleted: boolean }>("DeleteProject", { project_id: projectId },
      options)).deleted;
  }
  /** The clone_id is chosen here when absent, once (a retried call joins the same clone). */
  cloneProject(request: CloneProjectRequest, options?: CallOptions): Promise<Project__Output> {
    return this.withDeadline("CloneProject", { ...request, clone_id: request.clone_id || newRequestId() }, options);
  }

  // ------------------------------------------------------------ moves

  /** Record and start a move; request_id is chosen once when absent, before any retry. */
  startMove(request: Started<StartMoveRequest>): Promise<Move__Output> {
    return this.unary("StartMove", { ...request, request_id: request.request_id || newRequestId() });
  }
  getMove(moveId: string): Promise<Move__Output> { return this.unary("GetMove", { move_id: moveId }); }
  async listMoves(request: ListMovesRequest = {}): Promise<Move__Output[]> {
    return (await this.unary<ListMovesRequest, { moves: Move__Output[] }>("ListMoves", request)).moves;
  }
  cancelMove(moveId: string): Promise<Move__Output> { return this.unary("CancelMove", { move_id: moveId }); }
  resumeMove(moveId: string): Promise<Move__Output> { return this.unary("ResumeMove", { move_id: moveId }); }
  /** Start a failed move again from preflight. `force` (a boolean: the old form) accepts the loss
   * of edits newer than the last backup (source down); `force_target` allows a target host that is
   * draining or has not reported recently. Each unset: as the move had it. */
  retryMove(moveId: string, options: boolean | RetryMoveOptions = {}): Promise<Move__Output> {
    const { force, force_target } = typeof options === "boolean" ? { force: options, force_target: undefined } : options;
    return this.unary("RetryMove", {
      move_id: moveId,
      ...(force === undefined ? {} : { force }),
      ...(force_target === undefined ? {} : { force_target }),
    });
  }

  // ------------------------------------------------------------ copies

  /** Record and start a copy; request_id is chosen once when absent, before any retry. */
  startCopy(request: Started<StartCopyRequest>): Promise<Copy__Output> {
    return this.unary("StartCopy", { ...request, request_id: request.request_id || newRequestId() });
  }
  getCopy(copyId: string): Promise<Copy__Output> { return this.unary("GetCopy", { copy_id: copyId }); }
  async listCopies(request: ListCopiesRequest = {}): Promise<Copy__Output[]> {
    return (await this.unary<ListCopiesRequest, { copies: Copy__Output[] }>("ListCopies", request)).copies;
  }
  cancelCopy(copyId: string): Promise<Copy__Output> { return this.unary("CancelCopy", { copy_id: copyId }); }
  resumeCopy(copyId: string): Promise<Copy__Output> { return this.unary("ResumeCopy", { copy_id: copyId }); }
  retryCopy(copyId: string): Promise<Copy__Output> { return this.unary("RetryCopy", { copy_id: copyId }); }

  // ------------------------------------------------------------ logs

  /**
   * The move's log entries with seq >= `fromSeq`, in order, each once, until the service ends
   * the log (LogEnd); the stream is reopened from the next seq when it drops, goes silent, skips
   * a number or ends early. Seqs are decimal strings (int64).
   */
  followMoveLog(moveId: string, fromSeq: bigint | number | string = 1n,
    onReconnect?: (fromSeq: bigint, reason: string) => void): AsyncGenerator<LogEntry__Output, void, undefined> {
    return this.followLog({ move_id: moveId }, `log of move ${moveId}`, toBigInt(fromSeq), onReconnect);
  }

  /** The copy's log entries, as followMoveLog. */
  followCopyLog(copyId: string, fromSeq: bigint | number | string = 1n,
    onReconnect?: (fromSeq: bigint, reason: string) => void): AsyncGenerator<LogEntry__Output, void, undefined> {
    return this.followLog({ copy_id: copyId }, `log of copy ${copyId}`, toBigInt(fromSeq), onReconnect);
  }

  /** Follow the move's log to its end and return the move as recorded then. */
  async waitMove(moveId: string): Promise<Move__Output> {
    for await (const _ of this.followMoveLog(moveId)) { /* to the end */ }
    return this.getMove(moveId);
  }

  /** Follow the copy's log to its end and return the copy as recorded then. */
  async waitCopy(copyId: string): Promise<Copy__Output> {
    for await (const _ of this.followCopyLog(copyId)) { /* to the end */ }
    return this.getCopy(copyId);
  }

  private async *followLog(job: { move_id: string } | { copy_id: string }, what: string, fromSeq: bigint,
    onReconnect?: (fromSeq: bigint, reason: string) => void): AsyncGenerator<LogEntry__Output, void, undefined> {
    const end = new LogEnd(fromSeq);
    const entries = follow<LogUpdate__Output, LogEntry__Output>({
      open: (seq) => {
        end.opened();
        return this.serverStream("FollowLog", { ...job, from_seq: seq.toString() });
      },
      read: (update) => {
        const job = update.update === "move" ? update.move : update.update === "copy" ? update.copy : null;
        if (job) end.job(job.status);
        return readLog(update);
      },
      ended: () => end.ended(),
      idleTimeoutMs: this.options.streamIdleTimeoutMs,
      reconnectAttempts: this.options.reconnectAttempts,
      backoffMs: (failures) => this.backoffMs(failures),
      what,
      onReconnect,
    }, fromSeq);
    for await (const entry of entries) {
      end.entry(entry.kind); // before the follower reads on: it asks `ended` only after this
      yield entry;
    }
  }

  // ------------------------------------------------------------ rescues and regions

  async listRescues(request: ListRescuesRequest = {}): Promise<Rescue__Output[]> {
    return (await this.unary<ListRescuesRequest, { rescues: Rescue__Output[] }>("ListRescues", request)).rescues;
  }

  /** Backup regions nearest first from an ISO country code ("DE") or "lat,lon". */
  async listRegions(location: string): Promise<string[]> {
    return (await this.unary<object, { regions: string[] }>("ListRegions", { location })).regions;
  }
}
