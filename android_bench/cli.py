"""``emobench devices`` and ``emobench device info|serve``: a thin layer over android_bench.device."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import click

from emobench_common.errors import EmobenchError

_KEY_OPTION = click.option("--adb-key", type=click.Path(dir_okay=False, path_type=Path), default=None,
                           help="Private adb key (default ~/.android/adbkey, created if missing).")


def _describe(target: str, adb_key: Path | None) -> dict:
    from android_bench.device import DeviceError, connect

    try:
        with connect(target, adb_key=adb_key) as dev:
            props = dev.getprop()
            assert isinstance(props, dict)
            return {"target": target, "state": "device", "model": props.get("ro.product.model", ""),
                    "abi": props.get("ro.product.cpu.abi", ""),
                    "android": props.get("ro.build.version.release", ""),
                    "sdk": props.get("ro.build.version.sdk", ""),
                    "virtual": props.get("ro.emobench.virtual") == "1"}
    except DeviceError as exc:
        return {"target": target, "state": f"error: {exc.message}", "model": "", "abi": "", "android": "",
                "sdk": "", "virtual": False}


@click.command("devices")
@click.option("--connect", "connect_targets", multiple=True, metavar="HOST:PORT",
              help="Also probe this adb-over-TCP address (repeatable).")
@_KEY_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def devices(connect_targets: tuple[str, ...], adb_key: Path | None, as_json: bool) -> None:
    """List reachable devices (adb server ones plus --connect ones) with model, ABI and Android version."""
    from android_bench.device import list_server_devices

    rows = []
    for serial, state in list_server_devices():
        if state == "device":
            rows.append(_describe(f"adb:{serial}", adb_key) | {"target": serial})
        else:
            rows.append({"target": serial, "state": state, "model": "", "abi": "", "android": "", "sdk": "",
                         "virtual": False})
    rows.extend(_describe(t, adb_key) for t in connect_targets)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("No devices. Connect a phone (USB debugging on), pass --connect HOST:PORT, "
                   "or start a virtual one: emobench device serve")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("target", "state", "model", "ABI", "Android", "virtual")
    for r in rows:
        android = f"{r['android']} (SDK {r['sdk']})" if r["android"] else ""
        table.add_row(r["target"], r["state"], r["model"], r["abi"], android, "yes" if r["virtual"] else "")
    Console().print(table)


@click.group("device")
def device() -> None:
    """Inspect a device, or serve the virtual Android device."""


@device.command("info")
@click.argument("target")
@_KEY_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(target: str, adb_key: Path | None, as_json: bool) -> None:
    """Print a device's DeviceInfo (TARGET: host:port, usb:SERIAL, SERIAL or adb:SERIAL)."""
    from android_bench.device import connect

    with connect(target, adb_key=adb_key) as dev:
        data = dev.info().to_dict()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("field", "value", show_header=False)
    for key, value in data.items():
        if isinstance(value, list | tuple):
            value = ", ".join("?" if v is None else str(v) for v in value)
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v:g}" for k, v in value.items())
        table.add_row(key, "" if value is None else str(value))
    Console().print(table)


@device.command("serve")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="TCP port on 127.0.0.1 (0 = a free one).")
@click.option("--profile", default="default", show_default=True, help="Profile name or JSON file.")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Sandbox folder behind /data/local/tmp (default: a temporary folder).")
@click.option("--authorized-keys", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="adb_keys-style file of accepted public keys (default: ~/.android/adbkey.pub).")
@click.option("--no-auth", is_flag=True, help="Accept any client without RSA authentication.")
@click.option("--accept-new-keys", is_flag=True, help="Accept a key a client offers (like tapping Allow).")
@click.option("--runner-logging", type=click.Choice(["stderr", "logcat", "none"]), default=None,
              help="Override the profile's executor_runner logging.")
@click.option("--cpus", default=None, metavar="LIST",
              help="Pin the device and everything it runs to these CPUs (e.g. 0, 2-3); two devices on disjoint "
                   "CPUs can run side by side.")
def serve(port: int, profile: str, root: Path | None, authorized_keys: Path | None, no_auth: bool,
          accept_new_keys: bool, runner_logging: str | None, cpus: str | None) -> None:
    """Serve the virtual Android device on 127.0.0.1 until Ctrl-C."""
    from android_bench.cpusets import format_cpu_list, parse_cpu_list, pin_process
    from android_bench.virtual import VirtualDevice

    if no_auth and authorized_keys is not None:
        raise EmobenchError("--no-auth and --authorized-keys contradict each other", hint="pass one of them")
    cpu_set = None
    if cpus is not None:
        # The whole process first: every thread it has and starts, and every process it runs, inherit it.
        cpu_set = pin_process(parse_cpu_list(cpus))
        click.echo(f"pinned to CPUs {format_cpu_list(cpu_set)}", err=True)
    vd = VirtualDevice(root, port=port, profile=profile, auth=not no_auth, authorized_keys=authorized_keys,
                       accept_new_keys=accept_new_keys, runner_logging=runner_logging, cpus=cpu_set)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with vd:
            click.echo(f"virtual device {vd.profile.name} listening on {vd.address} "
                       f"(sandbox {vd.root}, auth {'off' if no_auth else 'on'})", err=True)
            click.echo(vd.address)
            click.echo(f"use it with: emobench device info {vd.address}   or: adb connect {vd.address}", err=True)
            try:
                while not stop.wait(0.5):
                    pass
            except KeyboardInterrupt:
                pass
            click.echo("stopping the virtual device", err=True)
    finally:
        signal.signal(signal.SIGTERM, previous)


from android_bench.runner_cli import profile, runner  # noqa: E402 - native runner, profiling (issue 13)

COMMANDS = [devices, device, runner, profile]
