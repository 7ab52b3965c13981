"""The SQLite results store: the system of record of every ablation run.

One file holds many runs. What a run records:

- ``runs``: the plan (JSON, with its sha256), the artifacts' combined hash, status
  (``incomplete`` until it ends, then ``complete`` or ``partial`` when some cells failed), a status
  message, created/finished times, the folder of raw runner logs.
- ``targets``: each target's kind, DeviceInfo or host info (JSON), library versions, whether it is
  virtual, threads, CPU affinity mask and how numbers were obtained.
- ``target_models``: which models a target can run, and why not where it cannot (e.g. dynamic INT8
  on CUDA, ONNX on a phone): stated, not hidden.
- ``artifacts``: manifest entries with format, precision, quantization, path, bytes and sha256.
- ``experiments``: index, dataset role and name, exact image ids, the sha256 of the input tensor.
- ``cells``: one row per (target, experiment, model): status ``ok`` / ``failed``, the runner's
  message and output when it failed, the order the model ran in, threads, affinity, how obtained.
- ``latencies``: one row per timed repeat (a whole batch), in ms.
- ``predictions``: per image: id, label, prediction, correct, top-1 probability, logits (optional).
- ``telemetry``: temperatures and CPU frequencies before and after each experiment, cooldown wait.
- ``target_experiments``: the marker that an (experiment, target) is finished.

Everything about one (experiment, target) is written in ONE transaction together with its marker,
so a crash or a kill loses at most the experiment in flight, and resume redoes exactly that one.
The database runs in WAL mode with a busy timeout and takes its write lock up front (``BEGIN
IMMEDIATE``), so two processes can write to the same file at once.

The package's modules: ``schema`` (tables, version, migrations), ``records`` (the frozen records
written and read), ``connection`` (opening, settings, transactions), ``writing`` and ``reading``
(the two halves of ``ResultsStore``), ``errors``. Import from ``device_results.store``.
"""

from __future__ import annotations

from device_results.store.errors import AlreadyRecordedError, RunNotFoundError, StoreError
from device_results.store.reading import RunReader
from device_results.store.records import (
    MEASURED_SOURCES,
    TELEMETRY_SOURCES,
    ArtifactRecord,
    CellResult,
    ExperimentResult,
    ExperimentRow,
    PredictionRow,
    RunRow,
    TargetRecord,
    Telemetry,
    artifacts_fingerprint,
    canonical_json,
    sha256_text,
    utc_now,
)
from device_results.store.schema import CELL_STATUSES, RUN_STATUSES, SCHEMA_VERSION, TABLE_ORDER
from device_results.store.writing import RunWriter, new_run_id

__all__ = [
    "CELL_STATUSES",
    "MEASURED_SOURCES",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "TABLE_ORDER",
    "TELEMETRY_SOURCES",
    "AlreadyRecordedError",
    "ArtifactRecord",
    "CellResult",
    "ExperimentResult",
    "ExperimentRow",
    "PredictionRow",
    "ResultsStore",
    "RunNotFoundError",
    "RunRow",
    "StoreError",
    "TargetRecord",
    "Telemetry",
    "artifacts_fingerprint",
    "canonical_json",
    "new_run_id",
    "sha256_text",
    "utc_now",
]


class ResultsStore(RunWriter, RunReader):
    """A results database. Use as a context manager or call ``close()``.

    Args:
        path: the SQLite file (created with its folder when absent).
        busy_timeout_s: how long a writer waits for another process's write lock.

    Raises:
        StoreError: the file is not an SQLite database, or was written by a newer emobench.
    """
