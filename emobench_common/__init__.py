"""Small pieces every emobench package shares: error types, atomic file writes, hashing."""

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
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "sha256_file",
]
