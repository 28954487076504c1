"""The pure parts of copying a repository between regions' buckets, and the buckets file."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub_client.repository_copy import (
    BucketConfig, buckets_from_table, differences, load_buckets, missing_objects, relevant,
)


def test_locks_are_never_copied() -> None:
    root = "rustic/project-x/"
    assert relevant(root + "data/ab/abcd", root) and relevant(root + "config", root)
    assert not relevant(root + "locks/1234", root) and not relevant("rustic/project-y/config", root)


def test_missing_objects_are_those_absent_or_of_another_size() -> None:
    source = {"config": 155, "keys/k1": 460, "data/aa/p1": 1000, "data/bb/p2": 2000}
    target = {"config": 155, "keys/k1": 460, "data/aa/p1": 999, "extra": 1}
    assert missing_objects(source, target) == ["data/aa/p1", "data/bb/p2"]
    assert missing_objects(source, source) == [] and missing_objects({}, target) == []
    assert differences(source, {**source, "extra": 5}) == ""  # more in the target is not a broken copy
    assert "2 of 4 objects missing" in differences(source, target)


def test_root_and_account() -> None:
    a = BucketConfig(bucket="b-eu", endpoint="http://s3", access_key_id="k", secret_access_key="s")
    assert a.root("p1") == "rustic/project-p1/"
    assert a.same_account(BucketConfig(bucket="b-us", endpoint="http://s3", access_key_id="k", secret_access_key="s"))
    assert not a.same_account(BucketConfig(bucket="b-us", endpoint="http://other", access_key_id="k",
                                           secret_access_key="s"))
    assert "s3cr3t" not in repr(BucketConfig(bucket="b", secret_access_key="s3cr3t"))


def test_buckets_file(tmp_path: Path) -> None:
    (tmp_path / "r2.secret").write_text("the-secret\n")
    (tmp_path / "buckets.toml").write_text(
        '[regions.weur]\nbucket = "buckets-weur"\nendpoint = "https://acct.r2.cloudflarestorage.com"\n'
        'signing_region = "auto"\naccess_key_id = "AK"\nsecret_access_key_file = "r2.secret"\n'
        '[regions.enam]\nbucket = "buckets-enam"\n')
    buckets = load_buckets(tmp_path / "buckets.toml")
    assert buckets["weur"] == BucketConfig(bucket="buckets-weur", endpoint="https://acct.r2.cloudflarestorage.com",
                                           signing_region="auto", access_key_id="AK", secret_access_key="the-secret")
    assert buckets["enam"].signing_region == "enam" and buckets["enam"].secret_access_key is None


@pytest.mark.parametrize("table, message", [
    ({}, "no \\[regions"),
    ({"regions": {"eu": {}}}, "regions.eu.bucket is required"),
    ({"regions": {"eu": {"bucket": "b", "secret_access_key": "inline"}}}, "secret_access_key_file"),
    ({"regions": {"eu": {"bucket": "b", "secret_access_key_file": "missing"}}}, "cannot read"),
    ({"regions": {"eu": "b"}}, "must be a table"),
])
def test_bad_buckets_tables(table, message: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message):
        buckets_from_table(table, base=tmp_path)


def test_an_unreachable_s3_endpoint_is_a_repository_copy_error() -> None:
    """botocore is imported only when an S3 error is matched: the error still becomes ours."""
    import socket

    from hub_client.repository_copy import RepositoryCopyError, listing

    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    config = BucketConfig(bucket="b", endpoint=f"http://127.0.0.1:{port}", access_key_id="k", secret_access_key="s")
    client = config.client()
    client.meta.config.retries = {"max_attempts": 1}
    with pytest.raises(RepositoryCopyError, match="cannot list s3://b/rustic/project-p/"):
        listing(config, config.root("p"), client)
