"""Fixtures of the results tests: a tiny real export and a small finished ablation run."""

from __future__ import annotations

import pytest

from tests.device_results.tiny_export import build_tiny_export


@pytest.fixture(scope="session")
def tiny_manifest(tmp_path_factory, tiny_sample):
    """manifest.json of the tiny export (built once per session)."""
    return build_tiny_export(tmp_path_factory.getbasetemp() / "tiny_export", tiny_sample)
