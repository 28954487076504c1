"""Before an engine touches a repository in a bucket: the bucket answers the repository's
credentials, signed for the repository's region.

Why the agent asks first instead of letting the engine find out: restic 0.18 retries a refused
request for minutes (an unknown access key id on MinIO: ``Stat: Access Denied.``, retried until
the agent's stall watch ends it), and no engine follows a bucket that lives in another region
(restic retries the refusal, rustic calls the endpoint unreachable). One HEAD of the bucket
(:func:`agent.buckets.ensure_bucket`) says it at once: PermissionDenied, FailedPrecondition
naming both regions, NotFound, Unavailable. A bucket that answered is remembered for
:data:`REMEMBERED_SECONDS` per endpoint, bucket, region and credentials, so the several engine
runs of one operation cost one request.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

from agent import buckets, errors
from agent.repository import Repository, S3Spec

REMEMBERED_SECONDS = 60.0
_answered: dict[tuple[str, ...], float] = {}


def _key(spec: S3Spec) -> tuple[str, ...]:
    # The secret only as a digest: this dict lives as long as the agent.
    secret = hashlib.sha256(spec.secret_access_key.encode()).hexdigest()
    return (spec.endpoint, spec.bucket, spec.region, spec.access_key_id, secret)


async def require(repo: Repository, *, create: bool = False) -> bool:
    """Raise unless ``repo``'s bucket answers (nothing to do for a local repository); with
    ``create`` a missing bucket is created (returns True then). Raises PermissionDenied,
    FailedPrecondition (another region), NotFound (no bucket, and not ``create``), Unavailable."""
    spec = repo.s3
    if spec is None:
        return False
    key = _key(spec)
    answered = _answered.get(key)
    if answered is not None and time.monotonic() - answered < REMEMBERED_SECONDS:
        return False
    try:
        created = await asyncio.to_thread(buckets.ensure_bucket, spec, create=create)
    except errors.NotFound:
        raise errors.NotFound(f"bucket {spec.bucket} does not exist at {spec.endpoint or 'the default endpoint'}"
                              + ("" if create else " (and the agent may not create buckets)")) from None
    _answered[key] = time.monotonic()
    return created


def forget() -> None:
    """Forget every bucket that answered (the next engine run asks again)."""
    _answered.clear()
