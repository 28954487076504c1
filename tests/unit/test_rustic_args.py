"""Unit tests of agent.engine.rustic_args: profile, argv builders, parsers, classification.

No process is started here and no rustic binary was available: every sample
under samples/rustic/ is written by hand from the rustic / rustic_core sources
(samples/rustic/README.md names the source file behind each one), and each
test below names it again. Smaller hand-written samples are inline, each with
a comment naming the source that fixes their format.
"""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent import errors
from agent.engine import rustic_args as rua
from agent.engine.restic_args import BackupStatus, BackupSummary, Snapshot, tag_map
from agent.engine.rustic_args import (
    FEATURES_BY_VERSION,
    MIN_SUPPORTED_VERSION,
    STDERR_RULES,
    LocalRepository,
    Profile,
    S3Repository,
    backup_args,
    backup_source,
    check_args,
    check_restore_output,
    classify_failure,
    features,
    forget_args,
    glob_literal,
    init_args,
    interrupted_error,
    ls_args,
    parse_backup_output,
    parse_check_output,
    parse_ls,
    parse_progress_line,
    parse_snapshots,
    parse_version,
    profile_arg,
    prune_args,
    render_profile,
    restore_args,
    snapshots_args,
    tag_list,
    toml_string,
    version_args,
)

SAMPLES = Path(__file__).parent / "samples" / "rustic"
RUSTIC = "/usr/local/bin/rustic"
PROFILE = "/run/buckets/rustic/project-11111111.toml"
PREFIX = [RUSTIC, "-P", "/run/buckets/rustic/project-11111111", "--no-progress"]
SNAP = "9b56b604"
FULL_SNAP = "9b56b604c6a4cd07e6e3a0bd4e7c8a5d11c1b1e2f3a4b5c6d7e8f90a1b2c3d4e"
PROJECT = "11111111-2222-3333-4444-555555555555"
HOST = f"project-{PROJECT}"
V2_TAGS = ["layout=v2", f"project={PROJECT}", "purpose=backup", "op=op-1"]

OLD = features((0, 9, 0))
V095 = features((0, 9, 5))
NEW = features((0, 11, 4))


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


# --------------------------------------------------------------------------
# Versions and features
# --------------------------------------------------------------------------


def test_parse_version_sample_v0_9_5() -> None:
    # src/commands.rs: clap prints "rustic " + PROJECT_VERSION (the git tag)
    assert parse_version(sample("version_v0.9.5.stdout")) == (0, 9, 5)


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        ("rustic v0.9.5\n", (0, 9, 5)),
        ("rustic 0.10.3\n", (0, 10, 3)),  # `cargo install` build: CARGO_PKG_VERSION, no 'v'
        ("rustic v0.10.0-3-gabc1234\n", (0, 10, 0)),  # build past a tag (git describe)
        ("rustic v0.11.4", (0, 11, 4)),  # `rustic version` (v0.11.3+) prints the same line
        ("\x1b[0mrustic v0.11.3\n", (0, 11, 3)),
    ],
)
def test_parse_version_forms(stdout: str, expected: tuple[int, int, int]) -> None:
    assert parse_version(stdout) == expected


@pytest.mark.parametrize(
    "stdout", ["", "restic 0.14.0 compiled with go1.19.8 on linux/amd64", "rustic", "rustic vX.Y", "v0.9.5"]
)
def test_parse_version_garbage_raises_internal(stdout: str) -> None:
    with pytest.raises(errors.Internal):
        parse_version(stdout)


def test_feature_table() -> None:
    assert FEATURES_BY_VERSION == {
        "as-path": (0, 4, 0),
        "no-scan": (0, 7, 0),
        "read-data-subset": (0, 9, 1),
        "error-codes": (0, 9, 5),
        "snapshots-group-key-json": (0, 10, 0),
        "check-fails-on-errors": (0, 10, 1),
        "profile-toml-suffix": (0, 11, 1),
        "json-progress": (0, 11, 3),
        "version-command": (0, 11, 3),
        "restore-over": (0, 11, 4),
        "snapshot-diff": (0, 11, 4),
        "restore-paths": (0, 11, 4),
    }
    assert MIN_SUPPORTED_VERSION == (0, 9, 0)


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ((0, 9, 0), {"as-path", "no-scan"}),
        ((0, 9, 1), {"as-path", "no-scan", "read-data-subset"}),
        ((0, 9, 5), {"as-path", "no-scan", "read-data-subset", "error-codes"}),
        ((0, 10, 0), {"as-path", "no-scan", "read-data-subset", "error-codes", "snapshots-group-key-json"}),
        (
            (0, 10, 3),
            {"as-path", "no-scan", "read-data-subset", "error-codes", "snapshots-group-key-json",
             "check-fails-on-errors"},
        ),
        (
            (0, 11, 2),
            {"as-path", "no-scan", "read-data-subset", "error-codes", "snapshots-group-key-json",
             "check-fails-on-errors", "profile-toml-suffix"},
        ),
        ((0, 11, 3), set(FEATURES_BY_VERSION) - {"restore-over", "snapshot-diff", "restore-paths"}),
        ((0, 11, 4), set(FEATURES_BY_VERSION)),
        ((1, 0, 0), set(FEATURES_BY_VERSION)),
    ],
)
def test_features_by_version(version: tuple[int, int, int], expected: set[str]) -> None:
    assert features(version) == frozenset(expected)


@pytest.mark.parametrize("version", [(0, 8, 1), (0, 7, 0), (0, 0, 1)])
def test_features_refuses_versions_older_than_supported(version: tuple[int, int, int]) -> None:
    with pytest.raises(errors.Unimplemented):
        features(version)


# --------------------------------------------------------------------------
# Profile
# --------------------------------------------------------------------------

S3 = S3Repository(
    bucket="buckets-eu",
    root=f"rustic/project-{PROJECT}",
    endpoint="http://127.0.0.1:9000",
    region="auto",
    access_key_id="AKIAEXAMPLEKEYID0001",
    secret_access_key="s3cr3t/\"key\"\\with\nnewline",
)


def test_render_profile_local_exact() -> None:
    text = render_profile(
        Profile(LocalRepository("/var/lib/buckets/repos/project-1"), password="pw", cache_dir="/var/cache/buckets")
    )
    assert text == (
        "# rustic profile written by the buckets agent\n"
        "[repository]\n"
        'repository = "/var/lib/buckets/repos/project-1"\n'
        'password = "pw"\n'
        'cache-dir = "/var/cache/buckets"\n'
    )


def test_render_profile_local_no_cache_parses_back() -> None:
    text = render_profile(Profile(LocalRepository("/srv/repo"), password='p"a\\ss\tw\x00rd\x7f'))
    assert tomllib.loads(text) == {
        "repository": {"repository": "/srv/repo", "password": 'p"a\\ss\tw\x00rd\x7f', "no-cache": True}
    }


def test_render_profile_local_path_with_colon_uses_local_backend() -> None:
    # rustic_backend util.rs location_to_type_and_path splits at the first ':'
    text = render_profile(Profile(LocalRepository("/srv/re:po"), password="pw"))
    assert tomllib.loads(text)["repository"]["repository"] == "local:/srv/re:po"


def test_render_profile_s3_exact() -> None:
    # config/services/s3_aws.toml (rustic v0.9.5 … v0.11.4); option names are
    # opendal's S3Config fields (opendal core/src/services/s3/config.rs)
    s3 = S3Repository(
        bucket="b", root="rustic/project-1", endpoint="https://r2.example", region="auto",
        access_key_id="AK", secret_access_key="SK", options=(("connections", "8"), ("retry", "5")),
    )
    assert render_profile(Profile(s3, password="pw", cache_dir="/var/cache/buckets")) == (
        "# rustic profile written by the buckets agent\n"
        "[repository]\n"
        'repository = "opendal:s3"\n'
        'password = "pw"\n'
        'cache-dir = "/var/cache/buckets"\n'
        "\n"
        "[repository.options]\n"
        'bucket = "b"\n'
        'root = "rustic/project-1"\n'
        'endpoint = "https://r2.example"\n'
        'region = "auto"\n'
        'access_key_id = "AK"\n'
        'secret_access_key = "SK"\n'
        'disable_config_load = "true"\n'
        'disable_ec2_metadata = "true"\n'
        'connections = "8"\n'
        'retry = "5"\n'
    )


def test_render_profile_s3_parses_back_with_escapes() -> None:
    password = 'pw with "quotes", \\back\\slashes\\, a\nnewline, a\r\ntab\t, \u00e9 and \U0001f600'
    data = tomllib.loads(render_profile(Profile(S3, password=password)))
    assert data == {
        "repository": {
            "repository": "opendal:s3",
            "password": password,
            "no-cache": True,
            "options": {
                "bucket": "buckets-eu",
                "root": f"rustic/project-{PROJECT}",
                "endpoint": "http://127.0.0.1:9000",
                "region": "auto",
                "access_key_id": "AKIAEXAMPLEKEYID0001",
                "secret_access_key": "s3cr3t/\"key\"\\with\nnewline",
                "disable_config_load": "true",
                "disable_ec2_metadata": "true",
            },
        }
    }


def test_render_profile_s3_not_isolated() -> None:
    s3 = S3Repository("b", "r", "https://e", "auto", "AK", "SK", isolated=False)
    options = tomllib.loads(render_profile(Profile(s3, password="pw")))["repository"]["options"]
    assert "disable_config_load" not in options and "disable_ec2_metadata" not in options


def test_profile_repr_hides_secrets() -> None:
    profile = Profile(S3, password="hunter2-password", cache_dir=None)
    text = repr(profile) + str(profile) + repr(S3)
    for secret in ("hunter2-password", "AKIAEXAMPLEKEYID0001", "s3cr3t"):
        assert secret not in text
    assert "buckets-eu" in text  # the non-secret fields stay visible


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", '"plain"'),
        ('a"b', '"a\\"b"'),
        ("a\\b", '"a\\\\b"'),
        ("a\nb\rc\td", '"a\\nb\\rc\\td"'),
        ("\b\f", '"\\b\\f"'),
        ("\x00\x1f\x7f", '"\\u0000\\u001F\\u007F"'),
        ("é\U0001f600", '"é\U0001f600"'),
        ("", '""'),
    ],
)
def test_toml_string(value: str, expected: str) -> None:
    assert toml_string(value) == expected
    assert tomllib.loads(f"k = {toml_string(value)}")["k"] == value


def test_toml_string_refuses_lone_surrogates() -> None:
    with pytest.raises(ValueError):
        toml_string("\ud800")


@pytest.mark.parametrize(
    "profile",
    [
        Profile(LocalRepository("/srv/repo"), password=""),
        Profile(LocalRepository("relative/repo"), password="pw"),
        Profile(LocalRepository(""), password="pw"),
        Profile(LocalRepository("/srv/repo"), password="pw", cache_dir="relative"),
        Profile(S3Repository("", "r", "https://e", "auto", "AK", "SK"), password="pw"),
        Profile(S3Repository("b", "r", "https://e", "auto", "AK", ""), password="pw"),
        Profile(S3Repository("b", "r", "https://e", "auto", "AK", "SK", options=(("bucket", "x"),)), password="pw"),
        Profile(S3Repository("b", "r", "https://e", "auto", "AK", "SK", options=(("a b", "x"),)), password="pw"),
        Profile(S3Repository("b", "r", "https://e", "auto", "AK", "SK", options=(("a", "1"), ("a", "2"))), password="pw"),
        Profile(S3Repository("b", "r", "https://e", "auto", "AK", "SK", options=(("retry", 5),)), password="pw"),  # type: ignore[arg-type]
    ],
)
def test_render_profile_rejects_bad_profiles(profile: Profile) -> None:
    with pytest.raises(ValueError):
        render_profile(profile)


# --------------------------------------------------------------------------
# Argv builders
# --------------------------------------------------------------------------


def test_profile_arg_strips_toml_suffix() -> None:
    # src/config.rs merge_profile: rustic appends ".toml" (before v0.11.1 even
    # to a name already ending in it) and pushes the name onto each config
    # dir, so an absolute path replaces the dir.
    assert profile_arg("/run/buckets/rustic/p.toml") == "/run/buckets/rustic/p"
    assert profile_arg("/p.x.toml") == "/p.x"


@pytest.mark.parametrize("path", ["", "p.toml", "./p.toml", "/run/p", "/run/p.TOML", "/run/.toml", "/run/p.toml.bak"])
def test_profile_arg_rejects_bad_paths(path: str) -> None:
    with pytest.raises(ValueError):
        profile_arg(path)


def test_init_args() -> None:
    assert init_args(RUSTIC, PROFILE) == [*PREFIX, "init"]
    with pytest.raises(ValueError):
        init_args("", PROFILE)


def test_backup_args_full() -> None:
    argv = backup_args(
        RUSTIC, PROFILE, features=NEW, paths=["project", "persist"], host=HOST, tags=V2_TAGS,
        label="buckets", parent=SNAP, no_scan=True, json_progress=True, init=True,
    )
    assert argv == [
        RUSTIC, "-P", "/run/buckets/rustic/project-11111111", "--json-progress", "--progress-interval", "500ms",
        "backup", "--json",
        "--host", HOST,
        "--tag", "layout=v2",
        "--tag", f"project={PROJECT}",
        "--tag", "purpose=backup",
        "--tag", "op=op-1",
        "--label", "buckets",
        "--parent", SNAP,
        "--no-scan",
        "--init",
        "--", "project", "persist",
    ]


def test_backup_args_minimal() -> None:
    assert backup_args(RUSTIC, PROFILE, features=OLD, paths=["project"], host="h", tags=()) == [
        *PREFIX, "backup", "--json", "--host", "h", "--", "project",
    ]


def test_backup_args_as_path_single_source() -> None:
    # src/commands/backup.rs: --as-path renames the one source in the snapshot
    assert backup_args(
        RUSTIC, PROFILE, features=OLD, paths=["/mnt/snap-1/home"], host="h", tags=(), as_path="/project"
    ) == [*PREFIX, "backup", "--json", "--host", "h", "--as-path", "/project", "--", "/mnt/snap-1/home"]


def test_backup_args_as_path_refuses_two_paths() -> None:
    # rustic bails "as-path only works with a single source!" (src/commands/backup.rs)
    with pytest.raises(ValueError, match="exactly one path"):
        backup_args(RUSTIC, PROFILE, features=NEW, paths=["a", "b"], host="h", tags=(), as_path="/x")


def test_backup_source_whole_view_or_one_subpath() -> None:
    assert backup_source() == (".", "/")
    source, as_path = backup_source("docs/a.txt")
    assert (source, as_path) == ("project/docs/a.txt", "/project/docs/a.txt")  # where restic stores it too
    assert backup_args(RUSTIC, PROFILE, features=OLD, paths=[source], host="h", tags=(), as_path=as_path) == [
        *PREFIX, "backup", "--json", "--host", "h", "--as-path", "/project/docs/a.txt", "--", "project/docs/a.txt",
    ]
    for bad in ("/etc", "../x", "a/../../x", "a//b"):
        with pytest.raises(ValueError):
            backup_source(bad)


def test_backup_args_version_dependent_flags() -> None:
    # --json-progress exists from v0.11.3 only (PR #1751)
    with pytest.raises(errors.Unimplemented):
        backup_args(RUSTIC, PROFILE, features=features((0, 11, 2)), paths=["p"], host="h", tags=(), json_progress=True)
    argv = backup_args(RUSTIC, PROFILE, features=features((0, 11, 3)), paths=["p"], host="h", tags=(), json_progress=True)
    assert argv[3] == "--json-progress" and "--no-progress" not in argv
    # a feature set without no-scan/as-path (e.g. a future version that drops them)
    with pytest.raises(errors.Unimplemented):
        backup_args(RUSTIC, PROFILE, features=frozenset(), paths=["p"], host="h", tags=(), no_scan=True)
    with pytest.raises(errors.Unimplemented):
        backup_args(RUSTIC, PROFILE, features=frozenset(), paths=["p"], host="h", tags=(), as_path="/x")


def test_backup_args_path_that_looks_like_a_flag_stays_positional() -> None:
    argv = backup_args(RUSTIC, PROFILE, features=OLD, paths=["--delete-everything"], host="h", tags=())
    assert argv[-2:] == ["--", "--delete-everything"]


@pytest.mark.parametrize("tag", ["", "a,b", "layout=v2,purpose=backup", "-x", "--tag"])
def test_backup_args_rejects_bad_tags(tag: str) -> None:
    # rustic_core StringList::from_str splits every --tag value on ','
    with pytest.raises(ValueError):
        backup_args(RUSTIC, PROFILE, features=OLD, paths=["project"], host="h", tags=["layout=v2", tag])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"paths": [], "host": "h", "tags": ()},
        {"paths": "project", "host": "h", "tags": ()},
        {"paths": [""], "host": "h", "tags": ()},
        {"paths": ["project"], "host": "", "tags": ()},
        {"paths": ["project"], "host": "-h", "tags": ()},
        {"paths": ["project"], "host": "h", "tags": (), "label": ""},
        {"paths": ["project"], "host": "h", "tags": (), "label": "--x"},
        {"paths": ["project"], "host": "h", "tags": (), "parent": "latest"},
        {"paths": ["project"], "host": "h", "tags": (), "parent": "--oops"},
        {"paths": ["project"], "host": "h", "tags": (), "as_path": ""},
    ],
)
def test_backup_args_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        backup_args(RUSTIC, PROFILE, features=NEW, **kwargs)


def test_snapshots_args() -> None:
    assert snapshots_args(RUSTIC, PROFILE) == [*PREFIX, "snapshots", "--json"]
    # src/filtering.rs: --filter-host, --filter-tags TAG[,TAG,..] (global options)
    assert snapshots_args(RUSTIC, PROFILE, host=HOST, tags=["layout=v2", "purpose=backup"], ids=[SNAP, FULL_SNAP]) == [
        *PREFIX, "snapshots", "--json",
        "--filter-host", HOST,
        "--filter-tags", "layout=v2,purpose=backup",
        "--", SNAP, FULL_SNAP,
    ]


def test_snapshots_args_rejects_bad_filters() -> None:
    with pytest.raises(ValueError):
        snapshots_args(RUSTIC, PROFILE, tags=["a,b"])
    with pytest.raises(ValueError):
        snapshots_args(RUSTIC, PROFILE, ids=["latest"])
    with pytest.raises(ValueError):
        snapshots_args(RUSTIC, PROFILE, host="")


def test_restore_args() -> None:
    # src/commands/restore.rs: SNAPSHOT[:PATH] DESTINATION; rustic_core RestoreOptions --numeric-id
    assert restore_args(RUSTIC, PROFILE, snapshot_id=SNAP, target="/staging/x") == [
        *PREFIX, "restore", "--numeric-id", "--", SNAP, "/staging/x",
    ]
    assert restore_args(
        RUSTIC, PROFILE, snapshot_id=FULL_SNAP, target="/staging/x", path="/project/sub", numeric_id=False
    ) == [*PREFIX, "restore", "--", f"{FULL_SNAP}:/project/sub", "/staging/x"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"snapshot_id": "latest", "target": "/t"},
        {"snapshot_id": "9B56B604", "target": "/t"},
        {"snapshot_id": "9b56b6", "target": "/t"},
        {"snapshot_id": SNAP, "target": ""},
        {"snapshot_id": SNAP, "target": "/t", "path": "project/sub"},
        {"snapshot_id": SNAP, "target": "/t", "path": ""},
    ],
)
def test_restore_args_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        restore_args(RUSTIC, PROFILE, **kwargs)


def test_check_args() -> None:
    assert check_args(RUSTIC, PROFILE, features=OLD) == [*PREFIX, "check"]
    assert check_args(RUSTIC, PROFILE, features=OLD, read_data=True) == [*PREFIX, "check", "--read-data"]
    # rustic_core CheckOptions: --read-data-subset `requires = "read_data"`
    assert check_args(RUSTIC, PROFILE, features=V095, read_data_subset="1/5") == [
        *PREFIX, "check", "--read-data", "--read-data-subset", "1/5",
    ]


def test_check_args_subset_needs_rustic_0_9_1() -> None:
    with pytest.raises(errors.Unimplemented):
        check_args(RUSTIC, PROFILE, features=features((0, 9, 0)), read_data_subset="10%")
    assert check_args(RUSTIC, PROFILE, features=features((0, 9, 1)), read_data_subset="10%")[-1] == "10%"


# rustic_core commands/check.rs ReadSubsetOption::from_str: "x%", "n/m", a size (bytesize)
@pytest.mark.parametrize("subset", ["1/5", "5/5", "10%", "2.5%", "99.9%", "1M", "500k", "2G", "4096", "1GiB", "10MB"])
def test_check_args_accepts_subset_forms(subset: str) -> None:
    assert check_args(RUSTIC, PROFILE, features=NEW, read_data_subset=subset)[-2:] == ["--read-data-subset", subset]


# rustic 0.11.4 draws "x%" at random (recorded: a damaged pack went unread in 5 of 8 runs of
# `check --read-data --read-data-subset 100%`, never with plain --read-data or "1/1").
@pytest.mark.parametrize("subset", ["100%", "100.0%"])
def test_check_args_reads_everything_for_a_hundred_percent(subset: str) -> None:
    assert check_args(RUSTIC, PROFILE, features=NEW, read_data_subset=subset) == [*PREFIX, "check", "--read-data"]


@pytest.mark.parametrize(
    "subset", ["", "0/5", "6/5", "1/0", "1/2/3", "0%", "101%", "10 %", "%", "-1/5", "1/5 ", "abc", "0", "1X", "all"]
)
def test_check_args_rejects_bad_subsets(subset: str) -> None:
    with pytest.raises(ValueError):
        check_args(RUSTIC, PROFILE, features=NEW, read_data_subset=subset)


def test_check_args_rejects_both_read_modes() -> None:
    with pytest.raises(ValueError):
        check_args(RUSTIC, PROFILE, features=NEW, read_data=True, read_data_subset="1/5")


def test_small_builders() -> None:
    assert forget_args(RUSTIC, PROFILE, [SNAP, FULL_SNAP]) == [*PREFIX, "forget", "--", SNAP, FULL_SNAP]
    assert prune_args(RUSTIC, PROFILE) == [*PREFIX, "prune"]
    assert prune_args(RUSTIC, PROFILE, max_unused="10%") == [*PREFIX, "prune", "--max-unused", "10%"]
    assert prune_args(RUSTIC, PROFILE, max_unused="unlimited")[-1] == "unlimited"
    assert prune_args(RUSTIC, PROFILE, max_unused="500M")[-1] == "500M"
    # src/commands/ls.rs: ID lists recursively, ID:PATH only with --recursive
    assert ls_args(RUSTIC, PROFILE, SNAP) == [*PREFIX, "ls", "--json", "--", SNAP]
    assert ls_args(RUSTIC, PROFILE, SNAP, "/project/sub") == [
        *PREFIX, "ls", "--json", "--recursive", "--", f"{SNAP}:/project/sub",
    ]
    assert version_args(RUSTIC) == [RUSTIC, "--version"]


def test_small_builders_reject_bad_arguments() -> None:
    with pytest.raises(ValueError):
        forget_args(RUSTIC, PROFILE, [])  # rustic would apply the keep-* policy instead
    with pytest.raises(ValueError):
        forget_args(RUSTIC, PROFILE, SNAP)
    with pytest.raises(ValueError):
        forget_args(RUSTIC, PROFILE, [SNAP, "latest"])
    with pytest.raises(ValueError):
        prune_args(RUSTIC, PROFILE, max_unused="lots")
    with pytest.raises(ValueError):
        ls_args(RUSTIC, PROFILE, SNAP, "project/sub")
    with pytest.raises(ValueError):
        ls_args(RUSTIC, PROFILE, "latest")
    with pytest.raises(ValueError):
        version_args("")


def test_no_builder_puts_a_secret_in_argv() -> None:
    argvs = [
        init_args(RUSTIC, PROFILE),
        backup_args(RUSTIC, PROFILE, features=NEW, paths=["p"], host="h", tags=V2_TAGS),
        snapshots_args(RUSTIC, PROFILE),
        restore_args(RUSTIC, PROFILE, snapshot_id=SNAP, target="/t"),
        check_args(RUSTIC, PROFILE, features=NEW, read_data=True),
        forget_args(RUSTIC, PROFILE, [SNAP]),
        prune_args(RUSTIC, PROFILE),
        ls_args(RUSTIC, PROFILE, SNAP),
    ]
    for argv in argvs:
        assert argv[:3] == PREFIX[:3]
        assert not any("password" in a or "secret" in a or "key" in a for a in argv)


# --------------------------------------------------------------------------
# snapshots --json
# --------------------------------------------------------------------------


def test_parse_snapshots_pair_shape_v0_9_5() -> None:
    # src/commands/snapshots.rs v0.9.5: [[group, [snapshots]]]; SnapshotFile
    # fields from rustic_core 0.7.2 repofile/snapshotfile.rs (chrono times)
    snaps = parse_snapshots(sample("snapshots_v0.9.5.stdout.json"))
    assert [s.short_id for s in snaps] == ["9b56b604", "80cc1827"]
    assert snaps[0] == Snapshot(
        id=FULL_SNAP,
        short_id="9b56b604",
        time=datetime(2024, 12, 2, 22, 10, 33, 123456, tzinfo=UTC),
        hostname=HOST,
        paths=("persist", "project"),
        tags=("layout=v2", "op=op-1", f"project={PROJECT}", "purpose=backup"),
        tree="5f2c0a3b9e1d47c8a6b2e0f9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a392817060",
        username="root",
    )
    assert snaps[1].time == datetime(2024, 12, 3, 0, 15, 0, 500000, tzinfo=UTC)
    assert tag_map(snaps[1].tags)["purpose"] == "move"


def test_parse_snapshots_group_key_shape_v0_10_3() -> None:
    # src/commands/snapshots.rs v0.10.3: [{"group_key": ..., "snapshots": [...]}];
    # times from rustic_core 0.9.0 RusticTime (offset, no zone name)
    snaps = parse_snapshots(sample("snapshots_v0.10.3.stdout.json"))
    assert [s.id[:8] for s in snaps] == ["c0ffee00", "deadbeef"]
    assert snaps[0].time == datetime(2025, 12, 28, 5, 20, 11, 482130, tzinfo=UTC)
    assert snaps[0].tags == ("layout=v2", "op=op-7", f"project={PROJECT}", "purpose=backup")
    # a snapshot with no tags, an empty username and a -05:00 offset
    assert snaps[1].tags == () and snaps[1].username == ""
    assert snaps[1].time == datetime(2025, 12, 28, 3, 0, 0, tzinfo=UTC)
    assert snaps[1].time.tzinfo is UTC


def test_parse_snapshots_flat_shape_v0_11_4() -> None:
    # recorded from rustic 0.11.4 (`snapshots --json -g ""`): a plain list of snapshots
    snaps = parse_snapshots(sample("snapshots_flat_v0.11.4.stdout.json"))
    assert [s.short_id for s in snaps] == ["8ede5325", "059f22a2"]
    assert snaps[0].id == "8ede5325e2a7dc151e94c9c6a869550926728e8e659915f863a694431fb3d482"
    assert snaps[0].time == datetime(2026, 12, 6, 12, 59, 33, 582153, tzinfo=UTC)
    assert (snaps[0].hostname, snaps[0].tags, snaps[0].paths) == ("h1", ("buckets", "x"), ("/",))
    assert (snaps[1].hostname, snaps[1].tags, snaps[1].username) == ("h2", (), "")


def test_parse_snapshots_grouped_and_empty_v0_11_4() -> None:
    # recorded from rustic 0.11.4: grouped by host/label/paths by default, [] when empty
    grouped = parse_snapshots(sample("snapshots_v0.11.4.stdout.json"))
    assert grouped == parse_snapshots(sample("snapshots_flat_v0.11.4.stdout.json"))
    assert parse_snapshots(sample("snapshots_empty_v0.11.4.stdout.json")) == []


def test_parse_snapshots_empty_v0_10_3() -> None:
    assert parse_snapshots(sample("snapshots_empty_v0.10.3.stdout.json")) == []


def test_all_three_shapes_agree() -> None:
    snap = (
        '{"time":"2024-05-01T12:00:00Z","tree":"ab","paths":["project"],"hostname":"h",'
        '"tags":["layout=v2"],"id":"' + FULL_SNAP + '"}'
    )
    pair = f'[[{{"hostname":"h","label":"","paths":["project"]}},[{snap}]]]'
    keyed = f'[{{"group_key":{{"hostname":"h"}},"snapshots":[{snap}]}}]'
    flat = f"[{snap}]"
    parsed = [parse_snapshots(text) for text in (pair, keyed, flat)]
    assert parsed[0] == parsed[1] == parsed[2]
    assert parsed[0][0].paths == ("project",) and parsed[0][0].tags == ("layout=v2",)


@pytest.mark.parametrize(
    "stdout",
    [
        "",
        "not json",
        "{}",
        "null",
        "[1]",
        "[[1, 2]]",
        '[[{"hostname":"h"}, [1]]]',
        '[{"group_key":{},"snapshots":"x"}]',
        '[{"time":"2024-05-01T12:00:00Z"}]',
        '[{"id":"' + FULL_SNAP + '"}]',
        '[{"id":"latest","time":"2024-05-01T12:00:00Z"}]',
        '[{"id":"' + FULL_SNAP + '","time":"yesterday"}]',
        '[{"id":"' + FULL_SNAP + '","time":"2024-05-01T12:00:00Z","tags":"a"}]',
    ],
)
def test_parse_snapshots_malformed_raises_internal(stdout: str) -> None:
    with pytest.raises(errors.Internal):
        parse_snapshots(stdout)


# --------------------------------------------------------------------------
# backup output and progress
# --------------------------------------------------------------------------

SUMMARY = BackupSummary(
    snapshot_id=FULL_SNAP,
    files_new=52,
    files_changed=0,
    files_unmodified=0,
    data_added=154024792,
    total_files_processed=52,
    total_bytes_processed=154000012,
    total_duration=1.062926571,
)


def test_parse_backup_output_json_v0_9_5() -> None:
    # src/commands/backup.rs v0.9.5: --json pretty-prints the SnapshotFile with
    # its SnapshotSummary (rustic_core 0.7.2 repofile/snapshotfile.rs)
    assert parse_backup_output(sample("backup_v0.9.5.stdout.json")) == SUMMARY


def test_parse_backup_output_json_progress_v0_11_4() -> None:
    # recorded from rustic 0.11.4: with --json-progress the summary line replaces the --json snapshot
    assert parse_backup_output(sample("backup_json_progress_v0.11.4.stdout.jsonl")) == BackupSummary(
        "059f22a26ebd86b1efd5f36c05b6c8e83f69372c20330d4d26de93291f3f9ba7", 5, 0, 0, 2027, 5, 3013, 0.040657087
    )


def test_parse_backup_output_json_v0_11_4() -> None:
    # recorded from rustic 0.11.4: `backup --json` without --json-progress prints the snapshot
    summary = parse_backup_output(sample("backup_v0.11.4.stdout.json"))
    assert summary.snapshot_id == "8ede5325e2a7dc151e94c9c6a869550926728e8e659915f863a694431fb3d482"
    assert (summary.files_new, summary.total_files_processed) == (4, 4)


def test_stopped_backup_has_no_summary_v0_11_4() -> None:
    # recorded from rustic 0.11.4: SIGTERM mid-backup → exit 0, nothing on stdout, the
    # handler's line on stderr
    with pytest.raises(errors.Internal):
        parse_backup_output("")
    stopped = interrupted_error(0, sample("backup_sigterm_v0.11.4.stderr"), action="backup")
    assert isinstance(stopped, errors.Internal) and "stopped by a signal" in str(stopped)
    assert interrupted_error(0, sample("backup_v0.11.4.stderr"), action="backup") is None
    assert interrupted_error(0, sample("check_clean_v0.11.4.stderr"), action="check") is None


def test_restore_is_finished_only_with_restore_done_v0_11_4() -> None:
    # recorded from rustic 0.11.4: plain "Files:"/"Dirs:" lines, then "restore done."
    check_restore_output(sample("restore_v0.11.4.stdout"))
    stopped = "".join(sample("restore_v0.11.4.stdout").splitlines(keepends=True)[:2])
    for stdout in ("", stopped):
        with pytest.raises(errors.Internal):
            check_restore_output(stdout)


def test_parse_ls_v0_11_4() -> None:
    # recorded from rustic 0.11.4: `ls --json` prints path strings only, relative, no metadata
    assert parse_ls(sample("ls_path_v0.11.4.stdout.json")) == ["a.txt", "l", "sub", "sub/b.txt"]
    assert "project/sub/b.txt" in parse_ls(sample("ls_v0.11.4.stdout.json"))


def test_parse_version_v0_11_4() -> None:
    assert parse_version(sample("version_v0.11.4.stdout")) == (0, 11, 4)


@pytest.mark.parametrize(
    ("stderr", "returncode", "error"),
    [
        ("wrong_password_v0.11.4.stderr", 1, errors.FailedPrecondition),
        ("no_repository_v0.11.4.stderr", 1, errors.NotFound),
        ("init_exists_v0.11.4.stderr", 1, errors.AlreadyExists),
        ("snapshot_not_found_v0.11.4.stderr", 1, errors.NotFound),
        ("unexpected_argument_v0.11.4.stderr", 2, errors.Unimplemented),
        ("check_damaged_v0.11.4.stderr", 1, errors.DataLoss),
        ("s3_connection_refused_v0.11.4.stderr", 1, errors.Unavailable),
        ("s3_forbidden_stat_v0.11.4.stderr", 1, errors.PermissionDenied),
        # the key listing refused: rustic 0.11.4 ends with C002 (wrong password); the logged cause wins
        ("s3_key_listing_denied_v0.11.4.stderr", 1, errors.PermissionDenied),
    ],
)
def test_classify_recorded_failures_v0_11_4(stderr: str, returncode: int, error) -> None:
    assert type(classify_failure(returncode, sample(stderr), action="x")) is error


def test_parse_backup_output_dry_run_and_noise() -> None:
    # --dry-run: SnapshotFile.id is null and skipped (skip_serializing_if = "Id::is_null")
    text = 'something else\n{"time":"2024-05-01T12:00:00Z","tree":"ab","paths":["p"],"summary":{"files_new":1}}'
    assert parse_backup_output(text) == BackupSummary("", 1, 0, 0, 0, 0, 0, 0.0)
    # JsonProgressSummary omits snapshot_id when the id is the default
    assert parse_backup_output('{"message_type":"summary","files_unmodified":3}').snapshot_id == ""


def test_parse_backup_output_takes_the_last_summary() -> None:
    first = '{"tree":"a","summary":{"files_new":1},"id":"' + "a" * 64 + '"}'
    second = '{"tree":"b","summary":{"files_new":2},"id":"' + "b" * 64 + '"}'
    assert parse_backup_output(first + "\n" + second).files_new == 2


@pytest.mark.parametrize(
    "stdout",
    [
        "",
        "not json",
        "[]",
        '{"message_type":"status","bytes_done":1}',
        '{"tree":"ab"}',  # no summary
        '{"tree":"ab","summary":null}',
        '{"tree":"ab","summary":{"files_new":"x"}}',
        '{"message_type":"summary","files_new":true}',
    ],
)
def test_parse_backup_output_malformed_raises_internal(stdout: str) -> None:
    with pytest.raises(errors.Internal):
        parse_backup_output(stdout)


def test_parse_progress_lines_v0_11_4() -> None:
    # recorded from rustic 0.11.4 (--progress-interval 100ms): bytes only; whole seconds; the
    # first line has no seconds_remaining
    lines = sample("backup_json_progress_v0.11.4.stdout.jsonl").splitlines()
    parsed = [parse_progress_line(line) for line in lines]
    assert parsed[0] == BackupStatus(0.0, 0, 0, 0, 3018, 0.0, None, ())
    assert parsed[1] == BackupStatus(pytest.approx(99.83432736911863), 0, 0, 3013, 3018, 0.0, 0.0, ())
    assert parsed[2] is None  # the summary line


def test_parse_progress_line_without_length() -> None:
    # with --no-scan the length is never set: no percent_done, no total_bytes
    assert parse_progress_line('{"message_type":"status","seconds_elapsed":3,"bytes_done":4096}') == BackupStatus(
        0.0, 0, 0, 4096, 0, 3.0, None, ()
    )


@pytest.mark.parametrize(
    "line",
    [
        "",
        "not json",
        "[INFO] backing up...",
        "{",
        "[1]",
        "{}",
        '{"message_type":"summary","files_new":1}',
        '{"message_type":"status","percent_done":"half"}',
        '{"message_type":"status","bytes_done":true}',
        '{"message_type":"status","seconds_elapsed":[1]}',
        "[" * 100_000,
        "\x00\xff{}",
    ],
)
def test_parse_progress_line_garbage_gives_none(line: str) -> None:
    assert parse_progress_line(line) is None


def test_parse_ls_v0_9_5() -> None:
    # src/commands/ls.rs v0.9.5: --json prints a JSON array of path strings
    assert parse_ls(sample("ls_v0.9.5.stdout.json")) == [
        "persist", "persist/state.sqlite", "project", "project/a.txt", "project/sub", "project/sub/b.txt",
    ]
    for bad in ("", "{}", "[1]", "nope"):
        with pytest.raises(errors.Internal):
            parse_ls(bad)


def test_tag_list_is_rustics_order() -> None:
    # rustic_core StringList is a BTreeSet: sorted, de-duplicated
    assert tag_list(V2_TAGS + ["layout=v2"]) == ("layout=v2", "op=op-1", f"project={PROJECT}", "purpose=backup")


# --------------------------------------------------------------------------
# check output
# --------------------------------------------------------------------------


def test_parse_check_output_v0_9_5() -> None:
    # rustic_core 0.7.2 commands/check.rs: error!/warn! lines; rustic v0.9.5
    # exits 0 even so, hence this parser
    assert parse_check_output(sample("check_damaged_v0.9.5.stderr")) == [
        "pack fbdf448f21e9f5b6fc2694169b32d925fa1729fbe225a6bfb95013c0e460637b: Hash mismatch. "
        "Computed hash: b4c520fd75ead2761f328a94f80bc6a67ff17ba1d2ceca1639f88b832ce3b907",
        "Error reading data for pack 0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d : "
        "Error: Data decryption failed, MAC check failed. (kind: related to cryptographic operations, "
        "code: C001): caused by: aead::Error",
    ]


def test_parse_check_output_v0_10_3_and_padding_and_colour() -> None:
    # rustic >= 0.10.1 also fails with "check found errors!", which is no damage line
    assert len(parse_check_output(sample("check_damaged_v0.10.3.stderr"))) == 1
    # simplelog may pad the level; log4rs (v0.11) may colour it
    assert parse_check_output("[ERROR] a\n[ERROR ] b\n\x1b[31m[ERROR]\x1b[0m c\n[WARN] d\n[ERROR]\n") == ["a", "b", "c"]
    assert parse_check_output("") == []


# --------------------------------------------------------------------------
# Failure classification
# --------------------------------------------------------------------------

# Hand-written stderr for rows without a sample file; each names its source.
HAND_WRITTEN = {
    # rustic_core 0.5.4 KeyFileErrorKind::NoSuitableKeyFound
    "no_key_v0_9_0": "error: no suitable key found!",
    # rustic_core 0.7+ RusticError::display_log form of C002 (in a log line)
    "c002_log": "[ERROR] Error: The password that has been entered, seems to be incorrect. (kind: related to "
    "password handling, code: C002)",
    # opendal s3/error.rs: S3 codes in the message of a response with a body
    "s3_signature": "Caused by:\nPermissionDenied (permanent) at read, context: { service: s3 } => "
    'S3Error { code: "SignatureDoesNotMatch", message: "The request signature we calculated does not match", '
    'resource: "", request_id: "1" }',
    "s3_access_denied": 'S3Error { code: "AccessDenied", message: "Access Denied", resource: "", request_id: "2" }',
    # opendal s3/error.rs: SlowDown → RateLimited (temporary), 503 → Unexpected (temporary)
    "s3_slowdown": "Caused by:\nRateLimited (persistent) at write, context: { service: s3 } => "
    'S3Error { code: "SlowDown", message: "Please reduce your request rate.", resource: "", request_id: "3" }',
    "s3_503": "Caused by:\nUnexpected (persistent) at read, context: { service: s3 } => "
    'S3Error { code: "ServiceUnavailable", message: "Reduce your request rate.", resource: "", request_id: "4" }',
    # hyper/reqwest wording that reaches the tail when a source chain is printed
    "dns": "error: error trying to connect: dns error: failed to lookup address information: Name or service not known",
    "refused_io": "Caused by:\nConnection refused (os error 111)",
    "timeout": "Caused by:\noperation timed out",
    # Rust io::Error text for EDQUOT and the Debug form used by rustic_core 0.5
    "quota": "Caused by:\nDisk quota exceeded (os error 122)",
    "storage_full_debug": "error: couldn't write to buffer: `Os { code: 28, kind: StorageFull, message: \"No space left on device\" }`",
    # rustic_core 0.5.4 CryptBackendErrorKind / ExtraVerificationFailed wording
    "decrypt_backend_v0_9_4": "error: decrypting from backend failed",
    "extra_verify_v0_9_4": "error: Extra verification failed: After decrypting and decompressing the data changed!",
    "c003_log": "[ERROR] Error: Verification failed: After decrypting and decompressing the data changed! "
    "(kind: related to verification, code: C003)",
    # rustic_core 0.7.2 repository.rs init_with_password
    "init_exists_core": "error: `rustic_core` experienced an error related to `the configuration`.\n\nMessage:\n"
    "Config file already exists for `local:/srv/repo`. Please check the repository.",
    # rustic_core 0.5.4 "no suitable id found for `{0}`"
    "no_id_v0_9_4": "error: no suitable id found for `deadbeef`",
    # rustic_core 0.7.2 backend.rs find_starts_with
    "not_unique": "error: `rustic_core` experienced an error related to `the backend`.\n\nMessage:\nId not unique: `9b56`.",
    "unknown": "error: something nobody foresaw happened",
}

# (stderr, class, message suffix), grouped by row of STDERR_RULES; samples first.
STDERR_CASES: list[tuple[str, type[errors.BucketsError], str]] = [
    (sample("wrong_password_v0.9.5.stderr"), errors.FailedPrecondition, "wrong repository password"),
    (sample("wrong_password_v0.9.4.stderr"), errors.FailedPrecondition, "wrong repository password"),
    (HAND_WRITTEN["no_key_v0_9_0"], errors.FailedPrecondition, "wrong repository password"),
    (HAND_WRITTEN["c002_log"], errors.FailedPrecondition, "wrong repository password"),
    (sample("s3_forbidden_stat_v0.9.5.stderr"), errors.PermissionDenied, "the S3 credentials were refused by the storage endpoint"),
    (sample("s3_invalid_key_list_v0.10.3.stderr"), errors.PermissionDenied, "the S3 credentials were refused by the storage endpoint"),
    (HAND_WRITTEN["s3_signature"], errors.PermissionDenied, "the S3 credentials were refused by the storage endpoint"),
    (HAND_WRITTEN["s3_access_denied"], errors.PermissionDenied, "the S3 credentials were refused by the storage endpoint"),
    (sample("s3_connection_refused_v0.9.5.stderr"), errors.Unavailable, "repository storage is unreachable"),
    (HAND_WRITTEN["s3_slowdown"], errors.Unavailable, "repository storage is unreachable"),
    (HAND_WRITTEN["s3_503"], errors.Unavailable, "repository storage is unreachable"),
    (HAND_WRITTEN["dns"], errors.Unavailable, "repository storage is unreachable"),
    (HAND_WRITTEN["refused_io"], errors.Unavailable, "repository storage is unreachable"),
    (HAND_WRITTEN["timeout"], errors.Unavailable, "repository storage is unreachable"),
    (sample("backup_disk_full_v0.9.5.stderr"), errors.ResourceExhausted, "no space left (disk or quota full)"),
    (sample("restore_disk_full_v0.9.5.stderr"), errors.ResourceExhausted, "no space left (disk or quota full)"),
    (HAND_WRITTEN["quota"], errors.ResourceExhausted, "no space left (disk or quota full)"),
    (HAND_WRITTEN["storage_full_debug"], errors.ResourceExhausted, "no space left (disk or quota full)"),
    (sample("restore_mac_failure_v0.9.5.stderr"), errors.DataLoss, "repository data failed decryption (MAC check)"),
    (sample("restore_mac_failure_v0.9.4.stderr"), errors.DataLoss, "repository data failed decryption (MAC check)"),
    (HAND_WRITTEN["decrypt_backend_v0_9_4"], errors.DataLoss, "repository data failed decryption (MAC check)"),
    (sample("extra_verify_v0.10.3.stderr"), errors.DataLoss, "repository data failed verification"),
    (HAND_WRITTEN["extra_verify_v0_9_4"], errors.DataLoss, "repository data failed verification"),
    (HAND_WRITTEN["c003_log"], errors.DataLoss, "repository data failed verification"),
    (sample("check_damaged_v0.10.3.stderr"), errors.DataLoss, "repository check found errors"),
    (sample("init_exists_v0.10.3.stderr"), errors.AlreadyExists, "repository already exists"),
    (HAND_WRITTEN["init_exists_core"], errors.AlreadyExists, "repository already exists"),
    (sample("no_repository_v0.9.5.stderr"), errors.NotFound, "repository does not exist"),
    (sample("no_repository_v0.9.4.stderr"), errors.NotFound, "repository does not exist"),
    (sample("s3_no_bucket_v0.10.3.stderr"), errors.NotFound, "repository does not exist"),
    (sample("snapshot_not_found_v0.9.5.stderr"), errors.NotFound, "snapshot does not exist"),
    (HAND_WRITTEN["no_id_v0_9_4"], errors.NotFound, "snapshot does not exist"),
    (sample("snapshots_missing_full_id_v0.11.4.stderr"), errors.NotFound, "snapshot does not exist"),
    (HAND_WRITTEN["not_unique"], errors.InvalidArgument, "snapshot id prefix is ambiguous"),
    (sample("dump_missing_v0.11.4.stderr"), errors.NotFound, "path does not exist in the snapshot"),
    (sample("cat_tree_blob_missing_v0.11.4.stderr"), errors.DataLoss, "a tree of the snapshot is missing from the repository"),
    (sample("dump_below_file_v0.11.4.stderr"), errors.InvalidArgument, "path is not a regular file"),
    (sample("unexpected_argument_v0.10.3.stderr"), errors.Unimplemented, "this rustic version does not support an option the agent used"),
    (sample("missing_profile_v0.9.5.stderr"), errors.Internal, "the rustic profile was not found or names no repository"),
]


@pytest.mark.parametrize(("stderr", "cls", "short"), STDERR_CASES)
def test_classify_by_stderr_text(stderr: str, cls: type, short: str) -> None:
    err = classify_failure(1, stderr, action="backup")
    assert type(err) is cls
    assert err.message == f"rustic backup failed: {short}"
    assert err.detail == stderr.strip()


def test_every_stderr_rule_has_a_case() -> None:
    first_match = {
        next(i for i, rule in enumerate(STDERR_RULES) if rule.pattern.search(stderr)) for stderr, _, _ in STDERR_CASES
    }
    assert first_match == set(range(len(STDERR_RULES)))


def test_classify_prefers_the_final_error_over_earlier_log_lines() -> None:
    # A recovered retry warning earlier in the tail does not hide the real
    # cause named by the final "error:" block.
    stderr = (
        "[WARN] will retry after 1.2s because: Unexpected (temporary) at read => send http request\n"
        + sample("restore_mac_failure_v0.9.5.stderr")
    )
    assert type(classify_failure(1, stderr, action="restore")) is errors.DataLoss


def test_classify_falls_back_to_the_whole_tail() -> None:
    # backup: the cause is in the [ERROR] line, the final error is generic
    err = classify_failure(1, sample("extra_verify_v0.10.3.stderr"), action="backup")
    assert type(err) is errors.DataLoss


def test_classify_clap_usage_error_exit_2() -> None:
    err = classify_failure(2, sample("unexpected_argument_v0.10.3.stderr"), action="backup")
    assert type(err) is errors.Unimplemented


def test_classify_restore_abort_by_signal() -> None:
    # release builds use panic = "abort": a panicking restore dies of SIGABRT
    err = classify_failure(-6, sample("restore_disk_full_v0.9.5.stderr"), action="restore")
    assert type(err) is errors.ResourceExhausted
    err = classify_failure(-6, "thread 'main' panicked at src/x.rs:1:1:\nboom", action="restore")
    assert type(err) is errors.Internal and err.message == "rustic restore was killed by signal 6"


def test_classify_unknown_is_internal() -> None:
    err = classify_failure(1, HAND_WRITTEN["unknown"], action="check")
    assert type(err) is errors.Internal
    assert err.message == "rustic check failed with exit code 1"
    assert classify_failure(1, "", action="init").detail == ""


def test_classify_strips_terminal_colour() -> None:
    err = classify_failure(1, "\x1b[1m\x1b[31merror:\x1b[0m incorrect password!", action="snapshots")
    assert type(err) is errors.FailedPrecondition


def test_classify_local_permission_error_is_not_an_s3_refusal() -> None:
    # rustic_core 0.5 formats io errors with Debug ("kind: PermissionDenied");
    # only opendal's "PermissionDenied (<status>) at" form means HTTP 403.
    stderr = 'error: opening file failed: `Os { code: 13, kind: PermissionDenied, message: "Permission denied" }`'
    assert type(classify_failure(1, stderr, action="backup")) is errors.Internal


def test_classify_exit_zero_is_refused() -> None:
    with pytest.raises(ValueError):
        classify_failure(0, "", action="backup")


@pytest.mark.parametrize(
    ("name", "pattern"),
    [
        # each checked with rustic 0.11.4: restoring with these globs brought exactly that entry
        ("plain", "plain"),
        ("we*ird [1] {x}.txt", "we\\*ird \\[1\\] \\{x\\}.txt"),
        ("#hash", "\\#hash"),
        ("!bang", "\\!bang"),
        ("trail ", "trail\\ "),
        ("back\\slash", "back\\\\slash"),
        ("q?", "q\\?"),
    ],
)
def test_glob_literal(name: str, pattern: str) -> None:
    assert glob_literal(name) == pattern


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\0b"])
def test_glob_literal_refuses_what_is_no_single_name(name: str) -> None:
    with pytest.raises(ValueError):
        glob_literal(name)


def test_restore_args_only_one_entry_of_a_path() -> None:
    argv = restore_args(RUSTIC, PROFILE, snapshot_id=SNAP, target="/v/project", path="/project", only="a*b")
    assert argv[argv.index("restore"):] == [
        "restore", "--numeric-id", "--glob", "/a\\*b", "--glob", "/a\\*b/**", "--", f"{SNAP}:/project", "/v/project",
    ]


def test_a_refused_master_key_is_told_from_damaged_data() -> None:
    assert rua.key_refused(sample("stale_master_key_v0.11.4.stderr"))
    # A pack that fails its MAC is damage, not a key of another repository.
    assert not rua.key_refused(sample("restore_mac_failure_v0.9.5.stderr"))
    assert not rua.key_refused(sample("wrong_password_v0.11.4.stderr"))
    assert not rua.key_refused("")


def test_a_missing_repository_is_told_from_other_failures() -> None:
    # What a backup with a kept master key meets once its repository was removed: it is then made
    # again with the password (never with --init on the key).
    assert rua.repository_missing(sample("no_repository_v0.11.4.stderr"))
    assert rua.repository_missing(sample("s3_no_bucket_v0.10.3.stderr"))
    assert not rua.repository_missing(sample("stale_master_key_v0.11.4.stderr"))
    assert not rua.repository_missing(sample("wrong_password_v0.11.4.stderr"))
    assert not rua.repository_missing("")


def test_restore_paths_args_restore_exactly_the_paths_from_the_snapshot_root() -> None:
    argv = rua.restore_paths_args(RUSTIC, PROFILE, snapshot_id=SNAP, target="/v",
                                  paths=["/project/a b/x*y", "/persist/#n"])
    assert argv[argv.index("restore"):] == [
        "restore", "--numeric-id",
        "--glob", "/project/a b/x\\*y", "--glob", "/project/a b/x\\*y/**",
        "--glob", "/persist/\\#n", "--glob", "/persist/\\#n/**",
        "--", SNAP, "/v",
    ]
    for bad in ([], ["/"], ["project/a"], ["/project/../x"]):
        with pytest.raises(ValueError):
            rua.restore_paths_args(RUSTIC, PROFILE, snapshot_id=SNAP, target="/v", paths=bad)


def test_restore_paths_are_batched_below_the_argv_limit() -> None:
    paths = [f"/project/{index:05d}-{'x' * 100}" for index in range(2000)]
    batches = rua.restore_paths_batches(paths)
    assert len(batches) > 1 and [p for batch in batches for p in batch] == paths
    assert all(sum(2 * len(rua.path_glob(p)) + 3 for p in batch) <= rua.RESTORE_PATHS_BATCH_CHARS
               for batch in batches)
