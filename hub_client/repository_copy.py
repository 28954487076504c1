"""Copying a project's repository between the buckets of two regions (a cross-region move).

A restic-format repository is a set of immutable, content-addressed objects (config, keys,
snapshots, index, data packs) plus short-lived lock objects. So a copy is: list both sides, copy
every object the target lacks or holds at another size, and never copy ``locks/`` (a lock copied
into another bucket would only be stale there). Run again after more backups, the same copy
brings only the new objects: that is how a move's catch-up snapshot follows the bulk copy. The
copy is verified by listing both sides again (same keys, same sizes); the engine's own check of
the target repository is the second half of the proof and is run by the target host's agent.

Objects are copied by the S3 server itself when both buckets are on one endpoint with one set
of keys (R2: one account), and streamed through the hub otherwise.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping


SKIPPED_PREFIXES = ("locks/",)
DELETE_BATCH = 1000  # DeleteObjects takes at most 1,000 keys


class RepositoryCopyError(Exception):
    """Listing, copying or verifying a repository failed; the text says which bucket and object."""


@dataclass(frozen=True)
class BucketConfig:
    """Where one region's repositories live, as the hub reaches them."""

    bucket: str
    endpoint: str | None = None  # None: AWS
    signing_region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    root_template: str = "rustic/project-{project_id}"

    def root(self, project_id: str) -> str:
        return self.root_template.format(project_id=project_id).strip("/") + "/"

    def same_account(self, other: "BucketConfig") -> bool:
        return (self.endpoint, self.access_key_id, self.secret_access_key) == (
            other.endpoint, other.access_key_id, other.secret_access_key)

    def client(self):
        import boto3  # here, not at the top: every `buckets` command imports this module
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=self.signing_region,
            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}),
        )


@dataclass(frozen=True)
class CopyReport:
    """What one copy did: ``objects``/``bytes`` in the source (locks left out), ``copied`` and
    ``copied_bytes`` the part that was missing in the target."""

    objects: int
    bytes: int
    copied: int
    copied_bytes: int

    def as_data(self) -> dict[str, Any]:
        return {"objects": self.objects, "bytes": self.bytes, "copied": self.copied, "copied_bytes": self.copied_bytes}


def buckets_from_table(table: Mapping[str, Any], *, base: Path = Path(".")) -> dict[str, BucketConfig]:
    """Region → BucketConfig from a parsed ``[regions.<name>]`` table: ``bucket`` (required),
    ``endpoint``, ``signing_region``, ``access_key_id``, and the secret key from
    ``secret_access_key_file`` (a path, relative to ``base``; never inline). Raises ValueError
    naming the key for anything else or missing."""
    known = {"bucket", "endpoint", "signing_region", "access_key_id", "secret_access_key_file", "root_template"}
    regions = table.get("regions")
    if not isinstance(regions, Mapping) or not regions:
        raise ValueError("no [regions.<name>] table")
    result = {}
    for region, entry in regions.items():
        if not isinstance(entry, Mapping):
            raise ValueError(f"regions.{region} must be a table")
        unknown = sorted(set(entry) - known)
        if unknown:
            raise ValueError(f"regions.{region}: unknown key(s) {', '.join(unknown)}"
                             + (" (put the secret in a file: secret_access_key_file)"
                                if "secret_access_key" in unknown else ""))
        if not isinstance(entry.get("bucket"), str) or not entry["bucket"]:
            raise ValueError(f"regions.{region}.bucket is required")
        secret = None
        if "secret_access_key_file" in entry:
            path = base / str(entry["secret_access_key_file"])
            try:
                secret = path.read_text().strip()
            except OSError as exc:
                raise ValueError(f"regions.{region}.secret_access_key_file: cannot read {path}: {exc.strerror}") from exc
        result[region] = BucketConfig(
            bucket=entry["bucket"], endpoint=entry.get("endpoint"),
            signing_region=entry.get("signing_region", region), access_key_id=entry.get("access_key_id"),
            secret_access_key=secret, root_template=entry.get("root_template", BucketConfig.root_template))
    return result


def load_buckets(path: Path) -> dict[str, BucketConfig]:
    """The regions' buckets from a TOML file (see :func:`buckets_from_table`); ValueError if bad."""
    try:
        with open(path, "rb") as handle:
            table = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read the buckets file {path}: {exc}") from exc
    return buckets_from_table(table, base=path.parent)


# ---------------------------------------------------------------- pure parts


def relevant(key: str, root: str) -> bool:
    """Whether ``key`` (under ``root``) belongs in a copy: every object but the locks."""
    return key.startswith(root) and not key[len(root):].startswith(SKIPPED_PREFIXES)


def missing_objects(source: Mapping[str, int], target: Mapping[str, int]) -> list[str]:
    """The relative keys of ``source`` that ``target`` lacks or holds at another size, sorted.
    (Objects are named by their content's hash, so the same name and size is the same object;
    the size guards against a truncated earlier copy.)"""
    return sorted(key for key, size in source.items() if target.get(key) != size)


def differences(source: Mapping[str, int], target: Mapping[str, int]) -> str:
    """Why ``target`` does not hold every object of ``source`` (empty when it does)."""
    absent = missing_objects(source, target)
    if not absent:
        return ""
    return (f"{len(absent)} of {len(source)} objects missing or of another size (first: {absent[0]}); "
            f"{len(target)} objects in the target")


# ---------------------------------------------------------------- the copy


def listing(config: BucketConfig, root: str, client=None) -> dict[str, int]:
    """Relative key → size of every relevant object under ``root`` in the bucket."""
    client = client or config.client()
    result: dict[str, int] = {}
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=config.bucket, Prefix=root):
            for item in page.get("Contents", ()):
                if relevant(item["Key"], root):
                    result[item["Key"][len(root):]] = item["Size"]
    except _s3_errors() as exc:
        raise RepositoryCopyError(f"cannot list s3://{config.bucket}/{root}: {exc}") from exc
    return result


def copy_repository(source: BucketConfig, target: BucketConfig, project_id: str, *,
                    progress: Callable[[int, int], None] | None = None) -> CopyReport:
    """Copy the project's repository from ``source`` to ``target`` (only what the target lacks),
    then verify both listings agree; raises RepositoryCopyError. ``progress(done, total)`` is
    called after each copied object."""
    source_root, target_root = source.root(project_id), target.root(project_id)
    source_client, target_client = source.client(), target.client()
    have = listing(source, source_root, source_client)
    if not have:
        raise RepositoryCopyError(f"s3://{source.bucket}/{source_root} holds no repository objects")
    todo = missing_objects(have, listing(target, target_root, target_client))
    server_side = source.same_account(target)
    for done, name in enumerate(todo, 1):
        source_key, target_key = source_root + name, target_root + name
        try:
            if server_side:
                target_client.copy({"Bucket": source.bucket, "Key": source_key}, target.bucket, target_key)
            else:
                body = source_client.get_object(Bucket=source.bucket, Key=source_key)["Body"]
                try:
                    target_client.upload_fileobj(body, target.bucket, target_key)
                finally:
                    body.close()
        except _s3_errors() as exc:
            raise RepositoryCopyError(f"copying {name} to s3://{target.bucket}/{target_root} failed: {exc}") from exc
        if progress is not None:
            progress(done, len(todo))
    problem = differences(have, listing(target, target_root, target_client))
    if problem:
        raise RepositoryCopyError(f"the copy in s3://{target.bucket}/{target_root} does not match the source: "
                                  f"{problem}")
    return CopyReport(len(have), sum(have.values()), len(todo), sum(have[name] for name in todo))


def delete_repository(config: BucketConfig, project_id: str) -> int:
    """Delete every object under the project's root (locks too); returns how many. Idempotent."""
    root = config.root(project_id)
    client = config.client()
    deleted = 0
    try:
        while True:
            page = client.list_objects_v2(Bucket=config.bucket, Prefix=root, MaxKeys=DELETE_BATCH)
            keys = [{"Key": item["Key"]} for item in page.get("Contents", ())]
            if not keys:
                return deleted
            client.delete_objects(Bucket=config.bucket, Delete={"Objects": keys, "Quiet": True})
            deleted += len(keys)
    except _s3_errors() as exc:
        raise RepositoryCopyError(f"cannot delete s3://{config.bucket}/{root}: {exc}") from exc


def _s3_errors() -> tuple[type[Exception], ...]:
    """The errors of an S3 call (botocore's), imported when an error is matched: importing
    botocore costs every `buckets` command a quarter of a second."""
    from botocore.exceptions import BotoCoreError, ClientError

    return BotoCoreError, ClientError
