"""The virtual device's ``executor_runner``: ExecuTorch's runner command line, run on the host.

It follows ``examples/portable/executor_runner/executor_runner.cpp``: the same gflags
(``--model_path --inputs --output_file --num_executions --cpu_threads --print_output
--method_name``), the same log messages (``Iteration i of N: X ms``, ``Model executed successfully
N time(s) in X ms.``), the same files (``<output_file>-<i>.bin``) and the same exit statuses: 1 for
a bad flag or a model that does not parse, 134 (SIGABRT from ``ET_CHECK_MSG``) for a missing
model, unreadable inputs or inputs of the wrong size. The model runs in executorch's Python
runtime (``executorch.runtime.Runtime``) on the host CPU.

Logging follows the profile: ``stderr`` (a Linux build: ``I HH:MM:SS.uuuuuu
executorch:executor_runner.cpp:LINE] message``, time since start), ``logcat`` (ExecuTorch's
Android platform layer: tag ``ExecuTorch``, no prefix) or ``none`` (logging compiled out).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from android_bench.virtual.fs import FsError
from android_bench.virtual.shell.context import Cancelled, Ctx

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

RUNNER_STUB_MAGIC = b"#!/system/bin/sh\n# emobench-virtual-executor_runner"
RUNNER_STUB = RUNNER_STUB_MAGIC + (
    b" v1\n# This file stands for ExecuTorch's executor_runner on the emobench virtual device.\n"
    b"# Running it runs the host implementation (executorch's Python runtime) on the HOST CPU.\n"
    b"exit 126\n")

_RUN_LOCK = threading.Lock()  # one model at a time, like one runner process on a phone's big cores

# Line numbers of the ET_LOG calls in executor_runner.cpp (so log lines look like the real build's).
_LINE = {"extra": 348, "print_mode": 363, "threads": 376, "inputs": 444, "parse": 519, "loaded_file": 521,
         "method": 530, "buffer": 577, "load_check": 637, "loaded": 645, "prepare": 749, "iteration": 781,
         "exec_check": 771, "done": 794, "outputs": 799, "write": 811, "open_out": 813}

# executorch::runtime::Error codes used below.
_ERR_INVALID_ARGUMENT = 0x12
_ERR_ACCESS_FAILED = 0x22


@dataclass
class _Flags:
    model_path: str = "model.pte"
    data_path: str = ""
    inputs: str = ""
    input_shapes: str = ""
    output_file: str = ""
    server_mode: bool = False
    print_output: str = "summary"
    num_executions: int = 1
    method_name: str = ""
    etdump_path: str = "model.etdump"
    cpu_threads: int = -1


_BOOL_FLAGS = {"server_mode"}
_INT_FLAGS = {"num_executions", "cpu_threads"}


class _Abort(Exception):
    """ET_CHECK_MSG failed: the process aborts (exit status 134)."""


class _Logger:
    def __init__(self, mode: str, ctx: Ctx) -> None:
        self.mode = mode
        self.ctx = ctx
        self.start = time.monotonic()

    def __call__(self, level: str, line_key: str, message: str) -> None:
        if self.mode == "none":
            return
        if self.mode == "logcat":
            self.ctx.state.logcat.log(level, "ExecuTorch", message)
            return
        elapsed_us = int((time.monotonic() - self.start) * 1e6)
        us = elapsed_us % 1_000_000
        total_s = elapsed_us // 1_000_000
        stamp = f"{total_s // 3600:02d}:{total_s // 60 % 60:02d}:{total_s % 60:02d}.{us:06d}"
        self.ctx.stderr.write(f"{level} {stamp} executorch:executor_runner.cpp:{_LINE[line_key]}] {message}\n")

    def check(self, ok: bool, line_key: str, condition: str, message: str) -> None:
        if not ok:
            self("F", line_key, f"In function main(), assert failed ({condition}): {message}")
            raise _Abort()


def _parse_flags(argv: list[str], ctx: Ctx) -> _Flags | int:
    flags = _Flags()
    known = set(flags.__dataclass_fields__)
    extra: list[str] = []
    i = 0
    args = argv[1:]
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-") or arg in ("-", "--"):
            if arg == "--":
                extra.extend(args[i + 1:])
                break
            extra.append(arg)
            i += 1
            continue
        name, has_value, value = arg.lstrip("-").partition("=")
        negated = False
        if name not in known and name.startswith("no") and name[2:] in _BOOL_FLAGS | {"print_output"}:
            name, negated = name[2:], True
        if name not in known:
            ctx.err(f"ERROR: unknown command line flag '{name}'")
            return 1
        if name in _BOOL_FLAGS:
            if has_value and value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                ctx.err(f"ERROR: illegal value '{value}' specified for bool flag '{name}'")
                return 1
            setattr(flags, name, not negated and (not has_value or value.lower() in ("true", "1", "yes")))
            i += 1
            continue
        if name == "print_output" and not has_value:
            # Older runners had a bool --print_output; treat the bare flag as "all".
            flags.print_output = "none" if negated else "all"
            i += 1
            continue
        if not has_value:
            if i + 1 >= len(args):
                ctx.err(f"ERROR: flag '--{name}' is missing its argument")
                return 1
            value = args[i + 1]
            i += 1
        if name in _INT_FLAGS:
            if not re.fullmatch(r"-?\d+", value) or (name == "num_executions" and int(value) < 0):
                ctx.err(f"ERROR: illegal value '{value}' specified for int32 flag '{name}'")
                return 1
            setattr(flags, name, int(value))
        elif name == "print_output" and value.lower() in ("true", "false", "1", "0"):
            flags.print_output = "all" if value.lower() in ("true", "1") else "none"
        else:
            setattr(flags, name, value)
        i += 1
    if extra:
        flags.__dict__["_extra"] = extra
    return flags


def _format_values(values: list[float | int | bool], limit: int | None) -> str:
    def fmt(v: float | int | bool) -> str:
        return f"{v:g}" if isinstance(v, float) else str(v)
    if limit is not None and len(values) > 2 * limit:
        shown = [fmt(v) for v in values[:limit]] + ["..."] + [fmt(v) for v in values[-limit:]]
    else:
        shown = [fmt(v) for v in values]
    return ", ".join(shown)


def run_executor_runner(argv: list[str], ctx: Ctx) -> int:
    """Run ``argv`` (``executor_runner --model_path ...``) with the host runtime; returns the exit status."""
    state = ctx.state
    logger = _Logger(state.runner_logging, ctx)
    parsed = _parse_flags(argv, ctx)
    if isinstance(parsed, int):
        return parsed
    flags = parsed
    extra = flags.__dict__.get("_extra")
    if extra:
        logger("E", "extra", "Extra commandline args: " + " ".join(extra))
        return 1
    if flags.print_output not in ("none", "summary", "all"):
        logger("E", "print_mode", f"Unknown --print_output mode '{flags.print_output}'. "
                                  "Expected 'none', 'summary', or 'all'.")
        return 1
    if flags.server_mode or flags.input_shapes or flags.data_path:
        which = "--server_mode" if flags.server_mode else "--input_shapes" if flags.input_shapes else "--data_path"
        logger("E", "extra", f"{which} is not supported by the emobench virtual device's runner")
        return 1
    try:
        with _RUN_LOCK:
            return _run(flags, ctx, logger)
    except _Abort:
        return 134


def _run(flags: _Flags, ctx: Ctx, logger: _Logger) -> int:  # noqa: C901 - mirrors main() of the runner
    import torch

    from emobench_common import quiet

    with quiet.known_warnings():  # ExecuTorch's ExperimentalWarning on its bindings
        from executorch.runtime import Runtime

    state = ctx.state
    fs = state.fs
    if flags.cpu_threads != 0:
        threads = flags.cpu_threads if flags.cpu_threads > 0 else state.cpu_count
        logger("I", "threads", f"Resetting threadpool with num threads = {threads}")
        try:
            from export.runtimes import set_executorch_threads

            set_executorch_threads(threads)
        except (ImportError, AttributeError, RuntimeError) as exc:  # pragma: no cover - older executorch
            log.debug("cannot reset the ExecuTorch threadpool: %s", exc)

    input_buffers: list[bytes] = []
    if flags.inputs:
        logger("I", "inputs", "Loading inputs from input file(s).")
        for path in flags.inputs.split(","):
            try:
                input_buffers.append(fs.read_bytes(path, ctx.cwd))
            except FsError:
                logger("E", "inputs", f"Failed to open input file: {path}")
                logger.check(False, "inputs", "load_status == Error::Ok",
                             f"Could not load inputs: 0x{_ERR_ACCESS_FAILED:x}")

    model_node = fs.resolve(flags.model_path, ctx.cwd)
    model_host = model_node.host_path
    logger.check(model_host is not None and model_host.is_file(), "parse", "file_loader.ok()",
                 f"FileDataLoader::from() failed: 0x{_ERR_ACCESS_FAILED:x}")
    before_load = time.perf_counter()
    try:
        with quiet.native_log_filter():  # XNNPACK's cpuinfo lines if this is the process's first load
            program = Runtime.get().load_program(model_host)
    except Exception:  # noqa: BLE001 - the runtime raises RuntimeError/ValueError for a bad file
        logger("E", "parse", f"Failed to parse model file {flags.model_path}")
        return 1
    logger("I", "loaded_file", f"Model file {flags.model_path} is loaded.")
    names = sorted(program.method_names)
    method_name = flags.method_name or ("forward" if "forward" in names else (names[0] if names else ""))
    logger.check(bool(method_name), "method", "method_name_result.ok()", "Program has no methods")
    logger("I", "method", f"Using method {method_name}")
    try:
        with quiet.native_log_filter():
            method = program.load_method(method_name)
    except Exception as exc:  # noqa: BLE001
        logger.check(False, "load_check", "method.ok()",
                     f"Loading of method {method_name} failed with status 0x{_ERR_INVALID_ARGUMENT:x} ({exc})")
    after_load = time.perf_counter()
    logger("I", "loaded", f"Model loaded in {(after_load - before_load) * 1e3:f} ms.")

    fault = state.runner_fault_now()
    if fault == "crash":
        # A native crash in a kernel: the process dies with SIGSEGV; the shell reports status 139.
        return 139
    if fault == "hang":
        ctx.cancel.wait()
        raise Cancelled()

    meta = method.metadata
    n_inputs = meta.num_inputs()
    input_specs = []
    for i in range(n_inputs):
        tinfo = meta.input_tensor_meta(i)
        try:
            dtype = _torch_dtype(tinfo.dtype())
        except ValueError as exc:
            logger.check(False, "prepare", "res.ok()", f"Could not prepare inputs: 0x{_ERR_INVALID_ARGUMENT:x} ({exc})")
        input_specs.append((tuple(tinfo.sizes()), dtype, tinfo.nbytes()))
    if input_buffers and len(input_buffers) != n_inputs:
        logger("E", "prepare", f"Wrong number of inputs allocated from external buffers: expected {n_inputs}, "
                               f"got {len(input_buffers)}")
        logger.check(False, "prepare", "res.ok()", f"Could not prepare inputs: 0x{_ERR_INVALID_ARGUMENT:x}")
    tensors = []
    for i, (sizes, dtype, nbytes) in enumerate(input_specs):
        if input_buffers:
            buf = input_buffers[i]
            if len(buf) != nbytes:
                logger("E", "prepare", f"input size ({len(buf)}) and tensor size ({nbytes}) mismatch!")
                logger.check(False, "prepare", "res.ok()", f"Could not prepare inputs: 0x{_ERR_INVALID_ARGUMENT:x}")
            tensors.append(torch.frombuffer(bytearray(buf), dtype=dtype).reshape(sizes))
        else:
            tensors.append(torch.ones(sizes, dtype=dtype))

    total_s = 0.0
    outputs: list = []
    for i in range(flags.num_executions):
        if ctx.cancel.is_set():
            raise Cancelled()
        # a fresh copy of the inputs each time (a program may write into its inputs), made before the
        # clock starts: ExecuTorch's executor_runner times method.execute() alone
        inputs = [t.clone() for t in tensors]
        t0 = time.perf_counter()
        try:
            outputs = method.execute(inputs)
        except Exception as exc:  # noqa: BLE001
            logger.check(False, "exec_check", "status == Error::Ok",
                         f"Execution of method {method_name} failed with status 0x1 ({exc})")
        elapsed = time.perf_counter() - t0
        total_s += elapsed
        logger("I", "iteration", f"Iteration {i + 1} of {flags.num_executions}: {elapsed * 1e3:f} ms")
    logger("I", "done", f"Model executed successfully {flags.num_executions} time(s) in {total_s * 1e3:f} ms.")
    logger("I", "outputs", f"{len(outputs)} outputs: ")

    if flags.output_file:
        for i, out in enumerate(outputs):
            if not isinstance(out, torch.Tensor):
                continue
            name = f"{flags.output_file}-{i}.bin"
            logger("I", "write", f"Writing output to file: {name}")
            try:
                host = fs.writable_host_path(name, ctx.cwd)
                host.write_bytes(out.contiguous().numpy().tobytes())
            except (FsError, OSError):
                logger.check(False, "open_out", "out_file != nullptr", f"Failed to open output file: {name}")

    if flags.print_output == "all":
        for i, out in enumerate(outputs):
            if not isinstance(out, torch.Tensor):
                ctx.stdout.write(f"Output[{i}]: Not Tensor\n")
                continue
            kind = {torch.int32: "int", torch.float32: "float", torch.int8: "char", torch.bool: "bool"}.get(out.dtype)
            if kind is None:
                continue
            for j, v in enumerate(out.reshape(-1).tolist()):
                if kind == "float":
                    ctx.stdout.write(f"Output[{i}][{j}]: (float) {v:f}\n")
                elif kind == "bool":
                    ctx.stdout.write(f"Output[{i}][{j}]: (bool) {'true ' if v else 'false'} (0x{int(v):x})\n")
                else:
                    ctx.stdout.write(f"Output[{i}][{j}]: ({kind}) {int(v)}\n")
    elif flags.print_output == "summary":
        for i, out in enumerate(outputs):
            if isinstance(out, torch.Tensor):
                values = out.reshape(-1).tolist()
                ctx.stdout.write(f"OutputX {i}: tensor(sizes={list(out.shape)}, [{_format_values(values, 100)}])\n")
            else:
                ctx.stdout.write(f"OutputX {i}: {out}\n")
    return 0


_SCALAR_TYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32",
                 7: "float64", 11: "bool", 15: "bfloat16"}
_SCALAR_NAMES = {"byte": "uint8", "char": "int8", "short": "int16", "int": "int32", "long": "int64",
                 "half": "float16", "float": "float32", "double": "float64", "bool": "bool", "bfloat16": "bfloat16"}


def _torch_dtype(scalar_type: object) -> torch.dtype:
    """torch dtype for an ExecuTorch ScalarType (an int code or an enum, depending on the version)."""
    import torch

    if isinstance(scalar_type, int):
        name = _SCALAR_TYPES.get(int(scalar_type))
    else:
        name = _SCALAR_NAMES.get(str(scalar_type).rsplit(".", 1)[-1].lower())
    if name is None:
        raise ValueError(f"unsupported input ScalarType {scalar_type}")
    return getattr(torch, name)
