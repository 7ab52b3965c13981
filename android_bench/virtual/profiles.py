"""Device profiles: the properties and readings a virtual device reports.

A profile is a JSON file (``profiles/<name>.json`` in this package, or any path). It may
``extends`` another profile by name. ``{host_abi}`` and ``{host_machine}`` in property values are
filled from the host, because code on the virtual device runs on the host CPU.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emobench_common.errors import EmobenchError

PROFILE_DIR = Path(__file__).with_name("profiles")
DEFAULT_PROFILE = "pixel-like-virtual"
RUNNER_LOGGING_MODES = ("stderr", "logcat", "none")
_HOST_ABIS = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64-v8a", "arm64": "arm64-v8a",
              "i686": "x86", "i386": "x86", "armv7l": "armeabi-v7a", "armv8l": "armeabi-v7a"}
_KNOWN_KEYS = {"name", "description", "extends", "properties", "cpu", "thermal_zones", "battery",
               "runner_path", "runner_logging", "features"}
SUPPORTED_FEATURES = ("shell_v2", "stat_v2")


class ProfileError(EmobenchError):
    """A device profile file is missing or malformed."""


def host_abi() -> str:
    """The Android ABI name of the host CPU (the ABI the virtual device reports)."""
    machine = platform.machine().lower()
    return _HOST_ABIS.get(machine, machine)


@dataclass(frozen=True)
class Profile:
    """A resolved device profile."""

    name: str
    description: str
    properties: dict[str, str]
    cpu: dict[str, Any] = field(default_factory=dict)
    thermal_zones: tuple[dict[str, Any], ...] = ()
    battery: dict[str, Any] = field(default_factory=dict)
    runner_path: str = "/data/local/tmp/executor_runner"
    runner_logging: str = "stderr"
    features: tuple[str, ...] = SUPPORTED_FEATURES
    source: str = ""


def list_profiles() -> list[str]:
    """Names of the profiles shipped with emobench."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.json"))


def _read(name_or_path: str | Path) -> tuple[dict[str, Any], Path]:
    candidate = Path(name_or_path)
    if candidate.suffix == ".json" or candidate.exists():
        path = candidate
    else:
        path = PROFILE_DIR / f"{name_or_path}.json"
        if not path.exists():
            raise ProfileError(f"no device profile named {name_or_path!r}",
                               hint=f"use one of {', '.join(list_profiles())} or a JSON file path")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ProfileError(f"device profile {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ProfileError(f"device profile {path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"device profile {path}: the top level must be an object")
    unknown = set(data) - _KNOWN_KEYS
    if unknown:
        raise ProfileError(f"device profile {path}: unknown field(s) {', '.join(sorted(unknown))}",
                           hint=f"known fields: {', '.join(sorted(_KNOWN_KEYS))}")
    return data, path


def load_profile(name_or_path: str | Path = "default") -> Profile:
    """Load a shipped profile by name (``default`` = pixel-like-virtual) or a JSON file."""
    if str(name_or_path) == "default":
        name_or_path = DEFAULT_PROFILE
    data, path = _read(name_or_path)
    chain = [data]
    seen = {path.resolve()}
    while "extends" in chain[-1]:
        parent, parent_path = _read(chain[-1]["extends"])
        if parent_path.resolve() in seen:
            raise ProfileError(f"device profile {path}: 'extends' loops through {parent_path}")
        seen.add(parent_path.resolve())
        chain.append(parent)
    merged: dict[str, Any] = {}
    props: dict[str, str] = {}
    for layer in reversed(chain):
        props.update(layer.get("properties", {}))
        merged.update({k: v for k, v in layer.items() if k != "properties"})
    subst = {"host_abi": host_abi(), "host_machine": platform.machine()}
    try:
        props = {str(k): str(v).format(**subst) for k, v in props.items()}
    except (KeyError, IndexError, ValueError) as exc:
        raise ProfileError(f"device profile {path}: bad placeholder in properties: {exc}") from None
    logging_mode = merged.get("runner_logging", "stderr")
    if logging_mode not in RUNNER_LOGGING_MODES:
        raise ProfileError(f"device profile {path}: runner_logging must be one of {RUNNER_LOGGING_MODES}, "
                           f"not {logging_mode!r}")
    features = tuple(merged.get("features", SUPPORTED_FEATURES))
    bad = set(features) - set(SUPPORTED_FEATURES)
    if bad:
        raise ProfileError(f"device profile {path}: features {sorted(bad)} are not implemented",
                           hint=f"the virtual device implements {', '.join(SUPPORTED_FEATURES)}")
    runner_path = str(merged.get("runner_path", "/data/local/tmp/executor_runner"))
    if not runner_path.startswith("/data/local/tmp/"):
        raise ProfileError(f"device profile {path}: runner_path must be under /data/local/tmp/")
    props.setdefault("ro.emobench.virtual", "1")
    return Profile(
        name=str(merged.get("name", path.stem)),
        description=str(merged.get("description", "")),
        properties=props,
        cpu=dict(merged.get("cpu", {})),
        thermal_zones=tuple(merged.get("thermal_zones", ())),
        battery=dict(merged.get("battery", {})),
        runner_path=runner_path,
        runner_logging=logging_mode,
        features=features,
        source=str(path),
    )
