"""Opening a results database: the SQLite connection, its settings, migrations and transactions.

The database runs in WAL mode with a busy timeout and takes its write lock up front (``BEGIN
IMMEDIATE``), so two processes can write to the same file at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

from device_results.store.errors import StoreError
from device_results.store.schema import migrate, needs_migration

log = logging.getLogger(__name__)


class StoreConnection:
    """An open results database; the base that the store's reading and writing parts share.

    Args:
        path: the SQLite file (created with its folder when absent).
        busy_timeout_s: how long a writer waits for another process's write lock.

    Raises:
        StoreError: the file is not an SQLite database, or was written by a newer emobench.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_s: float = 60.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None)
            self._conn.row_factory = sqlite3.Row
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            mode = self._journal_mode_wal(busy_timeout_s)
            if str(mode).lower() != "wal":
                log.warning("%s: journal mode is %s, not WAL (a filesystem without shared memory?)", self.path, mode)
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._init_schema()
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(Exception):
                self._conn.close()
            raise StoreError(f"{self.path} is not a usable emobench results database ({exc})",
                             hint="point --db at a new file or at a database written by emobench") from exc

    def _journal_mode_wal(self, busy_timeout_s: float) -> str:
        # Switching a new database to WAL needs an exclusive lock, and SQLite answers "database is locked"
        # at once (no busy handler) while another process does the same: retry for the busy timeout.
        deadline = time.monotonic() + busy_timeout_s
        while True:
            try:
                return str(self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _init_schema(self) -> None:
        if not needs_migration(self._conn, self.path):
            return
        with self.transaction() as conn:
            migrate(conn, self.path)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding the database's write lock from its first statement."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def integrity_check(self) -> str:
        """SQLite's integrity check ('ok' when the file is sound)."""
        return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])
