"""Reading tree blobs straight from a restic-format repository (the format rustic and restic
share) — a local directory or a bucket's objects — with the master key the engine printed
(``rustic cat masterkey``).

Why: rustic lists a snapshot with metadata only one tree blob per process (``cat tree-blob``),
and each process opens the repository and loads its index again. A 1 GB project of ~600
directories took 600 processes and twice as long as restoring it. Here the index is read once
per repository (again only when its index files change) and every tree blob of a listing is a
read of a few kilobytes.

Every byte read is authenticated before it is used: the Poly1305-AES MAC of each encrypted
file or blob is checked, and a blob's plaintext must hash (SHA-256) to its id. Anything this
module cannot read — another repository version, a pack it cannot find, a MAC that does not
match — is :class:`Unreadable`, and the caller falls back to the engine, which then reports the
repository's state itself. Nothing here writes to the repository.

The format (restic's design document, "Repository Format"): an encrypted file or blob is
IV (16 bytes) ‖ AES-256-CTR ciphertext ‖ Poly1305-AES MAC (16 bytes) of the ciphertext; an
unpacked file (index, snapshot) of a version 2 repository starts, once decrypted, with 0x02
and a zstd frame, or is plain JSON; a blob whose index entry has ``uncompressed_length`` is a
zstd frame; packs live at ``data/<first two hex digits>/<id>``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.poly1305 import Poly1305

IV_BYTES = 16
MAC_BYTES = 16
COMPRESSED_UNPACKED = 0x02
_HEX = frozenset("0123456789abcdef")


class Unreadable(Exception):
    """What was asked cannot be read (or authenticated) here: use the engine instead."""


@dataclass(frozen=True)
class MasterKey:
    encrypt: bytes  # AES-256 key
    mac_k: bytes  # AES-128 key of the Poly1305-AES nonce encryption
    mac_r: bytes  # Poly1305 r (clamped by the primitive)

    @classmethod
    def from_json(cls, text: str) -> MasterKey:
        """The key ``cat masterkey`` prints. Raises Unreadable when it is not one."""
        try:
            data = json.loads(text)
            key = cls(encrypt=base64.b64decode(data["encrypt"], validate=True),
                      mac_k=base64.b64decode(data["mac"]["k"], validate=True),
                      mac_r=base64.b64decode(data["mac"]["r"], validate=True))
        except (ValueError, KeyError, TypeError) as exc:
            raise Unreadable(f"not a master key: {type(exc).__name__}") from None
        if (len(key.encrypt), len(key.mac_k), len(key.mac_r)) != (32, 16, 16):
            raise Unreadable("not a master key: wrong key lengths")
        return key


def decrypt(key: MasterKey, data: bytes) -> bytes:
    """The plaintext of an encrypted file or blob, its MAC checked first. Raises Unreadable."""
    if len(data) < IV_BYTES + MAC_BYTES:
        raise Unreadable("too short for an encrypted blob")
    iv, ciphertext, tag = data[:IV_BYTES], data[IV_BYTES:-MAC_BYTES], data[-MAC_BYTES:]
    encryptor = Cipher(algorithms.AES(key.mac_k), modes.ECB()).encryptor()
    s = encryptor.update(iv) + encryptor.finalize()
    try:
        Poly1305.verify_tag(key.mac_r + s, ciphertext, tag)
    except InvalidSignature:
        raise Unreadable("MAC mismatch (another key, or damaged data)") from None
    decryptor = Cipher(algorithms.AES(key.encrypt), modes.CTR(iv)).decryptor()
    return decryptor.update(ciphertext) + decryptor.finalize()


def _zstd_decompress(data: bytes, *, size_hint: int = 0) -> bytes:
    import zstandard  # imported when a compressed repository is read

    try:
        # A stream: restic does not always write the content size into the frame header.
        out = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    except zstandard.ZstdError as exc:
        raise Unreadable(f"zstd: {exc}") from None
    if size_hint and len(out) != size_hint:
        raise Unreadable(f"zstd: {len(out)} bytes where the index says {size_hint}")
    return out


def unpacked_json(plaintext: bytes) -> object:
    """An unpacked file's JSON (index, snapshot): plain, or 0x02 and a zstd frame (version 2)."""
    if plaintext[:1] == bytes([COMPRESSED_UNPACKED]):
        plaintext = _zstd_decompress(plaintext[1:])
    try:
        return json.loads(plaintext)
    except (ValueError, RecursionError):
        raise Unreadable("an unpacked file that is not JSON") from None


@dataclass(frozen=True)
class BlobLocation:
    pack: str
    offset: int
    length: int
    uncompressed_length: int  # 0: stored uncompressed


def index_entries(data: object) -> dict[str, BlobLocation]:
    """The tree blobs of one index file (``{"packs": [{"id", "blobs": [...]}]}``)."""
    found: dict[str, BlobLocation] = {}
    try:
        for pack in data["packs"] or ():  # type: ignore[index]
            pack_id = pack["id"]
            for blob in pack["blobs"] or ():
                if blob["type"] != "tree":
                    continue
                found[blob["id"]] = BlobLocation(pack_id, int(blob["offset"]), int(blob["length"]),
                                                 int(blob.get("uncompressed_length") or 0))
    except (KeyError, TypeError, ValueError):
        raise Unreadable("an index file that is not an index") from None
    return found


def _is_id(text: str) -> bool:
    return len(text) == 64 and set(text) <= _HEX


class Storage(Protocol):
    """Where a repository's files are: names relative to its root ("index/<id>",
    "data/ab/<id>"). Both methods raise Unreadable for anything that goes wrong."""

    def names(self, directory: str) -> list[str]:
        """The names of the files in ``directory`` ("index")."""

    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """``length`` bytes of file ``name`` from ``offset`` (None: to its end)."""


class LocalFiles:
    """A repository in a local directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def names(self, directory: str) -> list[str]:
        try:
            return os.listdir(self.root / directory)
        except OSError as exc:
            raise Unreadable(f"{directory}: {exc.strerror}") from None

    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            with open(self.root / name, "rb") as file:
                file.seek(offset)
                return file.read() if length is None else file.read(length)
        except FileNotFoundError:
            raise Missing(name) from None
        except OSError as exc:
            raise Unreadable(f"{name}: {exc.strerror}") from None


class Missing(Unreadable):
    """A file named in a listing is gone (a concurrent prune replaced it)."""


class RepositoryReader:
    """Tree blobs of one repository. The index (tree blobs only) is read once, and again when a
    tree is not in it and the set of index files changed; tree packs read whole are kept (up to ``pack_cache_bytes``)
    so a listing reads each once. Thread-safe (reads run in worker threads)."""

    def __init__(self, storage: Storage, *, whole_packs: bool = False, pack_cache_bytes: int = 32 << 20) -> None:
        self.storage = storage
        self._whole_packs = whole_packs  # object storage: one request per pack, not per blob
        self._lock = threading.Lock()
        self._index_files: frozenset[str] = frozenset()
        self._trees: dict[str, BlobLocation] = {}
        self._packs: OrderedDict[str, bytes] = OrderedDict()
        self._pack_bytes = 0
        self._pack_cache_bytes = pack_cache_bytes

    def tree_blob(self, key: MasterKey, tree_id: str) -> bytes:
        """The plaintext of tree blob ``tree_id`` (what ``cat tree-blob`` prints). Raises
        Unreadable when it is not found or does not authenticate."""
        if not _is_id(tree_id):
            raise Unreadable("not a blob id")
        location = self._locate(key, tree_id)
        try:
            data = self._blob_bytes(location)
        except Missing:
            with self._lock:  # the index read is older than a prune: read it again next time
                self._trees, self._index_files = {}, frozenset()
            raise
        if len(data) != location.length:
            raise Unreadable(f"pack {location.pack[:8]} is shorter than its index says")
        plaintext = decrypt(key, data)
        if location.uncompressed_length:
            plaintext = _zstd_decompress(plaintext, size_hint=location.uncompressed_length)
        if hashlib.sha256(plaintext).hexdigest() != tree_id:
            raise Unreadable(f"tree blob {tree_id[:8]} does not hash to its id")
        return plaintext

    def _blob_bytes(self, location: BlobLocation) -> bytes:
        name = f"data/{location.pack[:2]}/{location.pack}"
        if not self._whole_packs:
            return self.storage.read(name, location.offset, location.length)
        with self._lock:
            pack = self._packs.get(location.pack)
            if pack is not None:
                self._packs.move_to_end(location.pack)
        if pack is None:
            pack = self.storage.read(name)
            if hashlib.sha256(pack).hexdigest() != location.pack:
                raise Unreadable(f"pack {location.pack[:8]} does not hash to its name")
            with self._lock:
                if location.pack not in self._packs and len(pack) <= self._pack_cache_bytes:
                    self._packs[location.pack] = pack
                    self._pack_bytes += len(pack)
                    while self._pack_bytes > self._pack_cache_bytes:
                        _, dropped = self._packs.popitem(last=False)
                        self._pack_bytes -= len(dropped)
        return pack[location.offset:location.offset + location.length]

    def _locate(self, key: MasterKey, tree_id: str) -> BlobLocation:
        with self._lock:
            location = self._trees.get(tree_id)
            if location is None:
                # Not in the index as last read: list the index files again (one LIST for a
                # bucket) only then, and read it again when they changed. A tree found in an
                # index that a prune replaced since is read from a pack that may be gone: that
                # read fails, and the engine is asked.
                names = frozenset(name for name in self.storage.names("index") if _is_id(name))
                if names != self._index_files:
                    if names > self._index_files:
                        # Only added (a backup since): an index file is named by the hash of
                        # its content and never changes, so the ones read stay true; read the
                        # new ones only, not the whole index again (it grows with the project).
                        self._trees = {**self._trees, **self._read_index(key, names - self._index_files)}
                    else:  # some were replaced (a prune): what they said may name packs now gone
                        self._trees = self._read_index(key, names)
                    self._index_files = names
                location = self._trees.get(tree_id)
        if location is None:
            raise Unreadable(f"tree blob {tree_id[:8]} is in no index file")
        return location

    def _read_index(self, key: MasterKey, names: frozenset[str]) -> dict[str, BlobLocation]:
        trees: dict[str, BlobLocation] = {}
        for name in sorted(names):
            try:
                data = self.storage.read(f"index/{name}")
            except Missing:
                continue  # replaced by a concurrent prune; its blobs are in the index that replaced it
            if hashlib.sha256(data).hexdigest() != name:
                raise Unreadable(f"index file {name[:8]} does not hash to its name")
            trees.update(index_entries(unpacked_json(decrypt(key, data))))
        return trees
