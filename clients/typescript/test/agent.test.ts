// The SDK against a real agent (started here): operations with progress, a dropped progress
// stream resumed without gap or duplicate, browsing, restore, and errors read from ErrorInfo.
// Outcomes are checked against what the test wrote and against a full replay of the agent's
// journal, not against the SDK's own report.

import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, test } from "node:test";

import * as grpc from "@grpc/grpc-js";

import { AgentClient, BucketsError, OK_STATES, toBigInt } from "../src";
import type { ProgressEvent__Output } from "../src/generated/buckets/v1/ProgressEvent";
import { AgentProcess } from "./support/agent-process";
import { CuttableProxy } from "./support/proxy";

let agent: AgentProcess;
let client: AgentClient;

before(async () => {
  agent = await new AgentProcess().start();
  client = new AgentClient({ target: agent.target, deadlineMs: 60_000 });
});

after(() => {
  client?.close();
  agent?.stop();
});

async function newProject(files: Record<string, string | Buffer>): Promise<string> {
  const projectId = randomUUID();
  const ensured = await client.wait((await client.ensureProject({ project_id: projectId, mode: "NONE" })).id);
  assert.equal(ensured.state, "SUCCEEDED", JSON.stringify(ensured.error));
  for (const [name, content] of Object.entries(files)) {
    const file = path.join(agent.home(projectId), name);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, content);
  }
  return projectId;
}

function bigFiles(count: number, bytes: number): Record<string, Buffer> {
  return Object.fromEntries(Array.from({ length: count }, (_, i) => [`data/blob-${i}.bin`, randomBytes(bytes)]));
}

/** What identifies an event for comparing two readings of one operation's log. */
const key = (event: ProgressEvent__Output) =>
  [event.seq, event.state, event.phase, event.message, event.bytes_done, event.terminal].join("|");

async function rejection(call: () => Promise<unknown>): Promise<BucketsError> {
  try {
    await call();
  } catch (error) {
    assert.ok(error instanceof BucketsError, `not a BucketsError: ${error}`);
    return error;
  }
  assert.fail("the call did not fail");
}

test("back up following the progress to the end, list, browse and restore", { timeout: 60_000 }, async () => {
  const projectId = await newProject({ "a.txt": "alpha\n", "dir/b.txt": "beta\n", ...bigFiles(4, 256 * 1024) });
  const started = await client.backup({ project_id: projectId });
  assert.equal(started.project_id, projectId);

  const events: ProgressEvent__Output[] = [];
  for await (const event of client.progress(started.id)) events.push(event);
  assert.deepEqual(events.map((e) => toBigInt(e.seq)), events.map((_, i) => BigInt(i + 1)));
  const last = events[events.length - 1];
  assert.equal(last.terminal, true);
  assert.equal(last.state, "SUCCEEDED", JSON.stringify(last));
  assert.equal(typeof last.bytes_done, "string"); // int64 as a decimal string
  const snapshotId = last.summary!.snapshot_id;
  assert.match(snapshotId, /^[0-9a-f]{64}$/);

  const final = await client.getOperation(started.id);
  assert.equal(final.state, "SUCCEEDED");
  assert.equal(toBigInt(final.last_seq), toBigInt(last.seq));

  const snapshots = await client.listSnapshots({ project_id: projectId });
  assert.deepEqual(snapshots.map((s) => s.id), [snapshotId]);

  const entries = await client.listFiles({ project_id: projectId, snapshot_id: snapshotId, path: "project", depth: 2 });
  const names = entries.map((e) => e.path);
  assert.ok(names.some((p) => p.endsWith("a.txt")) && names.some((p) => p.endsWith("dir/b.txt")), names.join(", "));
  const read = await client.readFile({ project_id: projectId, snapshot_id: snapshotId, path: "project/a.txt" });
  assert.equal(Buffer.from(read.content).toString(), "alpha\n");
  assert.equal(toBigInt(read.size), 6n);

  fs.writeFileSync(path.join(agent.home(projectId), "a.txt"), "changed after the backup\n");
  fs.rmSync(path.join(agent.home(projectId), "dir"), { recursive: true });
  const restored = await client.wait((await client.restore({
    project_id: projectId, snapshot_id: snapshotId, force: true })).id);
  // force restores over the unsaved change without a pre-restore snapshot, and warns so.
  assert.ok(OK_STATES.has(restored.state), JSON.stringify(restored));
  assert.equal(fs.readFileSync(path.join(agent.home(projectId), "a.txt"), "utf8"), "alpha\n");
  assert.equal(fs.readFileSync(path.join(agent.home(projectId), "dir", "b.txt"), "utf8"), "beta\n");
});

test("a dropped progress stream is resumed from the last seq: no gap, no duplicate", { timeout: 60_000 }, async () => {
  const projectId = await newProject(bigFiles(24, 256 * 1024));
  const proxy = await new CuttableProxy(agent.port).listen();
  const viaProxy = new AgentClient({ target: proxy.target, deadlineMs: 30_000,
    retry: { initialBackoffMs: 50, maxBackoffMs: 200 } });
  try {
    const started = await viaProxy.backup({ project_id: projectId });
    const reconnects: bigint[] = [];
    const events: ProgressEvent__Output[] = [];
    for await (const event of viaProxy.progress(started.id, 1n, (from) => reconnects.push(from))) {
      events.push(event);
      if (events.length === 1) {
        assert.equal(event.terminal, false, "the first event ended the operation: nothing left to resume");
        proxy.cut(); // mid-stream: the next read fails and the follower reopens from seq 2
      }
    }
    // Events the cut connection had delivered before it broke are read first: the reopening
    // starts after them, before the terminal event.
    assert.ok(proxy.cuts === 1 && reconnects.length >= 1, `reconnects: ${reconnects}`);
    assert.ok(reconnects[0] >= 2n && reconnects[0] <= toBigInt(events[events.length - 1].seq), `${reconnects}`);

    // Ground truth: the agent's whole journal of the operation, read on a fresh direct stream.
    const replay: ProgressEvent__Output[] = [];
    for await (const event of client.progress(started.id, 1n)) replay.push(event);
    assert.deepEqual(events.map(key), replay.map(key));
    assert.equal(replay[replay.length - 1].terminal, true);
    assert.equal(replay[replay.length - 1].state, "SUCCEEDED");

    // From a seq in the middle: exactly the rest; past the end: nothing.
    const tail: ProgressEvent__Output[] = [];
    for await (const event of client.progress(started.id, replay[1].seq)) tail.push(event);
    assert.deepEqual(tail.map(key), replay.slice(1).map(key));
    const none: ProgressEvent__Output[] = [];
    for await (const event of client.progress(started.id, toBigInt(replay[replay.length - 1].seq) + 1n)) none.push(event);
    assert.deepEqual(none, []);
  } finally {
    viaProxy.close();
    await proxy.close();
  }
});

test("errors carry the ErrorInfo: ABORTED names the running operation, no text parsed", { timeout: 60_000 }, async () => {
  const projectId = await newProject(bigFiles(16, 256 * 1024));
  const requestId = randomUUID();
  const running = await client.backup({ project_id: projectId, request_id: requestId });
  // Hold the engine mid-run (SIGSTOP): the backup stays RUNNING however fast the machine is.
  let engine: number[] = [];
  const deadline = Date.now() + 30_000;
  while (engine.length === 0) {
    const state = (await client.getOperation(running.id)).state;
    assert.ok(state === "PENDING" || state === "RUNNING", `the backup ended (${state}) before its engine was caught`);
    assert.ok(Date.now() < deadline, "no restic backup process of the agent was seen");
    engine = agent.descendants("backup");
  }
  for (const pid of engine) process.kill(pid, "SIGSTOP");
  try {
    const aborted = await rejection(() => client.restore({ project_id: projectId, snapshot_id: "latest" }));
    assert.equal(aborted.code, grpc.status.ABORTED);
    assert.equal(aborted.codeName, "ABORTED");
    assert.equal(aborted.reason, "OPERATION_CONFLICT");
    assert.equal(aborted.domain, "buckets.v1");
    assert.equal(aborted.metadata.operation_id, running.id);
    assert.equal(aborted.metadata.operation_kind, "backup");
    assert.equal(aborted.metadata.project_id, projectId);
  } finally {
    for (const pid of engine) process.kill(pid, "SIGCONT");
  }
  assert.equal((await client.wait(running.id)).state, "SUCCEEDED");

  const reused = await rejection(() => client.backup({ project_id: projectId, request_id: requestId, force: true }));
  assert.equal(reused.code, grpc.status.ALREADY_EXISTS);
  assert.equal(reused.reason, "REQUEST_ID_REUSED");
  assert.deepEqual([reused.metadata.request_id, reused.metadata.operation_id], [requestId, running.id]);

  fs.writeFileSync(path.join(agent.home(projectId), "a.txt"), "a");
  fs.writeFileSync(path.join(agent.home(projectId), "b.txt"), "b");
  const exists = await rejection(() => client.copyFiles({ source_project_id: projectId, source_path: "a.txt",
    target_project_id: projectId, target_path: "b.txt", on_conflict: "FAIL" }));
  assert.equal(exists.code, grpc.status.FAILED_PRECONDITION);
  assert.equal(exists.reason, "TARGET_EXISTS");
  assert.equal(exists.metadata.path, "b.txt");
  assert.equal(fs.readFileSync(path.join(agent.home(projectId), "b.txt"), "utf8"), "b");

  const missing = "0123abcd".repeat(8);
  const notFound = await rejection(() => client.listFiles({ project_id: projectId, snapshot_id: missing, path: "project" }));
  assert.equal(notFound.code, grpc.status.NOT_FOUND);
  assert.equal(notFound.reason, "SNAPSHOT_NOT_FOUND");
  assert.equal(notFound.metadata.snapshot_id, missing);

  // Accepted, then failed by its job: the terminal event and the record carry the reason and ids.
  const restoring = await client.restore({ project_id: projectId, snapshot_id: missing });
  const restoreEvents: ProgressEvent__Output[] = [];
  for await (const event of client.progress(restoring.id)) restoreEvents.push(event);
  const terminal = restoreEvents[restoreEvents.length - 1];
  assert.deepEqual([terminal.state, terminal.error?.code, terminal.error?.reason, terminal.error?.metadata.snapshot_id],
    ["FAILED", "NOT_FOUND", "SNAPSHOT_NOT_FOUND", missing]);
  assert.equal((await client.getOperation(restoring.id)).error?.reason, "SNAPSHOT_NOT_FOUND");

  const unknownOperation = randomUUID();
  const noOperation = await rejection(() => client.getOperation(unknownOperation));
  assert.deepEqual([noOperation.reason, noOperation.metadata.operation_id], ["OPERATION_NOT_FOUND", unknownOperation]);
  const noStream = await rejection(async () => { for await (const _ of client.progress(unknownOperation)) { /* none */ } });
  assert.deepEqual([noStream.reason, noStream.metadata.operation_id], ["OPERATION_NOT_FOUND", unknownOperation]);

  // A status grpc makes itself (nothing listens) has no details: reason "", metadata {}.
  const nowhere = new AgentClient({ target: "127.0.0.1:1", deadlineMs: 5_000, retry: { attempts: 1 } });
  try {
    const unavailable = await rejection(() => nowhere.getCapabilities());
    assert.equal(unavailable.code, grpc.status.UNAVAILABLE);
    assert.deepEqual([unavailable.reason, unavailable.domain, unavailable.metadata], ["", "", {}]);
  } finally {
    nowhere.close();
  }
});
