// Generate the TypeScript types of every service in protos/buckets/v1/*.proto (agent.proto,
// hub.proto once it lands) with the pinned @grpc/proto-loader's proto-loader-gen-types, and copy
// the .proto files into this package (protos/), where the runtime loader reads them.
// The options here must equal LOADER_OPTIONS in src/connection.ts.
"use strict";
const { execFileSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");

const PACKAGE = path.resolve(__dirname, "..");
const SOURCE = path.resolve(PACKAGE, "..", "..", "protos");
const VERSIONED = "buckets/v1";
const OUT = path.join(PACKAGE, "src", "generated");
const COPY = path.join(PACKAGE, "protos");

const files = fs.readdirSync(path.join(SOURCE, VERSIONED)).filter((n) => n.endsWith(".proto")).sort()
  .map((n) => `${VERSIONED}/${n}`);
if (files.length === 0) throw new Error(`no .proto file in ${path.join(SOURCE, VERSIONED)}`);

// Nothing to do when the package's copy of the protos equals protos/ and the types exist.
const same = (file) => {
  try {
    return fs.readFileSync(path.join(COPY, file)).equals(fs.readFileSync(path.join(SOURCE, file)));
  } catch {
    return false;
  }
};
const copied = fs.existsSync(path.join(COPY, VERSIONED)) ? fs.readdirSync(path.join(COPY, VERSIONED)).length : -1;
if (copied === files.length && files.every(same) && fs.existsSync(OUT)) {
  process.exit(0);
}

fs.rmSync(OUT, { recursive: true, force: true });
fs.rmSync(COPY, { recursive: true, force: true });
fs.mkdirSync(path.join(COPY, VERSIONED), { recursive: true });
for (const file of files) fs.copyFileSync(path.join(SOURCE, file), path.join(COPY, file));

const bin = path.join(PACKAGE, "node_modules", "@grpc", "proto-loader", "build", "bin", "proto-loader-gen-types.js");
// The files first: --includeDirs is an array option that would swallow what follows it.
execFileSync(process.execPath, [bin, ...files,
  "--keepCase", "--longs=String", "--enums=String", "--defaults", "--oneofs",
  "--grpcLib=@grpc/grpc-js", `--outDir=${OUT}`, `--includeDirs=${COPY}`], { stdio: "inherit" });
console.log(`generated types for ${files.join(", ")} in src/generated/`);
