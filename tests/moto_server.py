"""moto's S3 server (``python -m tests.moto_server ARGS`` = ``python -m moto.server ARGS``), with
the SigV4 query canonicalisation S3 itself does.

moto checks a signature against the query string exactly as sent; AWS first URI-encodes every
key and value (RFC 3986 unreserved characters kept). rustic's S3 client (opendal) signs the
encoded form but sends list prefixes with '/' unencoded (``?prefix=repo/keys/``), so on plain
moto every rustic LIST fails with SignatureDoesNotMatch, which real S3 and MinIO accept.
Clients that send the encoded form (boto3, restic) are unaffected: decoding then encoding
again gives the same text.
"""

from __future__ import annotations

import sys
from urllib.parse import quote, unquote

from botocore.auth import SigV4Auth


def _canonical_query_string_url(self, parts) -> str:
    if not parts.query:
        return ""
    pairs = []
    for pair in parts.query.split("&"):
        key, _, value = pair.partition("=")
        pairs.append((quote(unquote(key), safe="-_.~"), quote(unquote(value), safe="-_.~")))
    return "&".join(f"{key}={value}" for key, value in sorted(pairs))


def main() -> None:
    SigV4Auth._canonical_query_string_url = _canonical_query_string_url
    from moto.server import main as moto_main

    moto_main(sys.argv[1:])


if __name__ == "__main__":
    main()
