"""emobench's native ``executor_runner``: C++ source, its CMakeLists.txt and the code that builds it.

``build_runner()`` configures and builds ``executor_runner.cpp`` with cmake and the system C++ compiler
against the ExecuTorch of the current environment (or, with an Android NDK, against an ExecuTorch built
from source for Android) and caches the binary by ExecuTorch version, compiler and source hash.
"""

from android_bench.native.build import (
    RunnerBuild,
    RunnerBuildError,
    build_runner,
    find_native_runner,
    runner_source_dir,
)

__all__ = ["RunnerBuild", "RunnerBuildError", "build_runner", "find_native_runner", "runner_source_dir"]
