// The SDK's HubClient against a real `buckets-hub serve` (temporary SQLite store) over two real
// agents, all started here: hosts registered, a project moved between them following its log to
// the end (through a connection cut mid-stream), a directory copied, a host drained, and the
// hub's refusals read from ErrorInfo. Outcomes are checked against the bytes the test wrote and
// what the agents say, not against the hub's report of itself.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, test } from "node:test";

import { AgentClient, BucketsError, HubClient, LogEnd, toBigInt } from "../src";
import type { LogEntry__Output } from "../src/generated/buckets/v1/LogEntry";
import type { LogUpdate__Output } from "../src/generated/buckets/v1/LogUpdate";
import { AgentProcess, PYTHON, REPO_ROOT } from "./support/agent-process";
import { HubProcess } from "./support/hub-process";
import { CuttableProxy } from "./support/proxy";

const agents: Record<string, AgentProcess> = {};
const agentClients: Record<string, AgentClient> = {};
let hubProcess: HubProcess;
let hub: HubClient;

before(async () => {
  // Few, quick tries of an agent that does not answer (a host registered at a dead address).
  hubProcess = new HubProcess("[agents]\nretries = 2\ndeadline = 10\n");
  // One region, one repository root both agents reach (a move restores on B what A backed up),
  // in the hub's temporary base (removed with it).
  const shared = path.join(hubProcess.base, "shared");
  fs.mkdirSync(shared);
  const password = path.join(shared, "repo.password");
  fs.writeFileSync(password, "ts-hub-password\n", { mode: 0o600 });
  const repository = `[repository]\nkind = "local"\n[repository.local]\nroot = "${path.join(shared, "repos")}"\n`
    + `password_file = "${password}"\n`;
  for (const name of ["host-a", "host-b"]) {
    agents[name] = await new AgentProcess(name, repository, name).start();
    agentClients[name] = new AgentClient({ target: agents[name].target, deadlineMs: 60_000 });
  }
  await hubProcess.start();
  hub = new HubClient({ target: hubProcess.target, deadlineMs: 60_000 });
  // Two hosts registered through the SDK (here, so that each test also runs alone).
  for (const name of ["host-a", "host-b"]) {
    const added = await hub.addHost({ host_id: name, address: agents[name].target, region: "eu" });
    assert.ok(added.probed && added.reachable, JSON.stringify(added));
  }
});

after(() => {
  hub?.close();
  for (const client of Object.values(agentClients)) client.close();
  hubProcess?.stop();
  for (const agent of Object.values(agents)) agent.stop();
});

/** Every file under `root` (relative path → bytes). */
function readTree(root: string): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  for (const entry of fs.readdirSync(root, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) {
      const full = path.join(entry.parentPath, entry.name);
      files.set(path.relative(root, full), fs.readFileSync(full));
    }
  }
  return files;
}

function writeFiles(root: string, files: Record<string, Buffer>): void {
  for (const [name, content] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(root, name)), { recursive: true });
    fs.writeFileSync(path.join(root, name), content);
  }
}

const randomFiles = (prefix: string, count: number) => Object.fromEntries(
  Array.from({ length: count }, (_, i) => [`${prefix}/d${i % 3}/f${i}.bin`, randomBytes(1000 + i * 37)]));

/**
 * A new project on `host` (EnsureProject through the agent, its files written into its home as
 * the Python tests do), its repository made with a cheap key (tests/cheap_repository.py, as
 * tests/harness.py create_project does), and registered with the hub.
 */
async function addProject(host: string, files: Record<string, Buffer>): Promise<string> {
  const projectId = randomUUID();
  execFileSync(PYTHON, ["-c", [
    "import sys; from pathlib import Path",
    "from agent.config import load_config; from agent.repository import resolve; from tests import cheap_repository",
    "repo = resolve(None, sys.argv[2], load_config(Path(sys.argv[1])))",
    "cheap_repository.init_local(Path(repo.location), repo.password)",
  ].join("\n"), agents[host].configPath, projectId], { cwd: REPO_ROOT });
  const client = agentClients[host];
  const ensured = await client.wait((await client.ensureProject({ project_id: projectId, mode: "NONE" })).id);
  assert.equal(ensured.state, "SUCCEEDED", JSON.stringify(ensured.error));
  writeFiles(agents[host].home(projectId), files);
  const added = await hub.addProject({ project_id: projectId, host_id: host, region: "eu" });
  assert.equal(added.host_id, host);
  return projectId;
}

async function rejection(call: () => Promise<unknown>): Promise<BucketsError> {
  try {
    await call();
  } catch (error) {
    assert.ok(error instanceof BucketsError, `not a BucketsError: ${error}`);
    return error;
  }
  assert.fail("the call did not fail");
}

async function collect(entries: AsyncIterable<LogEntry__Output>): Promise<LogEntry__Output[]> {
  const all: LogEntry__Output[] = [];
  for await (const entry of entries) all.push(entry);
  return all;
}

/** The entries of one FollowLog stream of the move, read to its end with no follower. */
async function* rawLog(moveId: string): AsyncGenerator<LogEntry__Output> {
  for await (const update of hub.serverStream<object, LogUpdate__Output>("FollowLog", { move_id: moveId, from_seq: "1" })) {
    if (update.update === "entry" && update.entry) yield update.entry;
  }
}

const seqs = (entries: LogEntry__Output[]) => entries.map((e) => toBigInt(e.seq));
const keys = (entries: LogEntry__Output[]) => entries.map((e) => [e.seq, e.kind, e.message].join("|"));
const oneToN = (n: number) => Array.from({ length: n }, (_, i) => BigInt(i + 1));

test("the two hosts registered through the SDK are listed with their agents' status", { timeout: 30_000 }, async () => {
  const hosts = await hub.listHosts({ probe: true });
  assert.deepEqual(hosts.map((h) => [h.id, h.region, h.status, h.reachable]),
    [["host-a", "eu", "running", true], ["host-b", "eu", "running", true]]);
  for (const [host, name] of hosts.map((h, i) => [h, ["host-a", "host-b"][i]] as const)) {
    const agent = await agentClients[name].getHostStatus();
    assert.equal(host.backup?.projects, agent.projects, `${name}: the agent's own count`);
  }
});

test("a move followed to the end through a cut stream: every entry once, the files on B are A's", { timeout: 60_000 }, async () => {
  const files = { ...randomFiles("src", 12), "README.md": Buffer.from("moved by the TypeScript SDK\n") };
  const projectId = await addProject("host-a", files);
  const before = readTree(agents["host-a"].home(projectId));
  assert.equal(before.size, 13);

  const requestId = randomUUID();
  const started = await hub.startMove({ request_id: requestId, project_id: projectId, target_host: "host-b" });
  assert.equal((await hub.startMove({ request_id: requestId, project_id: projectId, target_host: "host-b" })).id,
    started.id, "the same request finds the same move");
  // ALREADY_EXISTS: the request id under other parameters names the move, read from ErrorInfo.
  const reused = await rejection(() => hub.startMove({ request_id: requestId, project_id: projectId, target_host: "host-a" }));
  assert.equal(reused.codeName, "ALREADY_EXISTS");
  assert.equal(reused.reason, "REQUEST_ID_REUSED");
  assert.equal(reused.metadata.job_id, started.id);

  // Followed through a proxy whose connections are cut after the first entry: the follower reopens.
  const proxy = await new CuttableProxy(hubProcess.port).listen();
  const viaProxy = new HubClient({ target: proxy.target, retry: { initialBackoffMs: 50 } });
  const reconnects: bigint[] = [];
  const followed: LogEntry__Output[] = [];
  try {
    for await (const entry of viaProxy.followMoveLog(started.id, 1n, (from) => reconnects.push(from))) {
      followed.push(entry);
      if (followed.length === 1) proxy.cut();
    }
  } finally {
    viaProxy.close();
    await proxy.close();
  }
  assert.ok(reconnects.length >= 1, "the cut stream was reopened");
  assert.deepEqual(seqs(followed), oneToN(followed.length), "a gap or a duplicate in the followed log");
  assert.ok(followed.some((e) => e.kind === "complete"), keys(followed).join("\n"));

  let moved = await hub.getMove(started.id);
  assert.equal(moved.status, "JOB_SUCCEEDED", moved.error);
  // The source's cleanup goes on after "complete" and logs entries of its own: the log is read
  // for comparison once it has ended, so the follower (which may have ended before them) saw a
  // prefix of it.
  for (let i = 0; i < 300 && moved.cleanup === "pending"; i += 1) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    moved = await hub.getMove(started.id);
  }
  // What was followed is the log as one uncut FollowLog stream gives it, read raw (no follower),
  // to the stream's own end: the same entries, any later ones only the cleanup's; from the
  // middle, the rest.
  const raw = await collect(rawLog(started.id));
  assert.deepEqual(keys(followed), keys(raw).slice(0, followed.length));
  const completeAt = raw.findIndex((e) => e.kind === "complete");
  assert.ok(completeAt >= 0 && completeAt < followed.length, keys(raw).join("\n"));
  const middle = Math.ceil(raw.length / 2);
  assert.deepEqual(keys(await collect(hub.followMoveLog(started.id, middle))), keys(raw.slice(middle - 1)));
  // From past the end: nothing, and the follower ends (the service ends the stream at once).
  assert.deepEqual(await collect(hub.followMoveLog(started.id, raw.length + 1)), []);

  // Ground truth: B has the bytes the test wrote on A; the hub and B agree the project is there.
  assert.deepEqual(readTree(agents["host-b"].home(projectId)), before);
  assert.equal((await hub.getProject(projectId)).host_id, "host-b");
  assert.ok((await agentClients["host-b"].getProjectStatus(projectId)).present);
});

test("a directory copied between two projects on two hosts", { timeout: 60_000 }, async () => {
  const source = await addProject("host-a", randomFiles("data", 8));
  const target = await addProject("host-b", { "keep.txt": Buffer.from("target's own\n") });
  const data = readTree(path.join(agents["host-a"].home(source), "data"));

  const started = await hub.startCopy({ source_project: source, source_path: "data", target_project: target,
    target_path: "incoming/data", on_conflict: "FAIL" });
  const entries = await collect(hub.followCopyLog(started.id));
  assert.deepEqual(seqs(entries), oneToN(entries.length));
  assert.equal((await hub.getCopy(started.id)).status, "JOB_SUCCEEDED");
  assert.deepEqual(readTree(path.join(agents["host-b"].home(target), "incoming", "data")), data);
  assert.deepEqual(readTree(path.join(agents["host-a"].home(source), "data")), data, "the source is untouched");
  assert.equal(fs.readFileSync(path.join(agents["host-b"].home(target), "keep.txt"), "utf8"), "target's own\n");
});

test("ABORTED, ALREADY_EXISTS and FAILED_PRECONDITION carry their ids in ErrorInfo", { timeout: 60_000 }, async () => {
  const added = await hub.addHost({ host_id: "host-gone", address: "127.0.0.1:9", region: "eu" });
  assert.ok(added.probed && !added.reachable);
  const files = randomFiles("stay", 4);
  const projectId = await addProject("host-a", files);
  const before = readTree(agents["host-a"].home(projectId));

  // A move to a host that does not answer fails and stays active: it holds the project.
  const first = await hub.startMove({ project_id: projectId, target_host: "host-gone" });
  assert.equal((await hub.waitMove(first.id)).status, "JOB_FAILED");
  const aborted = await rejection(() => hub.startMove({ project_id: projectId, target_host: "host-b" }));
  assert.equal(aborted.codeName, "ABORTED");
  assert.equal(aborted.reason, "MOVE_IN_PROGRESS");
  assert.equal(aborted.metadata.move_id, first.id);
  assert.equal(aborted.metadata.project_id, projectId);
  assert.equal((await hub.cancelMove(first.id)).status, "JOB_CANCELLED");
  assert.deepEqual(readTree(agents["host-a"].home(projectId)), before, "the failed move left the project as it was");

  // ALREADY_EXISTS on a copy: the request id under other parameters names the copy.
  const copy = await hub.startCopy({ request_id: `copy-${projectId}`, source_project: projectId, source_path: "stay",
    target_project: projectId, target_path: "stay-copy", on_conflict: "FAIL" });
  const reused = await rejection(() => hub.startCopy({ request_id: `copy-${projectId}`, source_project: projectId,
    source_path: "stay", target_project: projectId, target_path: "elsewhere", on_conflict: "FAIL" }));
  assert.equal(reused.codeName, "ALREADY_EXISTS");
  assert.equal(reused.reason, "REQUEST_ID_REUSED");
  assert.equal(reused.metadata.job_id, copy.id);
  assert.equal((await hub.waitCopy(copy.id)).status, "JOB_SUCCEEDED");

  // FAILED_PRECONDITION: a host that projects name is not removed.
  const inUse = await rejection(() => hub.removeHost("host-a"));
  assert.equal(inUse.codeName, "FAILED_PRECONDITION");
  assert.equal(inUse.reason, "HOST_IN_USE");
  assert.equal(inUse.metadata.host_id, "host-a");
  assert.equal((await hub.getHost("host-a")).status, "running");
});

test("drain a host (every dirty project backed up, per its agent), then undrain", { timeout: 60_000 }, async () => {
  const projectId = await addProject("host-a", { "dirty.txt": Buffer.from("not backed up yet\n") });
  const report = await hub.drainHost("host-a", 2, { deadlineMs: 55_000 });
  assert.equal(report.failed, 0, JSON.stringify(report));
  const outcome = report.outcomes.find((o) => o.project_id === projectId);
  assert.ok(outcome && outcome.state === "SUCCEEDED" && outcome.snapshot_id, JSON.stringify(report.outcomes));
  const status = await agentClients["host-a"].getProjectStatus(projectId);
  assert.ok(!status.dirty && status.last_backup_snapshot_id.startsWith(outcome.snapshot_id.slice(0, 8)),
    JSON.stringify(status));
  assert.equal((await hub.getHost("host-a")).status, "draining");
  assert.equal((await hub.undrainHost("host-a")).status, "running");
});

test("LogEnd decides the end as hub_client/service/logs.py does", () => {
  const fromStart = new LogEnd(1n);
  fromStart.opened();
  fromStart.job("JOB_FAILED");
  assert.equal(fromStart.ended(), false, "no ending entry given yet");
  for (const [kind, ended] of [["step", false], ["failed", true], ["attempt", false], ["step", false],
    ["complete", true], ["frozen", true]] as const) {
    fromStart.entry(kind);
    assert.equal(fromStart.ended(), ended, `after ${kind}`);
  }
  const later = new LogEnd(7n); // what came before seq 7 is unknown here
  later.opened();
  later.job("JOB_RUNNING");
  assert.equal(later.ended(), false);
  later.opened();
  later.job("JOB_SUCCEEDED");
  assert.equal(later.ended(), true, "the service's word: the ending entry lies before from_seq");
  later.entry("attempt");
  assert.equal(later.ended(), false, "a new attempt seen: its ending entry is awaited");
});
