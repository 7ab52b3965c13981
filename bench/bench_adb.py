"""Device I/O on the virtual device: harness push throughput vs the real `adb push`, shell round trip.

Both pushes go to the same virtual device in the same run, interleaved: the harness through
adb-shell over TCP, the reference through the AOSP adb client and an isolated adb server (its own
HOME and port). Targets: harness push >= 0.8 x adb push; median trivial shell command < 20 ms.
A phone is measured too (round trip and push MB/s) when ``EMOBENCH_BENCH_PHONE=android:<serial>``
is set; otherwise those figures are reported as not measured here.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from bench.harness import (
    BenchmarkError,
    Figure,
    interleaved,
    interval_figure,
    main,
    measure,
    paired_ratio_interval,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*, quick: bool) -> list[Figure]:
    from android_bench.device import connect
    from android_bench.keys import ensure_adb_key
    from android_bench.virtual import VirtualDevice

    size_mb = 8 if quick else 48
    repeats = 3 if quick else 7
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="bench-adb-") as tmp_name:
        tmp = Path(tmp_name)
        key = ensure_adb_key(tmp / "home" / ".android" / "adbkey", create=True)
        payload = tmp / "payload.bin"
        payload.write_bytes(os.urandom(size_mb * 1024 * 1024))
        adb = shutil.which("adb")
        env = {**os.environ, "HOME": str(tmp / "home"), "ANDROID_ADB_SERVER_PORT": str(_free_port())}
        with VirtualDevice(tmp / "root", authorized_keys=Path(str(key) + ".pub")) as vd, \
                connect(vd.address, adb_key=key) as dev:
            rt = measure(lambda: dev.shell(["true"]), warmup=5, repeats=30 if quick else 200)
            figures.append(Figure(name="virtual device: trivial shell round trip (adb-shell, shell v2)",
                                  value=rt.median_ms, unit="ms", target="< 20 ms", met=rt.median_ms < 20,
                                  spread=rt.spread_ms(), note="`true` on the virtual device over loopback"))

            def harness_push() -> None:
                dev.push(payload, "/data/local/tmp/h.bin", verify_sha256=False)

            if adb is None and os.environ.get("CI", "").lower() in ("1", "true", "yes"):
                raise BenchmarkError("adb is not installed; CI must install it (apt-get install adb)")
            if adb is None:
                t = measure(harness_push, warmup=1, repeats=repeats)
                figures.append(Figure(name="harness push (adb-shell)", value=size_mb / t.median_s, unit="MB/s",
                                      spread=t.spread_ms()))
                figures.append(Figure.not_measured("harness push / adb push", reason="adb is not installed",
                                                   command="apt-get install adb && python -m bench.bench_adb"))
            else:
                def adb_cmd(*args: str) -> None:
                    subprocess.run([adb, *args], env=env, check=True, capture_output=True, timeout=120,
                                   stdin=subprocess.DEVNULL)

                adb_cmd("start-server")
                try:
                    # The adb server's key must be trusted by the device: accept it like a person would.
                    vd.accept_new_keys = True
                    adb_cmd("connect", vd.address)
                    adb_cmd("-s", vd.serial, "wait-for-device")

                    def adb_push() -> None:
                        adb_cmd("-s", vd.serial, "push", str(payload), "/data/local/tmp/a.bin")

                    pushes = interleaved({"harness": harness_push, "adb": adb_push}, warmup=1, repeats=repeats)
                    harness_mb_s = size_mb / pushes["harness"].median_s
                    adb_mb_s = size_mb / pushes["adb"].median_s
                    # MB/s ratio = adb time / harness time, round by round
                    interval = paired_ratio_interval(pushes["adb"].samples_s, pushes["harness"].samples_s)
                    figures.append(interval_figure(
                        f"harness push {size_mb} MB (adb-shell) vs real `adb push`", interval, value=harness_mb_s,
                        reference=adb_mb_s, unit="MB/s", reference_label="adb push MB/s", target_min=0.8,
                        note=f"harness {pushes['harness'].spread_ms()}; adb {pushes['adb'].spread_ms()}; same "
                             "virtual device, interleaved; adb time includes its process start"))
                    verified = measure(lambda: dev.push(payload, "/data/local/tmp/v.bin"), warmup=0,
                                       repeats=max(2, repeats // 2))
                    figures.append(Figure(name="harness push incl. on-device sha256 check",
                                          value=size_mb / verified.median_s, unit="MB/s",
                                          spread=verified.spread_ms()))
                finally:
                    subprocess.run([adb, "kill-server"], env=env, capture_output=True, timeout=30)
        figures += _phone_figures(payload, size_mb=size_mb, repeats=repeats, quick=quick)
    return figures


def _phone_figures(payload: Path, *, size_mb: int, repeats: int, quick: bool) -> list[Figure]:
    from android_bench.device import connect

    phone = os.environ.get("EMOBENCH_BENCH_PHONE", "").removeprefix("android:")
    if not phone:
        how = "EMOBENCH_BENCH_PHONE=android:<serial> python -m bench --only bench_adb"
        return [Figure.not_measured("phone: trivial shell round trip", reason="no phone connected", command=how,
                                    target="< 20 ms"),
                Figure.not_measured("phone: harness push MB/s", reason="no phone connected", command=how)]
    with connect(phone) as dev:
        rt = measure(lambda: dev.shell(["true"]), warmup=5, repeats=30 if quick else 100)
        remote = "/data/local/tmp/emobench-bench.bin"
        push = measure(lambda: dev.push(payload, remote, verify_sha256=False), warmup=1, repeats=repeats)
        dev.shell(["rm", "-f", remote], check=False)
    return [Figure(name=f"phone {phone}: trivial shell round trip", value=rt.median_ms, unit="ms",
                   target="< 20 ms", met=rt.median_ms < 20, spread=rt.spread_ms()),
            Figure(name=f"phone {phone}: harness push {size_mb} MB", value=size_mb / push.median_s, unit="MB/s",
                   spread=push.spread_ms())]


if __name__ == "__main__":
    main(run)
