"""Small pieces every emobench package shares: error types, atomic file writes, hashing, shared names,
the input contract and the filters for third-party noise."""

from emobench_common import quiet  # installs the log filters for known third-party noise before torch loads
from emobench_common.errors import EmobenchError
from emobench_common.fileio import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    sha256_file,
)

__all__ = [
    "EmobenchError",
    "quiet",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "sha256_file",
]
