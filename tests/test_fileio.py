"""Atomic writes: all or nothing, and ordinary permissions (checkpoints must be readable on a cluster)."""

from __future__ import annotations

import os
import stat

import pytest

from emobench_common.fileio import atomic_write, atomic_write_json, atomic_write_text, sha256_file


def test_atomic_write_gets_ordinary_permissions_and_private_stays_0600(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "manifest.json", "{}")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644  # regression: mkstemp left every output 0600
        with atomic_write(tmp_path / "key", "wb", private=True) as fh:
            fh.write(b"secret")
        assert stat.S_IMODE((tmp_path / "key").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = atomic_write_json(tmp_path / "a.json", {"v": 1})
    before = sha256_file(target)
    with pytest.raises(RuntimeError), atomic_write(target, "w") as fh:
        fh.write('{"v": 2, "half": ')
        raise RuntimeError("interrupted")
    assert sha256_file(target) == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
