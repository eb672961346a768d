"""The node-local cache of stored files (raysweep.store.storage): private to its user, and a copy that
follows the stored file whenever it is rewritten, even to the same size."""

from __future__ import annotations

import os
import stat

import pytest
from upath import UPath

from raysweep.store.storage import StorageError, fetch_file, node_cache_dir


def test_the_default_cache_is_per_user_and_private(tmp_path, monkeypatch):
    monkeypatch.delenv("RAYSWEEP_CACHE", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # gettempdir() reads TMPDIR again
    cache = node_cache_dir("files")
    assert cache.parent == tmp_path / f"raysweep-cache-{os.getuid()}"
    for directory in (cache, cache.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_a_cache_dir_others_can_write_is_refused(tmp_path, monkeypatch):
    planted = tmp_path / "shared-cache"
    planted.mkdir()
    planted.chmod(0o777)  # what anyone could create first in a shared /tmp
    monkeypatch.setenv("RAYSWEEP_CACHE", str(planted))
    with pytest.raises(StorageError, match=r"writable by others \(mode 777\); remove it, or set RAYSWEEP_CACHE"):
        node_cache_dir("files")


def test_a_rewritten_stored_file_is_fetched_again_even_at_the_same_size(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    stored = UPath("memory://bucket/sweep/catalog.duckdb")
    stored.write_bytes(b"version-1")
    first = fetch_file(stored, "catalog")
    assert first.read_bytes() == b"version-1"
    assert fetch_file(stored, "catalog") == first  # unchanged: the same copy, not fetched again
    stored.write_bytes(b"version-2")
    second = fetch_file(stored, "catalog")
    assert second.read_bytes() == b"version-2"
    assert not first.exists()  # the superseded copy is gone
