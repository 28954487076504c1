"""Object-storage chores the engine cannot do (boto3): check or create a bucket,
measure a repository, delete all of a repository's objects.

Every function is blocking; the agent calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

from agent import errors
from agent.repository import S3Spec

# boto3 and botocore are imported by the functions that use them: importing them costs about
# 0.2 s of CPU, which every agent start paid, with or without an S3 repository.
_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "InvalidToken"}


def _client(spec: S3Spec):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=spec.endpoint or None,
        region_name=spec.region or "us-east-1",
        aws_access_key_id=spec.access_key_id or None,
        aws_secret_access_key=spec.secret_access_key or None,
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10, read_timeout=60),
    )


def _translate(exc: Exception, what: str) -> errors.BucketsError:
    import botocore.exceptions

    if isinstance(exc, botocore.exceptions.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _AUTH_CODES:
            return errors.PermissionDenied(f"{what}: the S3 credentials were refused ({code})")
        if code in ("NoSuchBucket", "404", "NotFound"):
            return errors.NotFound(f"{what}: no such bucket")
        if code in ("SlowDown", "503", "ServiceUnavailable", "InternalError", "500"):
            return errors.Unavailable(f"{what}: the S3 endpoint is unavailable ({code})")
        return errors.Internal(f"{what}: S3 error {code}")
    if isinstance(exc, (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError,
                        botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectionClosedError)):
        return errors.Unavailable(f"{what}: the S3 endpoint cannot be reached")
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return errors.FailedPrecondition(f"{what}: no S3 credentials configured")
    return errors.Internal(f"{what}: {exc}")


def _recorder(statuses: list[int]):
    """A botocore ``needs-retry`` handler appending the status of each answer that refused the
    request's signing region (301, 400) before boto3 retried it in the bucket's region."""

    def record(response=None, **_) -> None:
        if response is not None and response[0] is not None and response[0].status_code in (301, 400):
            statuses.append(response[0].status_code)

    return record


def ensure_bucket(spec: S3Spec, *, create: bool) -> bool:
    """Make sure the bucket exists; returns True when it was created.

    Raises NotFound (missing and ``create`` is False), PermissionDenied,
    Unavailable, FailedPrecondition (the endpoint refused the repository's
    region and the bucket answered from another one).
    """
    client = _client(spec)
    refused_region: list[int] = []
    client.meta.events.register("needs-retry.s3.HeadBucket", _recorder(refused_region))
    try:
        answer = client.head_bucket(Bucket=spec.bucket)
    except Exception as exc:
        error = _translate(exc, f"bucket {spec.bucket}")
        if not isinstance(error, errors.NotFound):
            raise error from None
    else:
        region = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region", "")
        if refused_region and region and spec.region and region != spec.region:
            # boto3 follows the server to the bucket's region by itself; the engines do not
            # (restic retries the refusal for minutes, rustic calls it unreachable).
            raise errors.FailedPrecondition(
                f"bucket {spec.bucket} is in region {region}, not in the repository's region {spec.region}: "
                f"the storage endpoint refuses requests signed for {spec.region}")
        return False
    if not create:
        raise errors.NotFound(f"bucket {spec.bucket} does not exist and the agent may not create buckets")
    try:
        if spec.region and spec.region != "us-east-1":
            client.create_bucket(
                Bucket=spec.bucket, CreateBucketConfiguration={"LocationConstraint": spec.region}
            )
        else:
            client.create_bucket(Bucket=spec.bucket)
    except Exception as exc:
        raise _translate(exc, f"creating bucket {spec.bucket}") from None
    return True


def _objects(client, spec: S3Spec):
    prefix = spec.root.strip("/") + "/"
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=spec.bucket, Prefix=prefix):
        yield from page.get("Contents", [])


def names_under(spec: S3Spec, directory: str, prefix: str = "") -> list[str]:
    """The names of the objects in the repository's ``directory`` (e.g. "snapshots") that
    start with ``prefix``: one LIST request per thousand. Raises a BucketsError."""
    root = spec.root.strip("/")
    where = f"{root}/{directory}/" if root else f"{directory}/"
    client = _client(spec)
    try:
        names = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=spec.bucket, Prefix=where + prefix):
            names += [item["Key"][len(where):] for item in page.get("Contents", [])]
        return names
    except Exception as exc:
        raise _translate(exc, f"listing {spec.bucket}/{where}") from None


def repository_size(spec: S3Spec) -> tuple[int, int]:
    """Return (bytes, objects) stored under the repository's root."""
    client = _client(spec)
    try:
        total = count = 0
        for item in _objects(client, spec):
            total += item["Size"]
            count += 1
        return total, count
    except Exception as exc:
        raise _translate(exc, f"measuring {spec.bucket}/{spec.root}") from None


def delete_repository(spec: S3Spec) -> int:
    """Delete every object under the repository's root; returns how many were deleted (0 when already gone)."""
    client = _client(spec)
    deleted = 0
    try:
        batch: list[dict] = []
        for item in _objects(client, spec):
            batch.append({"Key": item["Key"]})
            if len(batch) == 1000:
                deleted += _delete_batch(client, spec, batch)
                batch = []
        if batch:
            deleted += _delete_batch(client, spec, batch)
    except errors.BucketsError:
        raise
    except Exception as exc:
        error = _translate(exc, f"deleting {spec.bucket}/{spec.root}")
        if isinstance(error, errors.NotFound):
            return deleted
        raise error from None
    return deleted


def _delete_batch(client, spec: S3Spec, batch: list[dict]) -> int:
    response = client.delete_objects(Bucket=spec.bucket, Delete={"Objects": batch, "Quiet": True})
    failed = response.get("Errors", [])
    if failed:
        raise errors.Unavailable(f"{len(failed)} objects of {spec.bucket}/{spec.root} could not be deleted")
    return len(batch)


class ObjectFiles:
    """A repository's objects read as files (agent/engine/repository_format.py's Storage):
    names relative to the repository's root. Errors are the format reader's Unreadable (the
    engine is asked instead, and reports the storage's state itself)."""

    def __init__(self, spec: S3Spec) -> None:
        self._spec = spec
        self._prefix = spec.root.strip("/") + "/"
        self._client = None

    def _s3(self):
        if self._client is None:
            self._client = _client(self._spec)
        return self._client

    def names(self, directory: str) -> list[str]:
        from agent.engine.repository_format import Unreadable

        prefix = f"{self._prefix}{directory}/"
        try:
            found = []
            for page in self._s3().get_paginator("list_objects_v2").paginate(Bucket=self._spec.bucket, Prefix=prefix):
                found += [item["Key"][len(prefix):] for item in page.get("Contents", [])]
            return found
        except Exception as exc:
            raise Unreadable(str(_translate(exc, f"listing {directory}"))) from None

    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        from agent.engine.repository_format import Missing, Unreadable

        request = {"Bucket": self._spec.bucket, "Key": self._prefix + name}
        if offset or length is not None:
            request["Range"] = f"bytes={offset}-" + ("" if length is None else str(offset + length - 1))
        try:
            answer = self._s3().get_object(**request)
            with answer["Body"] as body:
                return body.read()
        except Exception as exc:
            error = _translate(exc, f"reading {name}")
            if isinstance(error, errors.NotFound) or "NoSuchKey" in str(exc):
                raise Missing(name) from None
            raise Unreadable(str(error)) from None
