"""Test repositories with a cheap key: what ``restic init`` writes, made here in a millisecond.

Why: every engine run derives the repository's user key from the password with scrypt, at the
parameters the key file names. ``restic init`` (Debian's 0.14) calibrates them to about half a
second of the machine (here N=32768, r=8, p=4..5: ~0.8 s of CPU per run, ~2.7 s for the init
itself); rustic 0.11.4 writes N=131072, r=8, p=1 (~0.4 s per run). Over a suite of a few
thousand engine runs that was most of its CPU. restic's own tests use low KDF parameters for the
same reason. A repository made here is a real one of the restic repository format, version 2
(``config``: version, a random id, a random irreducible chunker polynomial, encrypted with a
random master key; ``keys/<sha256 of the file>``: that master key encrypted with a user key from
scrypt of the password at :data:`CHEAP` parameters; the empty ``data/00..ff``, ``index``,
``locks``, ``snapshots`` directories, modes as restic makes them). Every engine opens it as it
opens its own (tests/unit/test_cheap_repository.py: restic 0.14, restic 0.18, rustic back up,
``check`` and refuse a wrong password), it just skips half a second of key derivation.

Where tests use it: ``AgentProcess.make_repository`` (tests/harness.py) writes one where the
agent's own configuration puts a project's repository (local or S3); ``create_project`` calls
it, and ``AgentProcess.backup`` calls ``make_missing_repository`` before a project's first
Backup (on unless ``make_repositories`` is off). What it is not: the agent's first-use
``init``. A test on such a repository tests everything after the init; tests of the init
itself and of the engines (the conformance suite, the interop tests) turn it off and let the
agent initialise, as it does wherever no repository exists.

Formats (restic's design document, ``internal/crypto``, ``internal/repository/key.go``):
encrypted data is IV (16 random bytes) ‖ AES-256-CTR(encryption key, IV)(plaintext) ‖ MAC,
the MAC being Poly1305 over the ciphertext with the key r ‖ AES-128(k, IV); a key file is JSON
(created, username, hostname, kdf "scrypt", N, r, p, salt (64 bytes), data); scrypt's 64 output
bytes are the user key's encryption key (32), MAC k (16) and MAC r (16).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import secrets
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.poly1305 import Poly1305


@dataclass(frozen=True)
class KdfParams:
    n: int
    r: int
    p: int


# About a millisecond of scrypt; a power of two, as every engine requires.
CHEAP = KdfParams(n=1024, r=8, p=1)
SALT_BYTES = 64  # restic refuses another salt length
POLYNOMIAL_DEGREE = 53  # restic's chunker


@dataclass(frozen=True)
class MasterKey:
    encrypt: bytes  # 32 bytes, AES-256
    mac_k: bytes  # 16 bytes, AES-128 for the Poly1305 nonce
    mac_r: bytes  # 16 bytes, Poly1305 r

    @classmethod
    def random(cls) -> "MasterKey":
        return cls(secrets.token_bytes(32), secrets.token_bytes(16), secrets.token_bytes(16))

    @classmethod
    def from_kdf_output(cls, derived: bytes) -> "MasterKey":
        return cls(derived[:32], derived[32:48], derived[48:64])

    def to_json(self) -> dict:
        b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
        return {"mac": {"k": b64(self.mac_k), "r": b64(self.mac_r)}, "encrypt": b64(self.encrypt)}

    @classmethod
    def from_json(cls, value: dict) -> "MasterKey":
        raw = lambda text: base64.b64decode(text)  # noqa: E731
        return cls(raw(value["encrypt"]), raw(value["mac"]["k"]), raw(value["mac"]["r"]))


def seal(key: MasterKey, plaintext: bytes) -> bytes:
    """IV ‖ AES-256-CTR ciphertext ‖ Poly1305-AES MAC of ``plaintext`` under ``key``."""
    iv = secrets.token_bytes(16)
    encryptor = Cipher(algorithms.AES(key.encrypt), modes.CTR(iv)).encryptor()
    ciphertext = encryptor.update(plaintext) + encryptor.finalize()
    return iv + ciphertext + Poly1305.generate_tag(key.mac_r + _nonce_part(key, iv), ciphertext)


def unseal(key: MasterKey, data: bytes) -> bytes:
    """The plaintext of ``seal``'s output; raises cryptography's InvalidSignature on a wrong key or
    damaged data."""
    iv, ciphertext, tag = data[:16], data[16:-16], data[-16:]
    Poly1305.verify_tag(key.mac_r + _nonce_part(key, iv), ciphertext, tag)
    decryptor = Cipher(algorithms.AES(key.encrypt), modes.CTR(iv)).decryptor()
    return decryptor.update(ciphertext) + decryptor.finalize()


def _nonce_part(key: MasterKey, iv: bytes) -> bytes:
    """The MAC key's second half for ``iv``: AES-128(k, IV)."""
    encryptor = Cipher(algorithms.AES(key.mac_k), modes.ECB()).encryptor()
    return encryptor.update(iv) + encryptor.finalize()


def user_key(password: str, salt: bytes, params: KdfParams) -> MasterKey:
    """The user key scrypt derives from ``password`` at ``params``."""
    derived = hashlib.scrypt(password.encode(), salt=salt, n=params.n, r=params.r, p=params.p,
                             maxmem=min(2**31 - 1, 256 * params.r * (params.n + params.p) + (1 << 24)), dklen=64)
    return MasterKey.from_kdf_output(derived)


def key_file(master: MasterKey, password: str, params: KdfParams = CHEAP) -> bytes:
    """The JSON of a key file holding ``master`` under ``password`` at ``params``."""
    salt = secrets.token_bytes(SALT_BYTES)
    data = seal(user_key(password, salt, params), json.dumps(master.to_json(), separators=(",", ":")).encode())
    created = datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")
    return json.dumps({
        "created": created, "username": "root", "hostname": socket.gethostname(), "kdf": "scrypt",
        "N": params.n, "r": params.r, "p": params.p,
        "salt": base64.b64encode(salt).decode(), "data": base64.b64encode(data).decode(),
    }, separators=(",", ":")).encode()


def open_key_file(content: bytes, password: str) -> tuple[MasterKey, KdfParams]:
    """The master key in a key file and the file's KDF parameters; raises InvalidSignature for a
    wrong password."""
    parsed = json.loads(content)
    params = KdfParams(parsed["N"], parsed["r"], parsed["p"])
    user = user_key(password, base64.b64decode(parsed["salt"]), params)
    return MasterKey.from_json(json.loads(unseal(user, base64.b64decode(parsed["data"])))), params


# ---------------------------------------------------------------- the chunker polynomial

def _poly_mod(a: int, b: int) -> int:
    """a mod b, polynomials over GF(2) as bit masks."""
    degree = b.bit_length()
    while a.bit_length() >= degree:
        a ^= b << (a.bit_length() - degree)
    return a


def _poly_mulmod(a: int, b: int, modulus: int) -> int:
    result = 0
    while b:
        if b & 1:
            result ^= a
        b >>= 1
        a = _poly_mod(a << 1, modulus)
    return result


def _poly_gcd(a: int, b: int) -> int:
    while b:
        a, b = b, _poly_mod(a, b)
    return a


def irreducible(f: int) -> bool:
    """Ben-Or's test: ``f`` (degree d) is irreducible over GF(2) when gcd(f, x^(2^i) - x mod f)
    is 1 for every i in 1..d/2."""
    degree = f.bit_length() - 1
    x = 0b10
    power = x
    for _ in range(degree // 2):
        power = _poly_mulmod(power, power, f)
        if _poly_gcd(f, power ^ x) != 1:
            return False
    return True


def random_polynomial() -> int:
    """A random irreducible polynomial of degree 53, as ``restic init`` picks its chunker's."""
    while True:
        candidate = secrets.randbits(POLYNOMIAL_DEGREE) | (1 << POLYNOMIAL_DEGREE) | 1
        if irreducible(candidate):
            return candidate


# ---------------------------------------------------------------- the repository

def repository_files(password: str, params: KdfParams = CHEAP) -> dict[str, bytes]:
    """{relative path: content} of a new repository's files: ``config`` and its one key."""
    master = MasterKey.random()
    config = {"version": 2, "id": secrets.token_hex(32), "chunker_polynomial": f"{random_polynomial():x}"}
    key = key_file(master, password, params)
    return {"config": seal(master, json.dumps(config, separators=(",", ":")).encode()),
            f"keys/{hashlib.sha256(key).hexdigest()}": key}


def init_local(path: Path, password: str, params: KdfParams = CHEAP) -> Path:
    """Make a new local repository at ``path`` (its parents made, ``path`` itself made
    exclusively: FileExistsError when anything is there) with a key at ``params``. ``config``
    comes last and by a rename, so an engine sees either no repository or a whole one. Returns
    ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.mkdir(mode=0o700)
    try:
        for directory in ("data", "index", "keys", "locks", "snapshots"):
            (path / directory).mkdir(mode=0o700)
        for prefix in range(256):
            (path / "data" / f"{prefix:02x}").mkdir(mode=0o700)
        files = repository_files(password, params)
        for relative in sorted(files, key=lambda name: name == "config"):
            written = path / f"{relative}.making"
            written.write_bytes(files[relative])
            written.chmod(0o400)
            os.rename(written, path / relative)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return path


def init_s3(spec, password: str, params: KdfParams = CHEAP) -> str:
    """Make a new repository under ``spec.root`` in ``spec.bucket`` (an ``agent.repository.S3Spec``;
    the bucket is made when missing, as an agent with ``create_bucket`` would) with a key at
    ``params``: ``config`` last, so an engine never finds a config without its key. Returns the
    root; raises FileExistsError when the root holds a ``config`` already."""
    import boto3
    import botocore.exceptions

    from agent.buckets import ensure_bucket

    ensure_bucket(spec, create=True)
    client = boto3.client("s3", endpoint_url=spec.endpoint or None, region_name=spec.region or "us-east-1",
                          aws_access_key_id=spec.access_key_id or None,
                          aws_secret_access_key=spec.secret_access_key or None)
    root = spec.root.strip("/")
    try:
        client.head_object(Bucket=spec.bucket, Key=f"{root}/config")
    except botocore.exceptions.ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code", "")) not in ("404", "NoSuchKey", "NotFound"):
            raise
    else:
        raise FileExistsError(f"s3://{spec.bucket}/{root} holds a repository already")
    files = repository_files(password, params)
    for relative in sorted(files, key=lambda name: name == "config"):
        client.put_object(Bucket=spec.bucket, Key=f"{root}/{relative}", Body=files[relative])
    return root
