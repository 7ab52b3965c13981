"""`python -m bench [--quick] [--only NAME]`: run every bench/bench_*.py in its own process, print one table.

Each benchmark prints its figures as JSON (see bench/harness.py). The table lists figure,
emobench's value, the reference measured in the same run, the ratio, the target and whether it is
met; it is also written as Markdown and JSON (with machine info) under bench/results/.
A benchmark that fails is reported as failed with its error, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from emobench_common.fileio import atomic_write_text

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
_LIBS = ("torch", "executorch", "onnxruntime", "timm", "adb-shell")


def discover() -> list[str]:
    return sorted(p.stem for p in BENCH_DIR.glob("bench_*.py"))


def machine_info() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for lib in _LIBS:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = None
    import os

    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": versions,
    }


def run_one(name: str, *, quick: bool, timeout_s: float) -> tuple[list[dict], str | None, float]:
    """Run ``bench.<name>`` in a fresh process; returns (figures, error, seconds)."""
    cmd = [sys.executable, "-m", f"bench.{name}", "--json"] + (["--quick"] if quick else [])
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=BENCH_DIR.parent)
    except subprocess.TimeoutExpired:
        return [], f"timed out after {timeout_s:.0f} s", time.perf_counter() - t0
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return [], f"exit {proc.returncode}: " + " | ".join(tail), elapsed
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("[")]
    if not lines:
        return [], "printed no figures", elapsed
    return json.loads(lines[-1]), None, elapsed


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def render_markdown(rows: list[dict]) -> str:
    head = "| benchmark | figure | emobench | reference | ratio | target | met | spread / note |\n"
    head += "|---|---|---|---|---|---|---|---|\n"
    body = []
    for r in rows:
        value = "-" if r["value"] is None else f"{_fmt(r['value'])} {r['unit']}".strip()
        ref = "-" if r["reference"] is None else f"{_fmt(r['reference'])} ({r['reference_label']})"
        met = ("no target" if r["value"] is not None else "not measured") if r["met"] is None else _fmt(r["met"])
        note = "; ".join(x for x in (r.get("spread", ""), r.get("note", "")) if x)
        ratio = _fmt(r["ratio"])
        if r.get("ratio_low") is not None and r.get("ratio_high") is not None:  # the 95% interval beside it
            ratio += f" [{_fmt(r['ratio_low'])}, {_fmt(r['ratio_high'])}]"
        body.append(f"| {r['benchmark']} | {r['name']} | {value} | {ref} | {ratio} | {r['target']} | {met} | {note} |")
    return head + "\n".join(body) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smallest sizes: a smoke run")
    parser.add_argument("--only", action="append", default=[], help="run only these benchmarks (repeatable)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where to write latest.md/latest.json")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per benchmark")
    args = parser.parse_args(argv)

    names = args.only or discover()
    rows: list[dict] = []
    failures: list[str] = []
    timings: dict[str, float] = {}
    for name in names:
        print(f"running {name}{' (quick)' if args.quick else ''} ...", file=sys.stderr, flush=True)
        figures, error, seconds = run_one(name, quick=args.quick, timeout_s=args.timeout)
        timings[name] = round(seconds, 1)
        if error:
            failures.append(f"{name}: {error}")
            rows.append({"benchmark": name, "name": "FAILED", "value": None, "unit": "", "reference": None,
                         "reference_label": "", "ratio": None, "target": "", "met": False, "spread": "", "note": error})
            continue
        rows += [{"benchmark": name, **f} for f in figures]

    table = render_markdown(rows)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    suffix = "-quick" if args.quick else ""
    atomic_write_text(
        args.out / f"latest{suffix}.md", f"# emobench benchmarks ({stamp}{', quick' if args.quick else ''})\n\n" + table
    )
    atomic_write_text(args.out / f"latest{suffix}.json", json.dumps(
        {"generated_at": stamp, "quick": args.quick, "machine": machine_info(), "seconds": timings, "figures": rows},
        indent=2) + "\n")
    missed = [r for r in rows if r["met"] is False]
    print(f"{len(rows)} figures, {len(missed)} targets missed, {len(failures)} benchmarks failed; "
          f"written to {args.out}", file=sys.stderr)
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
