"""The tests' S3 server under its old name: MinIO (:mod:`tests.minio_server`), which replaced moto.

``S3Server`` is :class:`tests.minio_server.MinioServer` (the same public interface moto's class
had), kept for code that imports this name (bench/bench.py) until it imports tests.minio_server.
"""

from tests.minio_server import MinioServer as S3Server
from tests.minio_server import free_port

__all__ = ["S3Server", "free_port"]
