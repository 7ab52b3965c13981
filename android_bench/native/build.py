"""Build (and cache) emobench's native ``executor_runner`` with cmake and the system C++ compiler.

The cache key is the ExecuTorch version, the compiler (its path and ``--version`` line), the target
(host or Android ABI, and the ExecuTorch prefix for Android) and the sha256 of the runner's source files:
a second build with nothing changed returns the cached binary without running cmake.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from emobench_common.errors import EmobenchError
from emobench_common.fileio import atomic_write_json, sha256_file

log = logging.getLogger(__name__)

_SOURCES = ("executor_runner.cpp", "CMakeLists.txt")
_BINARY = "executor_runner"
_ANDROID_ABI = "arm64-v8a"
_ANDROID_PLATFORM = "android-26"
# The cmake flags an ExecuTorch source build needs for the runner to write an ETDump.
EVENT_TRACER_CMAKE_FLAGS = "-DEXECUTORCH_BUILD_DEVTOOLS=ON -DEXECUTORCH_ENABLE_EVENT_TRACER=ON"


class RunnerBuildError(EmobenchError):
    """The native runner could not be configured or built (a missing tool, a failed compile)."""


@dataclass(frozen=True)
class RunnerBuild:
    """A built native runner.

    Attributes:
        binary: path of the ``executor_runner`` executable.
        sha256: sha256 of the binary.
        target: ``linux-x86_64`` (host machine name) or ``android-arm64-v8a``.
        executorch_version: the ExecuTorch it was linked against.
        compiler: the compiler's path and first ``--version`` line.
        source_sha256: sha256 over the runner's source files.
        event_tracer: whether it was built with ExecuTorch's event tracer (``--etdump_path`` works).
        cached: True when this call reused an earlier build.
    """

    binary: Path
    sha256: str
    target: str
    executorch_version: str
    compiler: str
    source_sha256: str
    event_tracer: bool
    cached: bool = False


def runner_source_dir() -> Path:
    """The folder holding ``executor_runner.cpp`` and ``CMakeLists.txt``."""
    return Path(__file__).resolve().parent


def default_cache_dir() -> Path:
    """``$EMOBENCH_CACHE_DIR/runner`` or ``$XDG_CACHE_HOME/emobench/runner`` (``~/.cache`` by default)."""
    if os.environ.get("EMOBENCH_CACHE_DIR"):
        return Path(os.environ["EMOBENCH_CACHE_DIR"]) / "runner"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "emobench" / "runner"


def source_sha256() -> str:
    """sha256 over the runner's source files (name and content)."""
    digest = hashlib.sha256()
    for name in _SOURCES:
        digest.update(name.encode() + b"\0" + (runner_source_dir() / name).read_bytes() + b"\0")
    return digest.hexdigest()


def _executorch_package() -> tuple[str, Path]:
    from importlib.metadata import PackageNotFoundError, version
    from importlib.util import find_spec

    spec = find_spec("executorch")  # located, not imported: importing it loads torch
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    roots = [Path(loc).resolve() for loc in locations if (Path(loc) / "share" / "cmake").is_dir()]
    if not roots:
        raise RunnerBuildError("ExecuTorch (with its C++ runtime) is not installed in this environment",
                               hint="pip install executorch (the version emobench declares)")
    root = roots[0]
    try:
        et_version = version("executorch")
    except PackageNotFoundError:
        et_version = "unknown"
    if not (root / "share" / "cmake" / "executorch-config.cmake").is_file():
        raise RunnerBuildError(f"the ExecuTorch package at {root} has no share/cmake/executorch-config.cmake",
                               hint="install an executorch wheel that ships its C++ runtime (1.5 or newer)")
    return et_version, root


def _require_tool(names: tuple[str, ...], package: str, what: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise RunnerBuildError(f"{what} not found (looked for {', '.join(names)} on PATH)",
                           hint=f"install the Debian package '{package}': sudo apt-get install {package}")


def _compiler() -> tuple[str, str]:
    env_cxx = os.environ.get("CXX")
    path = shutil.which(env_cxx) if env_cxx else None
    if path is None:
        path = _require_tool(("c++", "g++", "clang++"), "g++", "a C++ compiler")
    try:
        first = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30,
                               check=False).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired) as exc:
        raise RunnerBuildError(f"the C++ compiler {path} does not answer --version",
                               hint="install the Debian package 'g++': sudo apt-get install g++") from exc
    return path, first.strip()


def _android_compiler(ndk: Path) -> str:
    toolchain = ndk / "build" / "cmake" / "android.toolchain.cmake"
    if not toolchain.is_file():
        raise RunnerBuildError(f"{ndk} is not an Android NDK: {toolchain} is missing",
                               hint="pass --android-ndk the NDK's root folder (the one holding source.properties)")
    props = ndk / "source.properties"
    revision = "unknown"
    if props.is_file():
        for line in props.read_text(errors="replace").splitlines():
            if line.startswith("Pkg.Revision"):
                revision = line.partition("=")[2].strip()
    return f"android-ndk {revision} ({ndk})"


def _cache_key(parts: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _run(cmd: list[str], cwd: Path, what: str, log_path: Path) -> None:
    log.info("%s: %s", what, " ".join(cmd))
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False, timeout=1800)
    with log_path.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}\n")
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise RunnerBuildError(f"{what} of the native runner failed (exit {proc.returncode}); full log: "
                               f"{log_path}\n{tail}",
                               hint="check the compiler and the ExecuTorch installation named in the log")


def build_runner(out_dir: str | os.PathLike[str] | None = None, *, android_ndk: str | os.PathLike[str] | None = None,
                 executorch_prefix: str | os.PathLike[str] | None = None, jobs: int | None = None) -> RunnerBuild:
    """Build emobench's ``executor_runner`` (or return the cached build).

    Args:
        out_dir: cache folder (default ``default_cache_dir()``); each build lives in ``<out_dir>/<key>/``.
        android_ndk: an Android NDK root: cross-compile for arm64-v8a (needs ``executorch_prefix``).
        executorch_prefix: install prefix of an ExecuTorch built from source for Android.
        jobs: parallel compile jobs (default: the CPUs this process may use).

    Returns:
        The build, with the binary's path and sha256.

    Raises:
        RunnerBuildError: cmake or a compiler is missing, the NDK or prefix is not valid, or the build failed.
    """
    cmake = _require_tool(("cmake",), "cmake", "cmake")
    if (android_ndk is None) != (executorch_prefix is None):
        raise RunnerBuildError("--android-ndk and --executorch-prefix go together",
                               hint="give the NDK root and the install prefix of ExecuTorch built for Android")
    configure: list[str]
    if android_ndk is not None:
        ndk = Path(android_ndk).expanduser().resolve()
        prefix = Path(executorch_prefix).expanduser().resolve()  # type: ignore[arg-type]
        if not prefix.is_dir():
            raise RunnerBuildError(f"--executorch-prefix {prefix} is not a folder",
                                   hint="cmake --install your ExecuTorch Android build to a prefix and pass it")
        compiler = _android_compiler(ndk)
        et_version = f"source:{prefix}"
        target = f"android-{_ANDROID_ABI}"
        configure = [f"-DCMAKE_TOOLCHAIN_FILE={ndk / 'build' / 'cmake' / 'android.toolchain.cmake'}",
                     f"-DANDROID_ABI={_ANDROID_ABI}", f"-DANDROID_PLATFORM={_ANDROID_PLATFORM}",
                     f"-DCMAKE_PREFIX_PATH={prefix}", f"-DCMAKE_FIND_ROOT_PATH={prefix}"]
        key_extra = str(prefix)
    else:
        cxx_path, cxx_version = _compiler()
        compiler = f"{cxx_path} ({cxx_version})"
        et_version, et_root = _executorch_package()
        target = f"linux-{platform.machine()}"
        configure = [f"-DCMAKE_PREFIX_PATH={et_root}", f"-DCMAKE_CXX_COMPILER={cxx_path}"]
        key_extra = str(et_root)
    src_hash = source_sha256()
    key = _cache_key({"executorch": et_version, "compiler": compiler, "source": src_hash, "target": target,
                      "where": key_extra})
    root = Path(out_dir).expanduser().resolve() if out_dir is not None else default_cache_dir()
    build_dir = root / key
    build_dir.mkdir(parents=True, exist_ok=True)
    info_path = build_dir / "build.json"
    binary = build_dir / _BINARY
    with (build_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two processes building the same key: the second waits, then reuses
        cached = _load_cached(info_path, binary)
        if cached is not None:
            return cached
        with tempfile.TemporaryDirectory(prefix="cmake-", dir=build_dir) as tmp:
            work = Path(tmp)
            log_path = build_dir / "build.log"
            log_path.write_text("")
            _run([cmake, "-S", str(runner_source_dir()), "-B", str(work), "-DCMAKE_BUILD_TYPE=Release", *configure],
                 build_dir, "configure", log_path)
            n_jobs = jobs or max(1, len(os.sched_getaffinity(0)))
            _run([cmake, "--build", str(work), "-j", str(n_jobs)], build_dir, "build", log_path)
            event_tracer = "event tracer ON" in log_path.read_text()
            built = work / _BINARY
            if not built.is_file():
                raise RunnerBuildError(f"cmake finished but produced no {built}", hint=f"see {log_path}")
            tmp_binary = build_dir / f".{_BINARY}.tmp"
            shutil.copy2(built, tmp_binary)
            os.replace(tmp_binary, binary)
        result = RunnerBuild(binary=binary, sha256=sha256_file(binary), target=target,
                             executorch_version=et_version, compiler=compiler, source_sha256=src_hash,
                             event_tracer=event_tracer)
        atomic_write_json(info_path, {**asdict(result), "binary": str(binary), "cached": False})
        log.info("built the native runner: %s", binary)
        return result


def _load_cached(info_path: Path, binary: Path) -> RunnerBuild | None:
    if not (info_path.is_file() and binary.is_file()):
        return None
    try:
        info = json.loads(info_path.read_text())
        build = RunnerBuild(**{**info, "binary": binary, "cached": True})
    except (ValueError, TypeError):
        return None
    if sha256_file(binary) != build.sha256:  # a damaged or replaced binary is rebuilt
        return None
    return build


def find_native_runner(out_dir: str | os.PathLike[str] | None = None) -> RunnerBuild | None:
    """The host runner, built on demand; None where no cmake or C++ compiler exists (the stand-in is used).

    Raises:
        RunnerBuildError: the tools exist but the build failed (a real problem, never hidden).
    """
    if shutil.which("cmake") is None or not (os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
                                             or shutil.which("clang++")):
        log.warning("no cmake or C++ compiler: the virtual device runs the Python stand-in for executor_runner "
                    "(install the Debian packages cmake and g++ for the native runner)")
        return None
    return build_runner(out_dir)
