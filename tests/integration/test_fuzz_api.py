"""Fuzzing the live gRPC API of a real agent process with hypothesis (issue 9).

One agent (directory backend, local repositories: the harness's default config) serves the
whole module, with real projects so that valid-looking input reaches deep code paths:

- A: files, a binary file, a fifo, relative/dangling/looping symlinks and symlinks leading out
  of the project (``escape`` → the sentinel tree, ``escape-file`` → a file in it, ``up`` → the
  projects root); backed up twice, so snapshot ids, browse and restore cases are real;
- B: files, never backed up;
- C: a disposable project (the only real project DeleteProject may name);
- D: backed up once, the only real project Forget may name;
- NEW: two project ids that do not exist yet, the only ones (with the nil UUID) EnsureProject
  may create.

Every RPC of the Agent service (the list comes from the proto descriptor; an RPC without a
strategy fails ``test_every_rpc_has_a_strategy``) gets requests that are mostly invalid or
nearly valid (garbage, huge and unicode strings, NUL, paths leading out, bad page tokens,
out-of-range enum numbers and integers, bogus repository specs, unknown fields or bytes that
break the encoding appended to the encoded message) and some valid for the real projects. The
RPCs that start operations run last (A thawed first), so that their engine runs do not slow the
browse cases. The properties:

- no call ends INTERNAL or UNKNOWN, none runs into its deadline (DEADLINE_EXCEEDED fails: every
  call here is answered at once or runs one small engine command);
- the agent is still alive and SERVING afterwards;
- nothing outside the agent's directories changed: the sentinel tree (reachable through the
  symlinks in A) is compared after every case and at the end, and the agent's base directory
  holds nothing unexpected (project directories only of ids that may exist, no staging left);
- every operation the fuzzer started ends in a terminal state, and none failed INTERNAL;
- nothing was logged at level error, no traceback, no engine file (password file) left in
  state/tmp, no staging or restore view left, A, B and D and the repositories of A and D exist.

Destructive valid calls, and how they are kept harmless (by construction of the strategies):

- DeleteProject never names A, B or D (only C, NEW, random ids and spellings of A, B, D that
  do not name them: an upper-case UUID does), and its repository spec never names a real
  repository: deleting a real project or repository is the API working;
- Forget never names A (browse and restore cases need A's snapshots); D is its project;
- Restore over A is allowed: every snapshot of A is of A itself (the fixture's backups and the
  fuzzer's own), so a whole restore puts back a tree A had (no check depends on A's content), and
  a restore of a path writes inside A or is refused; B has no snapshots of its own;
- a repository spec never names an existing writable directory (the agent, trusted with an
  absolute repository path by design, would initialise a repository there): local paths are
  relative, empty, NUL-bearing, huge, uncreatable (/proc, /dev/null/…), a file, or a real
  repository with a wrong password; S3 endpoints are 127.0.0.1 only (no DNS, no network).

``BUCKETS_FUZZ_EXAMPLES`` sets the number of cases (default 2,200, spread over the RPCs);
generation is derandomised and uses no example database, so CI runs the same cases every time.
The terminal summary prints the cases and status codes per RPC (tests/fuzz_report.py).
"""

from __future__ import annotations

import base64
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub_client.proto.buckets.v1 import agent_pb2 as pb
from tests import fuzz_report
from tests.conftest import requires_restic
from tests.harness import TERMINAL_STATES, AgentProcess, create_project, manifest, new_id

pytestmark = [requires_restic, pytest.mark.fuzz]

SERVICE = pb.DESCRIPTOR.services_by_name["Agent"]
METHODS = [method.name for method in SERVICE.methods]
# RPCs that start an operation (they take a request id): fuzzed last, so that the engine runs they
# start do not slow the browse cases, and the last test waits for them all.
STARTS_OPERATION = {m.name for m in SERVICE.methods if "request_id" in m.input_type.fields_by_name}
TOTAL_EXAMPLES = int(os.environ.get("BUCKETS_FUZZ_EXAMPLES", "2200"))
CALL_TIMEOUT = 30.0  # seconds; DEADLINE_EXCEEDED is a failure
STREAM_MESSAGES = 4  # StreamProgress: read this many updates, then hang up
STAGING_NAME = re.compile(r"\.buckets-[a-z]+-[0-9a-f-]{36}")
FORBIDDEN = {"INTERNAL", "UNKNOWN", "DEADLINE_EXCEEDED"}
# Only a full operation queue is RESOURCE_EXHAUSTED; elsewhere it was a status message too long
# for the caller's metadata limit (an echoed 64 KiB id), which hides the real code.
FORBIDDEN_OUTSIDE_OPERATIONS = FORBIDDEN | {"RESOURCE_EXHAUSTED"}

NIL_UUID = str(uuid.UUID(int=0))
HUGE = "x" * 65536
HUGE_UNICODE = "é😀" * 12000  # ~72 KiB of UTF-8
ODD = [
    "", " ", "\x00", "a\x00b", "\n", "\t", ".", "..", "/", "\\", "ü", "😀", "\u202e", "\ufeff", "%s%n%x",
    "' OR 1=1 --", "${HOME}", "$(id)", "`id`", "-rf", "--help", "-", "*", "?", "~", "null", "None", "0", "-1",
    "a" * 201, "a" * 4097, HUGE, HUGE_UNICODE,
]


# ---------------------------------------------------------------- the world the fuzzer works in


@dataclass
class World:
    agent: AgentProcess
    a: str
    b: str
    c: str
    d: str
    new: tuple[str, ...]
    a_snapshots: list[str]
    d_snapshots: list[str]
    outside: Path
    outside_manifest: dict  # taken before the agent first ran
    a_file: Path  # a regular file in the agent's base dir (a repository path that is not a directory)
    list_files_tokens: list[str]
    list_operations_tokens: list[str]
    list_snapshots_tokens: list[str]
    # Grow during the run: what the fuzzer got back, to feed later cases.
    operation_ids: list[str] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)  # operations the fuzzer started
    setup_names: set[str] = field(default_factory=set)

    @property
    def projects(self) -> list[str]:
        return [self.a, self.b, self.c, self.d]


def _outside_tree(root: Path) -> None:
    """The sentinel tree outside the agent's directories: files, a directory, a symlink."""
    (root / "sub").mkdir(parents=True)
    (root / "secret.txt").write_text("outside the agent: must never change\n")
    (root / "sub" / "inner.txt").write_text("inner\n")
    (root / "link").symlink_to("secret.txt")
    (root / "secret.txt").chmod(0o640)


def _decorate_a(agent: AgentProcess, project: str, outside: Path) -> None:
    home, persist = agent.home(project), agent.persist(project)
    (home / "docs" / "sub").mkdir(parents=True)
    (home / "docs" / "readme.txt").write_text("hello from A\n")
    (home / "docs" / "sub" / "deep.txt").write_text("deep\n" * 50)
    (home / "binary.dat").write_bytes(bytes(range(256)) * 8)
    (home / "ünïcødé.txt").write_text("unicode name\n")
    (home / "rel-link").symlink_to("docs/readme.txt")
    (home / "dangling").symlink_to("does-not-exist")
    (home / "loop-a").symlink_to("loop-b")
    (home / "loop-b").symlink_to("loop-a")
    (home / "escape").symlink_to(outside)
    (home / "escape-file").symlink_to(outside / "secret.txt")
    (home / "up").symlink_to("..")
    os.mkfifo(home / "fifo")
    (persist / "escape").symlink_to(outside)


def _backed_up(agent: AgentProcess, project: str) -> str:
    operation = agent.wait(agent.backup(project, force=True).id)
    assert operation.state == pb.SUCCEEDED, operation
    return operation.summary.snapshot_id


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """One agent for the module (directory backend, local repositories) with the projects A to D
    (see the module docstring), and what the fuzzer needs to know about them."""
    base = tmp_path_factory.mktemp("fuzz-agent")
    outside = tmp_path_factory.mktemp("fuzz-outside")
    _outside_tree(outside)
    outside_manifest = manifest(outside)
    agent = AgentProcess(base=base / "agent")
    agent.start()
    try:
        a, b, c, d = (create_project(agent, files=6, size=256) for _ in range(4))
        _decorate_a(agent, a, outside)
        a_snapshots = [_backed_up(agent, a)]
        (agent.home(a) / "docs" / "readme.txt").write_text("hello again from A\n")
        a_snapshots.append(_backed_up(agent, a))
        d_snapshots = [_backed_up(agent, d)]
        a_file = agent.base / "not-a-directory"
        a_file.write_text("a file where a repository directory is expected\n")
        stub = agent.stub
        files = stub.ListFiles(pb.ListFilesRequest(project_id=a, snapshot_id=a_snapshots[-1], path="project",
                                                   depth=3, page_size=2), timeout=CALL_TIMEOUT)
        operations = stub.ListOperations(pb.ListOperationsRequest(page_size=1), timeout=CALL_TIMEOUT)
        snapshots = stub.ListSnapshots(pb.ListSnapshotsRequest(project_id=a, page_size=1), timeout=CALL_TIMEOUT)
        assert files.next_page_token and operations.next_page_token and snapshots.next_page_token
        known = [op.id for op in stub.ListOperations(pb.ListOperationsRequest(page_size=100),
                                                      timeout=CALL_TIMEOUT).operations]
        built = World(
            agent=agent, a=a, b=b, c=c, d=d, new=(new_id(), new_id()), a_snapshots=a_snapshots,
            d_snapshots=d_snapshots, outside=outside, outside_manifest=outside_manifest, a_file=a_file,
            list_files_tokens=[files.next_page_token],
            list_operations_tokens=[operations.next_page_token],
            list_snapshots_tokens=[snapshots.next_page_token],
            operation_ids=known, request_ids=[new_id()],
        )
        built.setup_names = {p.name for p in agent.base.iterdir()}
        yield built
    finally:
        agent.stop()
        agent.kill()


# ---------------------------------------------------------------- strategies: building blocks


def growing(items: list[str]) -> st.SearchStrategy[str]:
    """One element of a list that grows during the run (read when the case is drawn)."""
    return st.integers(0, 2**16).map(lambda index: items[index % len(items)])


def garbage() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(ODD),
        st.text(max_size=40),
        st.binary(max_size=24).map(lambda raw: raw.decode("latin-1")),
    )


def uuid_variants(value: str) -> list[str]:
    """Nearly valid spellings of a project id."""
    return [
        value.upper(), value.replace("-", ""), "{" + value + "}", "urn:uuid:" + value, value + " ", " " + value,
        value[:-1], value + "0", value + "\x00", "project-" + value, "../project-" + value, value.replace("-", "/"),
        value[:8] + "-" + value[9:].replace("-", ""), value.replace("a", "g").replace("b", "g"),
        value + "/../" + value, value * 2,
    ]


def other_spellings(value: str) -> list[str]:
    """The nearly valid spellings of ``value`` that do not name it: the agent takes an upper-case
    UUID as the same project, so a protected project's upper-case id is no spelling to fuzz with."""
    return [v for v in uuid_variants(value) if v.lower() != value]


def project_ids(pool: list[str], *, random_uuids: bool = True) -> st.SearchStrategy[str]:
    options = [
        st.sampled_from(pool),
        st.sampled_from(pool).flatmap(lambda value: st.sampled_from(uuid_variants(value))),
        garbage(),
        st.just(NIL_UUID),
    ]
    if random_uuids:
        options.append(st.uuids().map(str))
    return st.one_of(*options)


def request_ids(world: World) -> st.SearchStrategy[str]:
    return st.one_of(
        st.uuids().map(str),
        st.uuids().map(str),
        growing(world.request_ids),  # a reuse: the same operation, or ALREADY_EXISTS
        st.sampled_from(["", "x" * 200, "x" * 201, "ü" * 200, "\x00", "a\x00b", HUGE, " ", "drain-x"]),
        st.text(min_size=1, max_size=30),
    )


HOME_NAMES = [
    "docs", "docs/readme.txt", "docs/sub", "docs/sub/deep.txt", "binary.dat", "ünïcødé.txt", "rel-link",
    "dangling", "loop-a", "loop-a/x", "escape", "escape/", "escape/secret.txt", "escape/new.txt", "escape/sub",
    "escape-file", "up", "up/x", "up/.staging", "fifo", "fifo/x", "docs/readme.txt/x", "new-dir/new.txt", "new.txt",
    "docs/../escape", "./docs", "docs//sub", "docs/./sub", ".buckets-copy-x", ".staging", "app.db",
]
PATH_EDGES = [
    "", ".", "./", "..", "../x", "a/../../b", "x/..", "/etc", "/etc/passwd", "/", "//", "/proc/self/root",
    "\x00", "docs\x00", "docs/\x00/x", "x" * 255, "x" * 256, "x" * 300, "x" * 300 + "/y", "a/" * 2100,
    "é" * 200, "é" * 3000, "-rf", "--help", " ", "~", "~/x", "$HOME", "*", "docs/*", "\\..\\x", "x\ny",
    HUGE, HUGE_UNICODE,
]


def home_paths() -> st.SearchStrategy[str]:
    """Paths relative to a project home: real entries, escapes, edge cases, random ones."""
    return st.one_of(
        st.sampled_from(HOME_NAMES),
        st.sampled_from(PATH_EDGES),
        st.lists(st.sampled_from(["docs", "sub", "..", ".", "", "escape", "up", "x", "readme.txt", "ü", "fifo"]),
                 min_size=1, max_size=6).map("/".join),
        st.text(max_size=30),
    )


def snapshot_paths() -> st.SearchStrategy[str]:
    """Paths relative to a snapshot's roots ("project/...", "persist/...")."""
    return st.one_of(
        home_paths().map(lambda path: "project/" + path),
        home_paths().map(lambda path: "persist/" + path),
        st.sampled_from(["project", "persist", "project/", "persist/escape/x", "persist/app.db", "other/x"]),
        home_paths(),
    )


def snapshot_ids(snapshots: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(snapshots),
        st.sampled_from(snapshots).flatmap(lambda s: st.sampled_from(
            [s[:8], s[:7], s[:12], s.upper(), s + "0", s + "\x00", " " + s, s[:-1] + "g", "-" + s[:8]])),
        st.sampled_from(["latest", "LATEST", "latest ", "", "0" * 8, "f" * 64, "f" * 65, "deadbeef"]),
        st.text(alphabet="0123456789abcdef", max_size=70),
        garbage(),
    )


def tokens(valid: list[str]) -> st.SearchStrategy[str]:
    """Page tokens: valid, truncated or altered valid ones, base64 garbage, random."""
    def altered(token: str) -> st.SearchStrategy[str]:
        return st.one_of(
            st.integers(0, max(len(token) - 1, 0)).map(lambda n: token[:n]),
            st.just(token + "x"), st.just(token + "=="), st.just(token.upper()), st.just(token[::-1]),
        )

    return st.one_of(
        st.sampled_from(valid),
        st.sampled_from(valid).flatmap(altered),
        st.binary(max_size=60).map(lambda raw: base64.urlsafe_b64encode(raw).decode()),
        st.sampled_from([
            base64.urlsafe_b64encode(b'{"v":1,"l":"x","k":["a"],"n":0}').decode(),
            base64.urlsafe_b64encode(b'{"v":1,"l":"x","k":[1],"n":-1}').decode(),
            base64.urlsafe_b64encode(b'[' * 5000 + b']' * 5000).decode(),
            base64.urlsafe_b64encode(b'{"v":true}').decode(),
            "0", "1", "-1", "1.5", "1e400", "nan", "inf", "-inf", "nan:x", "inf:", "1e400:x", ":", "1:", ":x",
            "99999999999999999999999999", "1_000", " 1", "١", "0x10", "\x00", HUGE,
        ]),
        garbage(),
    )


INT32 = st.integers(-(2**31), 2**31 - 1)
UINT32 = st.one_of(st.sampled_from([0, 1, 2, 3, 10, 100, 1000, 10_000, 10_001, 2**31 - 1, 2**31, 2**32 - 1]),
                   st.integers(0, 2**32 - 1))
INT64 = st.one_of(st.sampled_from([0, 1, -1, 4096, 4097, 2**31, -(2**31), 2**62, 2**63 - 1, -(2**63)]),
                  st.integers(-(2**63), 2**63 - 1))


def enum_values(enum) -> st.SearchStrategy[int]:
    """The enum's values and numbers it does not know (proto3 open enums carry them)."""
    return st.one_of(st.sampled_from(list(enum.values())), st.sampled_from([-1, 99, 2**31 - 1, -(2**31)]), INT32)


def passwords(world: World) -> st.SearchStrategy[str]:
    return st.one_of(st.just(""), st.just("wrong-password"), garbage())


def wrong_passwords(world: World) -> st.SearchStrategy[str]:
    real = (world.agent.state_dir / "repository.password").read_text().strip()
    return st.one_of(st.just("wrong-password"), garbage().filter(lambda p: p and p != real))


S3_ENDPOINTS = [
    "http://127.0.0.1:1", "https://127.0.0.1:1", "http://127.0.0.1:1/", "http://127.0.0.1:1/path?q=1",
    "http://127.0.0.1:99999", "http://[::1", "http://[::1]:1", "ftp://127.0.0.1:1", "127.0.0.1:1", "http://",
    "http://127.0.0.1:1\x00", "http://user:pw@127.0.0.1:1", "s3:http://127.0.0.1:1",
]


def repositories(world: World, *, real_repositories: list[Path]) -> st.SearchStrategy[pb.RepositorySpec | None]:
    """None (the agent's configured repository), specs without location (a password only), and
    bogus locations; ``real_repositories`` only with a wrong password. Never an existing writable
    directory, never a host name (see the module docstring)."""
    local_paths = st.one_of(
        st.sampled_from(["", "relative/repo", "repo", ".", "..", "./x", "/proc/buckets-fuzz/repo",
                         "/proc/buckets-fuzz", "/dev/null/repo", "/proc/buckets-fuzz/\x00", "/" + "x" * 70000,
                         "/proc/buckets-fuzz/" + "é" * 300, "/proc/buckets-fuzz/" + "x" * 5000, str(world.a_file),
                         str(world.a_file) + "/repo"]),
        st.text(max_size=30).map(lambda text: "rel/" + text),
        st.text(max_size=30).map(lambda text: "/proc/buckets-fuzz/" + text),
    )
    local = st.builds(pb.RepositorySpec, local=st.builds(pb.LocalRepository, path=local_paths),
                      password=passwords(world))
    real = st.builds(pb.RepositorySpec, local=st.builds(pb.LocalRepository, path=st.sampled_from(
        [str(path) for path in real_repositories] or ["/proc/buckets-fuzz"])), password=wrong_passwords(world))
    s3 = st.builds(
        pb.RepositorySpec,
        s3=st.builds(
            pb.S3Repository,
            endpoint=st.sampled_from(S3_ENDPOINTS),
            region=st.one_of(st.sampled_from(["", "us-east-1", "auto", "EU", "../x"]), garbage()),
            bucket=st.one_of(st.sampled_from(["", "b", "bucket", "Bucket_Upper", "a" * 64, "x/y", "buckets-fuzz"]),
                             garbage()),
            root=st.one_of(st.sampled_from(["", "rustic/project-x", "/", "../../etc", "a//b"]), garbage()),
            access_key_id=st.one_of(st.just(""), st.just("AKIAFUZZ"), garbage()),
            secret_access_key=st.one_of(st.just(""), st.just("secret"), garbage()),
        ),
        password=passwords(world),
    )
    password_only = st.builds(pb.RepositorySpec, password=passwords(world))
    return st.one_of(st.none(), st.none(), password_only, local, real, s3)


def timestamps() -> st.SearchStrategy[Timestamp | None]:
    return st.one_of(
        st.none(),
        st.builds(Timestamp, seconds=st.integers(0, 2_000_000_000), nanos=st.integers(0, 999_999_999)),
        st.builds(Timestamp, seconds=st.sampled_from([-1, -62135596800, -62135596801, 253402300799, 253402300800,
                                                      2**62, -(2**62), 2**63 - 1, -(2**63)]),
                  nanos=st.sampled_from([0, -1, 999_999_999, 1_000_000_000, 2**31 - 1, -(2**31)])),
        st.builds(Timestamp, seconds=INT64, nanos=INT32),
    )


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def unknown_fields() -> st.SearchStrategy[bytes]:
    """Well-formed fields with numbers the messages do not define (proto3 keeps and ignores them)."""
    number = st.one_of(st.sampled_from([100, 1000, 2**29 - 1]), st.integers(100, 2**29 - 1))
    varint_field = st.tuples(number, st.integers(0, 2**64 - 1)).map(
        lambda nv: _varint(nv[0] << 3 | 0) + _varint(nv[1]))
    bytes_field = st.tuples(number, st.binary(max_size=40)).map(
        lambda nb: _varint(nb[0] << 3 | 2) + _varint(len(nb[1])) + nb[1])
    return st.lists(st.one_of(varint_field, bytes_field), max_size=3).map(b"".join)


MALFORMED = [
    b"\xff\xff\xff", b"\x12\x05ab", b"\x0a\x02\xc3\x28", b"\x08", b"\x80" * 11, b"\x0b", b"\x0a\xff\xff\xff\xff\x0f",
    b"\x00", b"\x0f",
]


def tails() -> st.SearchStrategy[bytes]:
    """What follows the encoded request: nothing, unknown fields, or bytes that make it no valid
    message (a truncated field, a bad tag, a string that is not UTF-8, random bytes)."""
    malformed = st.one_of(st.sampled_from(MALFORMED), st.binary(min_size=1, max_size=16))
    return st.one_of(st.just(b""), st.just(b""), st.just(b""), st.just(b""), unknown_fields(), malformed)


# ---------------------------------------------------------------- strategies: one per RPC

STRATEGIES: dict[str, tuple[type, Callable[[World], st.SearchStrategy]]] = {}


def strategy_for(method: str, message: type):
    def register(build: Callable[[World], st.SearchStrategy]):
        STRATEGIES[method] = (message, build)
        return build

    return register


@strategy_for("Backup", pb.BackupRequest)
def _backup(w: World):
    valid = st.builds(
        pb.BackupRequest, request_id=st.uuids().map(str), project_id=st.sampled_from([w.a, w.b, *w.new]),
        force=st.booleans(), purpose=st.sampled_from(["", "backup", "copy", "move"]),
        tags=st.sampled_from([[], ["k=v"], ["ticket=42", "who=fuzz"]]),
        subpath=st.sampled_from(["", "docs", "docs/readme.txt", "rel-link", "binary.dat"]),
    )
    fuzzed = st.builds(
        pb.BackupRequest, request_id=request_ids(w), project_id=project_ids([w.a, w.b, *w.new]),
        repository=repositories(w, real_repositories=[w.agent.repository(w.a)]), force=st.booleans(),
        purpose=st.one_of(st.sampled_from(["", "backup", "copy", "move", "Backup", "restore"]), garbage()),
        tags=st.lists(st.one_of(st.sampled_from(["k=v", "=v", "k=", "k", "layout=v1", "project=x", "a=b,c",
                                                 "k=v=w", "ü=ü", "k=\x00"]), garbage()), max_size=4),
        subpath=home_paths(),
    )
    return st.one_of(valid, fuzzed, fuzzed, fuzzed)


@strategy_for("Restore", pb.RestoreRequest)
def _restore(w: World):
    snapshots = st.sampled_from([*w.a_snapshots, "latest", w.a_snapshots[0][:8]])
    whole = st.builds(pb.RestoreRequest, request_id=st.uuids().map(str), project_id=st.sampled_from([w.a, w.b]),
                      snapshot_id=snapshots, force=st.booleans())
    path = st.builds(
        pb.RestoreRequest, request_id=st.uuids().map(str), project_id=st.sampled_from([w.a, w.b]),
        snapshot_id=snapshots, source_project_id=st.just(w.a),
        subpath=st.sampled_from(["docs", "docs/readme.txt", "rel-link", "escape", "escape-file", "up", "dangling",
                                 "fifo", "loop-a", "ünïcødé.txt", "missing"]),
        target_path=st.sampled_from(["", "restored", "restored/deeper/x", "docs", "docs/readme.txt", "escape/x",
                                     "up/x", "escape", "escape-file", "dangling", "fifo", "fifo/x", "loop-a/x"]),
        on_conflict=st.sampled_from(list(pb.ConflictPolicy.values())),
    )
    fuzzed = st.builds(
        pb.RestoreRequest, request_id=request_ids(w), project_id=project_ids([w.a, w.b, w.d]),
        repository=repositories(w, real_repositories=[w.agent.repository(w.a)]),
        snapshot_id=snapshot_ids(w.a_snapshots + w.d_snapshots), subpath=home_paths(), target_path=home_paths(),
        source_project_id=st.one_of(st.just(""), project_ids([w.a, w.b, w.d])),
        on_conflict=enum_values(pb.ConflictPolicy),
    )
    return st.one_of(whole, path, path, fuzzed, fuzzed, fuzzed)


@strategy_for("UndoRestore", pb.UndoRestoreRequest)
def _undo_restore(w: World):
    valid = st.builds(pb.UndoRestoreRequest, request_id=st.uuids().map(str), project_id=st.sampled_from([w.a, w.b]),
                      restore_operation_id=st.one_of(st.just(""), st.uuids().map(str)))
    fuzzed = st.builds(pb.UndoRestoreRequest, request_id=request_ids(w), project_id=project_ids(w.projects),
                       restore_operation_id=st.one_of(operation_ids(w), garbage(), st.just("../../etc")))
    return st.one_of(valid, fuzzed, fuzzed)


@strategy_for("Verify", pb.VerifyRequest)
def _verify(w: World):
    valid = st.builds(
        pb.VerifyRequest, request_id=st.uuids().map(str), project_id=st.sampled_from([w.a, w.d]),
        mode=st.sampled_from([pb.VerifyRequest.REPOSITORY, pb.VerifyRequest.READ_DATA, pb.VerifyRequest.SENTINEL]),
        read_data_subset=st.sampled_from(["", "1/10", "50%"]),
        sentinel_path=st.sampled_from(["project/docs/readme.txt", "persist/app.db", "project/fifo",
                                       "project/escape-file", "project/escape/secret.txt", "project/loop-a"]),
        sentinel_content=st.sampled_from(["hello again from A\n", "", "x"]),
    )
    fuzzed = st.builds(
        pb.VerifyRequest, request_id=request_ids(w), project_id=project_ids([w.a, w.b, w.d]),
        repository=repositories(w, real_repositories=[w.agent.repository(w.a)]),
        mode=enum_values(pb.VerifyRequest.Mode),
        read_data_subset=st.one_of(st.sampled_from(["1/10", "0/10", "11/10", "1/0", "-1/2", "50%", "0%", "101%",
                                                    "1.5%", "%", "/", "1/", "99999999999999999999/1"]), garbage()),
        snapshot_id=snapshot_ids(w.a_snapshots), sentinel_path=snapshot_paths(),
        sentinel_content=st.one_of(st.text(max_size=20), st.sampled_from(["x" * 4096, "x" * 4097, "é" * 2049])),
    )
    return st.one_of(valid, fuzzed, fuzzed, fuzzed)


@strategy_for("EnsureProject", pb.EnsureProjectRequest)
def _ensure(w: World):
    pool = [w.a, w.b, w.d, *w.new]
    valid = st.builds(
        pb.EnsureProjectRequest, request_id=st.uuids().map(str), project_id=st.sampled_from(pool),
        mode=st.sampled_from(list(pb.EnsureProjectRequest.Mode.values())),
    )
    fuzzed = st.builds(
        pb.EnsureProjectRequest, request_id=request_ids(w), project_id=project_ids(pool, random_uuids=False),
        repository=repositories(w, real_repositories=[w.agent.repository(w.a)]),
        mode=enum_values(pb.EnsureProjectRequest.Mode), quota_bytes=INT64,
        snapshot_id=st.one_of(st.just(""), snapshot_ids(w.a_snapshots + w.d_snapshots)),
        precopy_key=st.one_of(st.just(""), precopy_keys()),
    )
    return st.one_of(valid, fuzzed, fuzzed, fuzzed)


def precopy_keys() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(["move-1", "a:b.c_d-e", "x" * 64, "x" * 65, "a/b", ".."]), garbage())


@strategy_for("PreCopy", pb.PreCopyRequest)
def _precopy(w: World):
    # Never one that succeeds (its staging would stay for the move): A, B and D are present here,
    # and a snapshot of A or D is not one of any other project.
    pool = [w.a, w.b, w.d, *w.new]
    valid = st.builds(
        pb.PreCopyRequest, request_id=st.uuids().map(str), project_id=st.sampled_from(pool),
        snapshot_id=st.sampled_from(w.a_snapshots + w.d_snapshots), key=st.sampled_from(["move-1", "m:2"]),
    )
    fuzzed = st.builds(
        pb.PreCopyRequest, request_id=request_ids(w), project_id=project_ids(pool, random_uuids=False),
        repository=repositories(w, real_repositories=[w.agent.repository(w.a)]),
        snapshot_id=snapshot_ids(w.a_snapshots + w.d_snapshots), key=precopy_keys(),
    )
    return st.one_of(valid, fuzzed, fuzzed, fuzzed)


@strategy_for("Drain", pb.DrainRequest)
def _drain(w: World):
    valid = st.builds(pb.DrainRequest, request_id=st.uuids().map(str), concurrency=st.integers(0, 3))
    fuzzed = st.builds(pb.DrainRequest, request_id=request_ids(w), concurrency=UINT32,
                       repository=repositories(w, real_repositories=[w.agent.repository(w.a)]))
    return st.one_of(valid, fuzzed, fuzzed, fuzzed, fuzzed, fuzzed)


@strategy_for("DeleteProject", pb.DeleteProjectRequest)
def _delete(w: World):
    # Never A, B or D, and never a real repository (see the module docstring).
    pool = [w.c, *w.new]
    safe_ids = st.one_of(st.sampled_from(pool), st.uuids().map(str), garbage(),
                         st.sampled_from([w.a, w.b, w.d]).flatmap(lambda v: st.sampled_from(other_spellings(v))))
    return st.builds(
        pb.DeleteProjectRequest, request_id=request_ids(w), project_id=safe_ids,
        repository=repositories(w, real_repositories=[]), delete_repository=st.booleans(),
    )


@strategy_for("Forget", pb.ForgetRequest)
def _forget(w: World):
    # Never A (see the module docstring): D is Forget's real project.
    keep = st.one_of(st.just(0), st.just(0), UINT32)
    ids_ = st.lists(snapshot_ids(w.d_snapshots + w.a_snapshots), max_size=3)
    valid = st.builds(
        pb.ForgetRequest, request_id=st.uuids().map(str), project_id=st.just(w.d), keep_last=st.integers(0, 3),
        keep_daily=st.integers(0, 2), prune=st.booleans(),
        protected_snapshot_ids=st.sampled_from([[], [w.d_snapshots[0][:8]]]),
    )
    fuzzed = st.builds(
        pb.ForgetRequest, request_id=request_ids(w), project_id=st.one_of(
            st.sampled_from([w.b, w.d, *w.new]), st.uuids().map(str), garbage(),
            st.sampled_from(other_spellings(w.a))),
        repository=repositories(w, real_repositories=[w.agent.repository(w.d)]),
        keep_last=keep, keep_hourly=keep, keep_daily=keep, keep_weekly=keep, keep_monthly=keep,
        prune=st.booleans(), protected_snapshot_ids=ids_, snapshot_ids=st.one_of(
            ids_, st.just([w.d_snapshots[0]] * 1001), st.just([w.a_snapshots[0]])),
    )
    return st.one_of(valid, fuzzed, fuzzed, fuzzed)


@strategy_for("CopyFiles", pb.CopyFilesRequest)
def _copy(w: World):
    pool = [w.a, w.b, *w.new]
    valid = st.builds(
        pb.CopyFilesRequest, request_id=st.uuids().map(str), source_project_id=st.sampled_from([w.a, w.b]),
        source_path=st.sampled_from(["docs", "docs/readme.txt", "rel-link", "binary.dat", "fifo", "dangling",
                                     "escape", "escape-file", "up", "escape/secret.txt"]),
        target_project_id=st.sampled_from([w.a, w.b]),
        target_path=st.sampled_from(["copied", "copied/deeper/x", "docs", "docs/sub/inner", "escape/x", "up/x",
                                     "escape", "dangling"]),
        on_conflict=st.sampled_from(list(pb.ConflictPolicy.values())),
    )
    fuzzed = st.builds(
        pb.CopyFilesRequest, request_id=request_ids(w), source_project_id=project_ids(pool),
        source_path=home_paths(), target_project_id=project_ids(pool), target_path=home_paths(),
        on_conflict=enum_values(pb.ConflictPolicy),
    )
    return st.one_of(valid, fuzzed, fuzzed, fuzzed)


@strategy_for("CheckCopyTarget", pb.CheckCopyTargetRequest)
def _check_copy_target(w: World):
    nearly = st.builds(pb.CheckCopyTargetRequest, project_id=st.sampled_from([w.a, w.b]),
                       target_path=st.sampled_from(HOME_NAMES),
                       on_conflict=st.sampled_from(list(pb.ConflictPolicy.values())))
    fuzzed = st.builds(pb.CheckCopyTargetRequest, project_id=project_ids(w.projects), target_path=home_paths(),
                       on_conflict=enum_values(pb.ConflictPolicy))
    return st.one_of(nearly, fuzzed)


def operation_ids(w: World) -> st.SearchStrategy[str]:
    return st.one_of(growing(w.operation_ids), growing(w.operation_ids), st.uuids().map(str),
                     growing(w.operation_ids).flatmap(lambda v: st.sampled_from(uuid_variants(v))), garbage())


@strategy_for("StreamProgress", pb.StreamProgressRequest)
def _stream(w: World):
    return st.builds(pb.StreamProgressRequest, operation_id=operation_ids(w), from_seq=INT64)


@strategy_for("GetOperation", pb.GetOperationRequest)
def _get_operation(w: World):
    return st.builds(pb.GetOperationRequest, operation_id=operation_ids(w))


@strategy_for("ListOperations", pb.ListOperationsRequest)
def _list_operations(w: World):
    nearly = st.builds(
        pb.ListOperationsRequest, project_id=st.sampled_from(["", *w.projects]),
        states=st.lists(st.sampled_from(list(pb.OperationState.values())), max_size=3),
        page_size=st.sampled_from([0, 1, 2, 1000, 1001, 2**32 - 1]),
        page_token=st.one_of(st.just(""), growing(w.list_operations_tokens)),
    )
    fuzzed = st.builds(
        pb.ListOperationsRequest, project_id=st.one_of(st.just(""), project_ids(w.projects)),
        states=st.lists(enum_values(pb.OperationState), max_size=4), page_size=UINT32,
        page_token=st.one_of(st.just(""), tokens(w.list_operations_tokens)),
    )
    return st.one_of(nearly, fuzzed)


@strategy_for("CancelOperation", pb.CancelOperationRequest)
def _cancel(w: World):
    return st.builds(pb.CancelOperationRequest, operation_id=operation_ids(w))


@strategy_for("GetProjectStatus", pb.GetProjectStatusRequest)
def _project_status(w: World):
    return st.builds(pb.GetProjectStatusRequest, project_id=project_ids(w.projects))


@strategy_for("GetHostStatus", pb.GetHostStatusRequest)
def _host_status(w: World):
    return st.just(pb.GetHostStatusRequest())  # nothing to vary but the unknown fields added to every case


@strategy_for("GetCapabilities", pb.GetCapabilitiesRequest)
def _capabilities(w: World):
    return st.just(pb.GetCapabilitiesRequest())


@strategy_for("ListProjects", pb.ListProjectsRequest)
def _list_projects(w: World):
    return st.just(pb.ListProjectsRequest())  # nothing to vary but the unknown fields added to every case


@strategy_for("ListSnapshots", pb.ListSnapshotsRequest)
def _list_snapshots(w: World):
    nearly = st.builds(
        pb.ListSnapshotsRequest, project_id=st.sampled_from(w.projects),
        page_size=st.sampled_from([0, 1, 2, 1000, 1001, 2**32 - 1]),
        page_token=st.one_of(st.just(""), tokens(w.list_snapshots_tokens)),
    )
    fuzzed = st.builds(
        pb.ListSnapshotsRequest, project_id=project_ids(w.projects),
        repository=repositories(w, real_repositories=[w.agent.repository(w.a)]), page_size=UINT32,
        page_token=st.one_of(st.just(""), tokens(w.list_snapshots_tokens)),
    )
    return st.one_of(nearly, fuzzed)


BROWSE_PATHS = [
    "", "project", "project/", "persist", "project/docs", "project/docs/sub", "project/docs/readme.txt",
    "project/docs/sub/deep.txt", "project/rel-link", "project/escape", "project/escape/secret.txt",
    "project/escape-file", "project/loop-a", "project/dangling", "project/fifo", "project/binary.dat", "project/up",
    "project/up/x", "project/ünïcødé.txt", "project/missing", "persist/app.db", "persist/escape",
    "persist/escape/secret.txt", "project/docs/readme.txt/x",
]


READABLE = ["project/docs/readme.txt", "project/docs/sub/deep.txt", "project/rel-link", "project/binary.dat",
            "project/ünïcødé.txt", "persist/app.db"]


@strategy_for("ListFiles", pb.ListFilesRequest)
def _list_files(w: World):
    nearly = st.builds(
        pb.ListFilesRequest, project_id=st.just(w.a), snapshot_id=st.sampled_from([*w.a_snapshots, w.a_snapshots[0][:8]]),
        path=st.sampled_from(BROWSE_PATHS), depth=st.integers(0, 11),
        page_size=st.sampled_from([0, 1, 2, 3, 1000, 10_001, 2**32 - 1]),
        page_token=st.one_of(st.just(""), st.just(""), tokens(w.list_files_tokens)),
    )
    fuzzed = st.builds(
        pb.ListFilesRequest, project_id=project_ids(w.projects),
        repository=repositories(w, real_repositories=[w.agent.repository(w.a)]),
        snapshot_id=snapshot_ids(w.a_snapshots), path=snapshot_paths(), depth=st.one_of(st.integers(0, 11), UINT32),
        page_size=UINT32, page_token=st.one_of(st.just(""), tokens(w.list_files_tokens)),
    )
    return st.one_of(nearly, nearly, fuzzed)


@strategy_for("ReadFile", pb.ReadFileRequest)
def _read_file(w: World):
    nearly = st.builds(
        pb.ReadFileRequest, project_id=st.just(w.a), snapshot_id=st.sampled_from([*w.a_snapshots, w.a_snapshots[0][:8]]),
        path=st.one_of(st.sampled_from(READABLE), st.sampled_from(BROWSE_PATHS)),
        max_bytes=st.one_of(st.sampled_from([0, 1, 7, 4096, 2**63 - 1]), st.sampled_from([-1, -(2**63)])),
    )
    fuzzed = st.builds(
        pb.ReadFileRequest, project_id=project_ids(w.projects),
        repository=repositories(w, real_repositories=[w.agent.repository(w.a)]),
        snapshot_id=snapshot_ids(w.a_snapshots), path=snapshot_paths(), max_bytes=INT64,
    )
    return st.one_of(nearly, nearly, fuzzed)


@strategy_for("Freeze", pb.FreezeRequest)
def _freeze(w: World):
    contents = st.one_of(st.just(""), st.text(max_size=20), st.sampled_from(["x" * 4096, "x" * 4097, "é" * 2049, "\x00"]))
    nearly = st.builds(
        pb.FreezeRequest, project_id=st.sampled_from([w.a, w.b]),
        sentinel_path=st.sampled_from(["", "project/.move-sentinel", "persist/.move-sentinel", "project/new/dir/s",
                                       "project/docs/readme.txt", "project/docs", "project/fifo", "project/escape/x",
                                       "project/escape-file", "project/up/x", "persist/escape/x", "project/dangling",
                                       "project/loop-a", "project/rel-link", "persist/app.db/x"]),
        sentinel_content=contents,
        writers=st.sampled_from([pb.WRITER_POLICY_UNSPECIFIED, pb.WRITERS_STOP, pb.WRITERS_REFUSE, 3, -1, 2**31 - 1]),
    )
    fuzzed = st.builds(pb.FreezeRequest, project_id=project_ids(w.projects),
                       sentinel_path=st.one_of(st.just(""), snapshot_paths()), sentinel_content=contents,
                       writers=enum_values(pb.WriterPolicy))
    return st.one_of(nearly, fuzzed)


@strategy_for("Thaw", pb.ThawRequest)
def _thaw(w: World):
    return st.builds(pb.ThawRequest, project_id=project_ids(w.projects))


@strategy_for("MarkEdited", pb.MarkEditedRequest)
def _mark_edited(w: World):
    return st.builds(pb.MarkEditedRequest, project_id=project_ids(w.projects), time=timestamps())


# ---------------------------------------------------------------- running cases


# Relative shares of the cases: the browse RPCs run the engine for most valid-looking cases.
# A ReadFile of a real file runs restic two or three times (~0.5 s each: its key derivation).
WEIGHTS = {"ListFiles": 0.3, "ReadFile": 0.2, "ListSnapshots": 0.4}


def _examples_for(method: str) -> int:
    total_weight = sum(WEIGHTS.get(name, 1.0) for name in METHODS)
    return max(10, round(TOTAL_EXAMPLES * WEIGHTS.get(method, 1.0) / total_weight))


def call(world: World, method: str, request, extra: bytes) -> tuple[str, object]:
    """Send one request (its encoding plus ``extra`` unknown fields); return (code name, response)."""
    descriptor = SERVICE.methods_by_name[method]
    response_class = getattr(pb, descriptor.output_type.name)
    path = f"/{SERVICE.full_name}/{method}"
    payload = request.SerializeToString() + extra
    channel = world.agent.channel
    hung_up = False
    try:
        if descriptor.server_streaming:
            stream = channel.unary_stream(path, response_deserializer=response_class.FromString)(
                payload, timeout=CALL_TIMEOUT)
            updates = []
            for update in stream:
                updates.append(update)
                if len(updates) >= STREAM_MESSAGES:
                    hung_up = stream.cancel()
                    break
            return "OK", updates
        response = channel.unary_unary(path, response_deserializer=response_class.FromString)(
            payload, timeout=CALL_TIMEOUT)
        return "OK", response
    except grpc.RpcError as error:
        if error.code() is grpc.StatusCode.CANCELLED and hung_up:
            return "OK", None  # we hung up after STREAM_MESSAGES updates
        return error.code().name, error


def _learn(world: World, request, response) -> None:
    if isinstance(response, pb.Operation) and response.id:
        if response.id not in world.operation_ids:
            world.operation_ids.append(response.id)
            world.started.append(response.id)
        if response.request_id and response.request_id not in world.request_ids:
            world.request_ids.append(response.request_id)
    elif isinstance(response, pb.ListOperationsResponse) and response.next_page_token:
        if len(world.list_operations_tokens) < 20:
            world.list_operations_tokens.append(response.next_page_token)


def test_every_rpc_has_a_strategy():
    """A new RPC without a strategy fails here; each strategy builds the RPC's own request type."""
    assert METHODS, "no methods in the Agent service descriptor"
    missing = [method for method in METHODS if method not in STRATEGIES]
    assert not missing, f"RPCs without a fuzz strategy: {missing}"
    assert not set(STRATEGIES) - set(METHODS), "strategies of RPCs the service no longer has"
    for method in METHODS:
        message, _ = STRATEGIES[method]
        assert message.DESCRIPTOR.full_name == SERVICE.methods_by_name[method].input_type.full_name, method


def _code(call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def test_what_the_fuzzer_found_stays_fixed(world: World):
    """The fuzzer's findings against the live agent (tests/unit/test_fuzz_findings.py: the units)."""
    stub, a, b, t = world.agent.stub, world.a, world.b, CALL_TIMEOUT
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    # An out-of-range MarkEdited time was INTERNAL (Timestamp.ToDatetime raised).
    assert _code(lambda: stub.MarkEdited(pb.MarkEditedRequest(project_id=b, time=Timestamp(seconds=2**62)),
                                         timeout=t)) == invalid
    assert _code(lambda: stub.MarkEdited(pb.MarkEditedRequest(project_id=b, time=Timestamp(nanos=-1)),
                                         timeout=t)) == invalid
    # A 64 KiB id echoed in the status message passed grpc's metadata limit: RESOURCE_EXHAUSTED.
    for huge in (HUGE, HUGE_UNICODE):
        assert _code(lambda: stub.GetOperation(pb.GetOperationRequest(operation_id=huge), timeout=t)) == \
            grpc.StatusCode.NOT_FOUND
    # A password that is a common word masked restic's message before it was classified: INTERNAL.
    for password in (" ", "password", "o"):
        spec = pb.RepositorySpec(password=password)
        assert _code(lambda: stub.ListSnapshots(pb.ListSnapshotsRequest(project_id=a, repository=spec),
                                                timeout=t)) == grpc.StatusCode.FAILED_PRECONDITION
    # Repository specs restic cannot parse or use were INTERNAL.
    for spec in (
        pb.RepositorySpec(password="a\x00b"),
        pb.RepositorySpec(local=pb.LocalRepository(path=str(world.a_file)), password="pw-12345678"),
        pb.RepositorySpec(local=pb.LocalRepository(path="/" + "x" * 70000), password="pw-12345678"),
        pb.RepositorySpec(s3=pb.S3Repository(endpoint="http://[::1", bucket="bucket", root="r", access_key_id="k",
                                             secret_access_key="s"), password="pw-12345678"),
        pb.RepositorySpec(s3=pb.S3Repository(endpoint="http://127.0.0.1:1", bucket="bucket", root="r\x19",
                                             access_key_id="k", secret_access_key="s"), password="pw-12345678"),
        pb.RepositorySpec(s3=pb.S3Repository(endpoint="http://127.0.0.1:1", bucket="bucket", root="r",
                                             access_key_id="k"), password="pw-12345678"),
    ):
        assert _code(lambda: stub.ListSnapshots(pb.ListSnapshotsRequest(project_id=a, repository=spec),
                                                timeout=t)) == invalid
    # A name longer than NAME_MAX reached os.open / os.lstat: ENAMETOOLONG, INTERNAL.
    assert _code(lambda: stub.Freeze(pb.FreezeRequest(project_id=b, sentinel_path="project/" + "x" * 300),
                                     timeout=t)) == invalid
    assert _code(lambda: stub.Backup(pb.BackupRequest(request_id=new_id(), project_id=a, subpath="x" * 300),
                                     timeout=t)) == invalid
    # Request bytes that are no valid message failed in grpc's deserializer: UNKNOWN.
    channel = world.agent.channel
    for payload in MALFORMED[:3]:
        assert _code(lambda: channel.unary_unary("/buckets.v1.Agent/GetOperation")(payload, timeout=t)) == invalid
        assert _code(lambda: list(channel.unary_stream("/buckets.v1.Agent/StreamProgress")(payload, timeout=t))) \
            == invalid
    # A local repository that cannot be created failed the operation INTERNAL.
    spec = pb.RepositorySpec(local=pb.LocalRepository(path="/proc/buckets-fuzz/regression"), password="pw-12345678")
    operation = stub.Backup(pb.BackupRequest(request_id=new_id(), project_id=a, repository=spec), timeout=t)
    world.started.append(operation.id)
    final = world.agent.wait(operation.id)
    assert (final.state, final.error.code) == (pb.FAILED, "FAILED_PRECONDITION"), final.error


def _agent_alive(world: World) -> None:
    agent = world.agent
    assert agent.process.poll() is None, f"the agent died:\n{agent.log_tail()}"


@pytest.mark.parametrize("method", sorted(METHODS, key=lambda name: name in STARTS_OPERATION))
def test_fuzz_rpc(world: World, method: str):
    message, build = STRATEGIES[method]  # KeyError: an RPC without a strategy
    strategy = build(world)
    forbidden = FORBIDDEN if method in STARTS_OPERATION else FORBIDDEN_OUTSIDE_OPERATIONS
    if method in STARTS_OPERATION:
        # Freeze ran before: A thawed, so that operation cases on it get past the freeze check
        # (B stays as the Freeze and Thaw cases left it).
        assert world.agent.home(world.a).is_dir(), "project A is gone: a destructive case was not excluded"
        world.agent.stub.Thaw(pb.ThawRequest(project_id=world.a), timeout=CALL_TIMEOUT)
    started = time.monotonic()

    @settings(max_examples=_examples_for(method), deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(request=strategy, extra=tails())
    def case(request, extra):
        assert isinstance(request, message)
        code, response = call(world, method, request, extra)
        fuzz_report.record(method, code)
        if code == "OK":
            _learn(world, request, response)
        shown = str(request)[:600]
        assert code not in forbidden, f"{method} answered {code}: {getattr(response, 'details', lambda: '')()}\n" \
                                      f"request: {shown}"
        _agent_alive(world)
        assert manifest(world.outside) == world.outside_manifest, f"{method} changed the tree outside: {shown}"

    try:
        case()
    finally:
        fuzz_report.SECONDS[method] = fuzz_report.SECONDS.get(method, 0.0) + time.monotonic() - started


# ---------------------------------------------------------------- after the run


def _wait_terminal(world: World, timeout: float = 120.0) -> list[pb.Operation]:
    stub = world.agent.stub
    deadline = time.monotonic() + timeout
    while True:
        live = stub.ListOperations(pb.ListOperationsRequest(
            states=[pb.PENDING, pb.RUNNING, pb.CANCELLING], page_size=1000), timeout=CALL_TIMEOUT).operations
        if not live or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not live, f"operations never ended: {[(op.id, pb.OperationState.Name(op.state)) for op in live]}"
    return [stub.GetOperation(pb.GetOperationRequest(operation_id=op_id), timeout=CALL_TIMEOUT)
            for op_id in world.started]


def _expected_projects(world: World) -> set[str]:
    """Project directories that may exist: the fixture's, and those EnsureProject may create (the
    nil UUID is among its nearly-valid ids)."""
    return {f"project-{p}" for p in (*world.projects, *world.new, NIL_UUID)}


def test_fuzz_left_the_agent_and_host_sound(world: World):
    """After every case: the agent serves, every started operation ended (none INTERNAL), nothing
    outside the agent changed, and its base directory holds only what may be there."""
    agent = world.agent
    _agent_alive(world)
    health = health_pb2_grpc.HealthStub(agent.channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == \
        health_pb2.HealthCheckResponse.SERVING
    operations = _wait_terminal(world)
    for operation in operations:
        assert operation.state in TERMINAL_STATES
        fuzz_report.OPERATIONS[(pb.OperationKind.Name(operation.kind), pb.OperationState.Name(operation.state),
                                operation.error.code)] += 1
    internal = [(op.id, pb.OperationKind.Name(op.kind), op.error.message) for op in operations
                if op.error.code in ("INTERNAL", "UNKNOWN")]
    assert not internal, f"operations failed INTERNAL: {internal}"

    assert manifest(world.outside) == world.outside_manifest
    for project in (world.a, world.b, world.d):  # what no destructive case may name
        assert agent.home(project).is_dir(), f"project {project} is gone"
    for project in (world.a, world.d):
        assert (agent.repository(project) / "config").is_file(), f"the repository of {project} is gone"

    names = {p.name for p in agent.base.iterdir()}
    assert names <= world.setup_names, f"unexpected in the agent's base dir: {names - world.setup_names}"
    expected = _expected_projects(world)
    assert not (left := agent.staging_after_cleanup()), f"staging left behind: {left}"
    for root in (agent.projects_root, agent.persist_root):
        for entry in root.iterdir():
            if entry.name == ".staging":
                continue
            if entry.name == ".undo":  # trees whole restores replaced, kept for UndoRestore: agent-only
                assert entry.is_dir() and not entry.is_symlink() and entry.stat().st_mode & 0o077 == 0, entry
                continue
            assert entry.name in expected and entry.is_dir() and not entry.is_symlink(), entry
    for home in agent.projects_root.glob("project-*"):
        leftovers = [p for p in home.rglob(".buckets-*") if STAGING_NAME.fullmatch(p.name)]
        assert not leftovers, f"placement staging left behind: {leftovers}"
    for kept in ("repos", "views", "frozen"):  # per project; no restore view of an ended operation
        directory = agent.state_dir / kept
        if directory.exists():
            assert {p.name for p in directory.iterdir()} <= expected, kept
    assert not list((agent.state_dir / "tmp").iterdir()), "engine files (password files) left behind"
    # Nothing failed out of sight (a background task, a log line of the grpc library).
    errors_logged = [e for e in agent.log_events() if e.get("level") in ("error", "critical")]
    assert not errors_logged, errors_logged[:3]
    assert "Traceback" not in agent.log_path.read_text(errors="replace")
    _agent_alive(world)
