"""The parts of reading a repository's files that need no repository (agent/engine/repository_format.py);
reads of real repositories written by rustic and restic: tests/integration/test_rustic_listing_cache.py."""

from __future__ import annotations

import base64
import json
import os

import pytest

from agent.engine import repository_format as formats


def key_json(encrypt: bytes = b"e" * 32, k: bytes = b"k" * 16, r: bytes = b"r" * 16) -> str:
    return json.dumps({"mac": {"k": base64.b64encode(k).decode(), "r": base64.b64encode(r).decode()},
                       "encrypt": base64.b64encode(encrypt).decode()})


@pytest.mark.parametrize("text", ["", "[]", '{"mac": {}, "encrypt": "x"}', key_json(encrypt=b"short")])
def test_what_is_not_a_master_key_is_unreadable(text: str) -> None:
    with pytest.raises(formats.Unreadable):
        formats.MasterKey.from_json(text)


def test_data_that_does_not_authenticate_is_never_decrypted() -> None:
    key = formats.MasterKey.from_json(key_json())
    with pytest.raises(formats.Unreadable, match="too short"):
        formats.decrypt(key, b"x" * 31)
    with pytest.raises(formats.Unreadable, match="MAC mismatch"):
        formats.decrypt(key, os.urandom(100))


def test_index_entries_keep_tree_blobs_only() -> None:
    tree, data = "a" * 64, "b" * 64
    index = {"packs": [{"id": "p" * 64, "blobs": [
        {"id": tree, "type": "tree", "offset": 0, "length": 50, "uncompressed_length": 90},
        {"id": data, "type": "data", "offset": 50, "length": 10}]}]}
    assert formats.index_entries(index) == {tree: formats.BlobLocation("p" * 64, 0, 50, 90)}
    with pytest.raises(formats.Unreadable):
        formats.index_entries({"packs": [{"blobs": []}]})


# ---------------------------------------------------------------- the index read as it grows


def encrypt(key: formats.MasterKey, plaintext: bytes) -> bytes:
    """What restic writes for ``plaintext``: IV ‖ AES-256-CTR ‖ Poly1305-AES of the ciphertext."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.poly1305 import Poly1305

    iv = os.urandom(16)
    encryptor = Cipher(algorithms.AES(key.encrypt), modes.CTR(iv)).encryptor()
    ciphertext = encryptor.update(plaintext) + encryptor.finalize()
    nonce = Cipher(algorithms.AES(key.mac_k), modes.ECB()).encryptor()
    s = nonce.update(iv) + nonce.finalize()
    return iv + ciphertext + Poly1305.generate_tag(key.mac_r + s, ciphertext)


class MemoryRepository:
    """A repository's files in memory (formats.Storage), counting the reads of index files."""

    def __init__(self, key: formats.MasterKey) -> None:
        self.key = key
        self.files: dict[str, bytes] = {}
        self.index_reads: list[str] = []

    def names(self, directory: str) -> list[str]:
        return [name.split("/", 1)[1] for name in self.files if name.startswith(directory + "/")]

    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if name.startswith("index/"):
            self.index_reads.append(name[len("index/"):][:8])
        if name not in self.files:
            raise formats.Missing(name)
        data = self.files[name]
        return data[offset:] if length is None else data[offset:offset + length]

    def add_tree(self, plaintext: bytes, *, named: str | None = None) -> tuple[str, str]:
        """A pack holding one tree blob and an index file naming it (as ``named``, the blob's own
        hash by default: another id makes an index that lies); returns (tree id, index name)."""
        import hashlib

        tree_id = named or hashlib.sha256(plaintext).hexdigest()
        blob = encrypt(self.key, plaintext)
        pack = os.urandom(8) + blob
        pack_id = hashlib.sha256(pack).hexdigest()
        self.files[f"data/{pack_id[:2]}/{pack_id}"] = pack
        index = json.dumps({"packs": [{"id": pack_id, "blobs": [
            {"id": tree_id, "type": "tree", "offset": 8, "length": len(blob)}]}]}).encode()
        index_file = encrypt(self.key, index)
        index_name = hashlib.sha256(index_file).hexdigest()
        self.files[f"index/{index_name}"] = index_file
        return tree_id, index_name


def test_a_grown_index_is_read_for_its_new_files_only_and_a_lying_one_is_refused() -> None:
    key = formats.MasterKey.from_json(key_json(encrypt=os.urandom(32), k=os.urandom(16), r=os.urandom(16)))
    repository = MemoryRepository(key)
    reader = formats.RepositoryReader(repository)
    first, first_index = repository.add_tree(b'{"nodes": [1]}\n')
    assert reader.tree_blob(key, first) == b'{"nodes": [1]}\n'
    assert repository.index_reads == [first_index[:8]]
    # A backup since: one more index file. Only it is read; what the first said still holds.
    second, second_index = repository.add_tree(b'{"nodes": [2]}\n')
    repository.index_reads.clear()
    assert reader.tree_blob(key, second) == b'{"nodes": [2]}\n'
    assert reader.tree_blob(key, first) == b'{"nodes": [1]}\n'
    assert repository.index_reads == [second_index[:8]]
    # An added index that names a tree by an id its bytes do not hash to: never taken for it.
    wrong, _ = repository.add_tree(b'{"nodes": ["not it"]}\n', named="c" * 64)
    with pytest.raises(formats.Unreadable, match="does not hash to its id"):
        reader.tree_blob(key, wrong)
    # A prune replaced an index file: the whole index is read again (no entry of the gone one kept).
    del repository.files[f"index/{first_index}"]
    third, third_index = repository.add_tree(b'{"nodes": [3]}\n')
    repository.index_reads.clear()
    assert reader.tree_blob(key, third) == b'{"nodes": [3]}\n'
    assert sorted(repository.index_reads) == sorted(n[:8] for n in repository.names("index"))
    with pytest.raises(formats.Unreadable, match="in no index file"):
        reader.tree_blob(key, first)
