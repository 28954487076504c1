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
