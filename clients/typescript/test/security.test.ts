// TLS (mTLS) and bearer tokens from the SDK against a real agent that requires both, and the
// refusals' ErrorInfo (UNAUTHENTICATED, PERMISSION_DENIED naming the role the method needs).

import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, test } from "node:test";

import * as grpc from "@grpc/grpc-js";

import { AgentClient, BucketsError, ClientOptions, tlsFromFiles } from "../src";
import { AgentProcess } from "./support/agent-process";
import { makePki, Pki } from "./support/pki";

let agent: AgentProcess;
let pki: Pki;
let dir: string;
const operator = randomBytes(18).toString("base64url");
const reader = randomBytes(18).toString("base64url");
const clients: AgentClient[] = [];

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "buckets-ts-pki-"));
  pki = makePki(dir);
  const tokens = path.join(dir, "tokens");
  fs.writeFileSync(tokens, `operator ${operator}\nread-only ${reader}\n`, { mode: 0o600 });
  agent = await new AgentProcess("secured", `
[server.tls]
cert_file = "${pki.hostCert}"
key_file = "${pki.hostKey}"
client_ca_file = "${pki.hubCa}"

[auth]
tokens_file = "${tokens}"
`).start();
});

after(() => {
  for (const client of clients) client.close();
  agent?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

function connect(options: Partial<ClientOptions>): AgentClient {
  const client = new AgentClient({ target: agent.target, deadlineMs: 15_000, retry: { attempts: 1 }, ...options });
  clients.push(client);
  return client;
}

const mtls = () => tlsFromFiles({ caFile: pki.hostCa, certFile: pki.hubCert, keyFile: pki.hubKey });

async function rejection(call: () => Promise<unknown>): Promise<BucketsError> {
  try {
    await call();
  } catch (error) {
    assert.ok(error instanceof BucketsError, `not a BucketsError: ${error}`);
    return error;
  }
  assert.fail("the call did not fail");
}

test("mTLS with a token: calls and streams pass; a read-only token may follow but not start", { timeout: 60_000 },
  async () => {
    const hub = connect({ tls: mtls(), token: operator });
    const capabilities = await hub.getCapabilities();
    assert.equal(capabilities.host_id, "ts-secured");

    const projectId = randomUUID();
    const ensured = await hub.ensureProject({ project_id: projectId, mode: "NONE" });
    const readOnly = connect({ tls: mtls(), token: reader });
    const events = [];
    for await (const event of readOnly.progress(ensured.id)) events.push(event); // StreamProgress sends the token
    assert.equal(events[events.length - 1].state, "SUCCEEDED");

    const denied = await rejection(() => readOnly.backup({ project_id: projectId }));
    assert.equal(denied.code, grpc.status.PERMISSION_DENIED);
    assert.equal(denied.reason, "PERMISSION_DENIED");
    assert.deepEqual([denied.metadata.method, denied.metadata.required_role, denied.metadata.role],
      ["Backup", "operator", "read-only"]);
    assert.deepEqual(await hub.listOperations({ project_id: projectId }).then((ops) => ops.map((o) => o.kind)),
      ["OPERATION_KIND_ENSURE"]);
  });

test("no token or a wrong one is UNAUTHENTICATED; no client certificate gets no answer", { timeout: 60_000 },
  async () => {
    for (const token of [undefined, "not-a-token-of-this-agent-00"]) {
      const refused = await rejection(() => connect({ tls: mtls(), token }).getHostStatus());
      assert.equal(refused.code, grpc.status.UNAUTHENTICATED);
      assert.equal(refused.reason, "UNAUTHENTICATED");
    }
    const noCertificate = await rejection(() =>
      connect({ tls: tlsFromFiles({ caFile: pki.hostCa }), token: operator }).getHostStatus());
    assert.equal(noCertificate.code, grpc.status.UNAVAILABLE);
    assert.equal(noCertificate.reason, "");
    const plaintext = await rejection(() => connect({ token: operator }).getHostStatus());
    assert.equal(plaintext.code, grpc.status.UNAVAILABLE);
  });
