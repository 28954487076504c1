// Throwaway certificates for the TLS tests, made by the repository's own test helper
// (tests/certs.py, the `cryptography` package of the venv): a host CA and the agent's server
// certificate for 127.0.0.1, a hub CA and a client certificate of it.

import { execFileSync } from "node:child_process";
import * as path from "node:path";

import { PYTHON, REPO_ROOT } from "./agent-process";

export interface Pki {
  hostCa: string;
  hostCert: string;
  hostKey: string;
  hubCa: string;
  hubCert: string;
  hubKey: string;
}

const MAKE = `
import sys
from pathlib import Path
from tests.certs import Pki, write
d = Path(sys.argv[1])
host, hub = Pki.new("host CA"), Pki.new("hub CA")
cert, key = host.issue("agent-host", dns=("localhost",), ips=("127.0.0.1",))
write(d / "host.pem", cert); write(d / "host.key", key); write(d / "host-ca.pem", host.ca_cert)
cert, key = hub.issue("hub", client=True)
write(d / "hub.pem", cert); write(d / "hub.key", key); write(d / "hub-ca.pem", hub.ca_cert)
`;

export function makePki(dir: string): Pki {
  execFileSync(PYTHON, ["-c", MAKE, dir], { cwd: REPO_ROOT, stdio: ["ignore", "inherit", "inherit"] });
  const at = (name: string) => path.join(dir, name);
  return { hostCa: at("host-ca.pem"), hostCert: at("host.pem"), hostKey: at("host.key"),
    hubCa: at("hub-ca.pem"), hubCert: at("hub.pem"), hubKey: at("hub.key") };
}
