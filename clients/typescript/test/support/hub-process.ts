// A real hub service for the tests, started as tests/hub_process.py HubProcess starts one:
// `python -m hub_client.service.cli --config <tmp>/hub.toml serve` from the repository root, a
// temporary SQLite store, 127.0.0.1 with a port the OS picks (read from its port file). Stopped
// with its whole process group, also when a test fails or the runner exits.

import { ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

import { PYTHON, REPO_ROOT, track, untrack } from "./agent-process";

export class HubProcess {
  readonly base: string;
  readonly logPath: string;
  readonly configPath: string;
  child: ChildProcess | undefined;
  port = 0;

  /** `extra`: TOML appended to the config (e.g. an [agents] table). */
  constructor(readonly extra = "") {
    this.base = fs.mkdtempSync(path.join(os.tmpdir(), "buckets-ts-hub-"));
    this.logPath = path.join(this.base, "hub.log");
    this.configPath = path.join(this.base, "hub.toml");
  }

  get target(): string {
    return `127.0.0.1:${this.port}`;
  }

  async start(timeoutMs = 30_000): Promise<this> {
    const portFile = path.join(this.base, "hub.port");
    fs.writeFileSync(this.configPath, `
store = "${path.join(this.base, "hub.sqlite")}"
keepalive_interval = 0.5

[server]
listen = "127.0.0.1:0"
port_file = "${portFile}"
grace_period = 2
${this.extra}
`);
    const log = fs.openSync(this.logPath, "a");
    this.child = spawn(PYTHON, ["-m", "hub_client.service.cli", "--config", this.configPath, "serve"], {
      cwd: REPO_ROOT, stdio: ["ignore", log, log], detached: true,
    });
    fs.closeSync(log);
    track(this.child, this.configPath);
    const deadline = Date.now() + timeoutMs;
    while (!fs.existsSync(portFile) || fs.readFileSync(portFile, "utf8").trim() === "") {
      if (this.child.exitCode !== null) throw new Error(`the hub exited with ${this.child.exitCode}:\n${this.logTail()}`);
      if (Date.now() > deadline) throw new Error(`the hub did not start:\n${this.logTail()}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    this.port = Number(fs.readFileSync(portFile, "utf8").trim());
    return this;
  }

  logTail(lines = 40): string {
    try {
      return fs.readFileSync(this.logPath, "utf8").split("\n").slice(-lines).join("\n");
    } catch {
      return "";
    }
  }

  /** SIGKILL the hub's process group and remove its files. */
  stop(): void {
    if (this.child !== undefined) untrack(this.child);
    fs.rmSync(this.base, { recursive: true, force: true });
  }
}
