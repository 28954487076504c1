// A real buckets agent for the tests, started as tests/harness.py AgentProcess starts one:
// `python -m agent serve --config <tmp>/agent.toml` from the repository root, on 127.0.0.1 with a
// port the OS picks (read from its port file), the directory backend and Debian's restic.
// Stopped with its whole process group, also when a test fails or the runner exits.

import { ChildProcess, spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

export const REPO_ROOT = path.resolve(__dirname, "..", "..", "..", "..", "..");
export const PYTHON = process.env.BUCKETS_PYTHON ?? path.join(REPO_ROOT, ".venv", "bin", "python");

const running = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of running) killGroup(child);
});

/** SIGKILL the process group `child` leads (started detached), unless it has exited. */
export function killGroup(child: ChildProcess): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, "SIGKILL");
  } catch {
    /* gone already */
  }
}

/** Detach every mount at or below `root`, deepest first (a directory-backend freeze's read-only
 * binds: a source a move froze and left, a move stopped mid-way), as tests/harness.py
 * unmount_below does. */
export function unmountBelow(root: string): void {
  if (!fs.existsSync(root)) return;
  const real = fs.realpathSync(root);
  const points = fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n")
    .map((line) => line.split(" ")[4])
    .filter((point): point is string => point !== undefined)
    .map((point) => point.replace(/\\([0-7]{3})/g, (_, octal) => String.fromCharCode(parseInt(octal, 8))))
    .filter((point) => point === real || point.startsWith(`${real}/`));
  for (const point of [...new Set(points)].sort((a, b) => b.length - a.length)) {
    spawnSync("umount", ["-l", point], { stdio: "ignore" });
  }
}

/**
 * Kill `child`'s process group when this process exits, and list it (pid and the config path its
 * command line names) in $BUCKETS_TS_PIDS_FILE: for a runner that kills this process (a timeout),
 * which process groups to stop then (tests/integration/test_typescript_sdk.py).
 */
export function track(child: ChildProcess, config: string): void {
  running.add(child);
  if (process.env.BUCKETS_TS_PIDS_FILE && child.pid !== undefined) {
    fs.appendFileSync(process.env.BUCKETS_TS_PIDS_FILE, `${child.pid} ${config}\n`);
  }
}

/** Stop tracking `child` after killing it. */
export function untrack(child: ChildProcess): void {
  killGroup(child);
  running.delete(child);
}

export class AgentProcess {
  readonly base: string;
  readonly logPath: string;
  child: ChildProcess | undefined;
  port = 0;

  /** `extra`: TOML appended to the config (e.g. [server.tls], [auth]); the agent's host_id is
   * `hostId` (default "ts-<name>"). */
  constructor(readonly name = "agent", readonly extra = "", readonly hostId = `ts-${name}`) {
    this.base = fs.mkdtempSync(path.join(os.tmpdir(), `buckets-ts-${name}-`));
    this.logPath = path.join(this.base, "agent.log");
  }

  get target(): string {
    return `127.0.0.1:${this.port}`;
  }

  get pid(): number {
    if (this.child?.pid === undefined) throw new Error("the agent is not running");
    return this.child.pid;
  }

  home(projectId: string): string {
    return path.join(this.base, "projects", `project-${projectId}`);
  }

  get configPath(): string {
    return path.join(this.base, "agent.toml");
  }

  async start(timeoutMs = 30_000): Promise<this> {
    const portFile = path.join(this.base, "agent.port");
    const config = path.join(this.base, "agent.toml");
    fs.writeFileSync(config, `
host_id = "${this.hostId}"
base_dir = "${this.base}"
backend = "directory"

[server]
listen = "127.0.0.1:0"
port_file = "${portFile}"
grace_period = 2.0
keepalive_interval = 0.5

[limits]
kill_grace = 2.0

[logging]
level = "debug"

[engine]
engine = "restic"
${this.extra}
`);
    const log = fs.openSync(this.logPath, "a");
    this.child = spawn(PYTHON, ["-m", "agent", "serve", "--config", config], {
      cwd: REPO_ROOT, stdio: ["ignore", log, log], detached: true,
    });
    fs.closeSync(log);
    track(this.child, config);
    const deadline = Date.now() + timeoutMs;
    while (!fs.existsSync(portFile) || fs.readFileSync(portFile, "utf8").trim() === "") {
      if (this.child.exitCode !== null) throw new Error(`the agent exited with ${this.child.exitCode}:\n${this.logTail()}`);
      if (Date.now() > deadline) throw new Error(`the agent did not start:\n${this.logTail()}`);
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

  /** SIGKILL the agent's process group (it and its engine children) and remove its files. */
  stop(): void {
    if (this.child !== undefined) untrack(this.child);
    unmountBelow(this.base);
    fs.rmSync(this.base, { recursive: true, force: true });
  }

  /** The pids of the agent's descendants whose argv contains every one of `words`. */
  descendants(...words: string[]): number[] {
    const parents = new Map<number, number>();
    for (const entry of fs.readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        const stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8");
        parents.set(Number(entry), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
      } catch {
        /* exited meanwhile */
      }
    }
    const below = (pid: number): boolean => {
      for (let p = parents.get(pid); p !== undefined && p > 1; p = parents.get(p)) if (p === this.pid) return true;
      return false;
    };
    return [...parents.keys()].filter((pid) => {
      if (!below(pid)) return false;
      try {
        const argv = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
        return words.every((word) => argv.includes(word));
      } catch {
        return false;
      }
    });
  }
}
