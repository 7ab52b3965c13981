"""emobench runs nothing it was not meant to run.

- A checkpoint carrying a pickle payload (code that would create a marker file) is refused by every
  entry point that reads checkpoints, with a message that says why, and the marker never appears.
  A control proves the payload really runs when a file is unpickled without ``weights_only``.
- A manifest whose artifact paths leave the export folder (``../``, absolute, symlinks) is refused.
- File names holding spaces, quotes, ``;``, ``$(...)`` and backticks are pushed and benchmarked on
  the virtual device (shell v2 and legacy shell) and nothing else runs.
- The virtual device listens on loopback only and refuses an unknown key; adb private keys are
  created 0600 and a looser one gets a warning; no host subprocess is started through a shell.
- No test reaches the user's real ``~/.android``.
"""

from __future__ import annotations

import ast
import copy
import json
import logging
import os
import pwd
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from emobench import cli

ROOT = Path(__file__).resolve().parents[2]
TMP = "/data/local/tmp"


# ------------------------------------------------------------------------------- pickle payloads


class _ExecPayload:
    """Unpickling this runs Python code that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


class _ProcessPayload:
    """Unpickling this starts a host process (argv, no shell) that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return subprocess.check_call, (["touch", str(self.marker)],)


def _evil_checkpoint(path: Path, marker: Path, *, payload=_ExecPayload, where: str = "extra") -> Path:
    """A real, otherwise valid checkpoint with a payload hidden in one field."""
    import torch

    from training.checkpoint import make_checkpoint_dict
    from training.labels import EMOTIONS
    from training.models import create_model

    torch.manual_seed(0)
    model = create_model("test_efficientnet", num_classes=len(EMOTIONS))
    ckpt = make_checkpoint_dict(model=model, arch="test_efficientnet", class_names=EMOTIONS, input_size=(3, 32, 32),
                                mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), epoch=1)
    if where == "extra":
        ckpt["notes"] = payload(marker)
    else:  # inside the config dict, where a careless loader would not look
        ckpt["config"] = {"arch": "test_efficientnet", "hook": payload(marker)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


@pytest.fixture
def evil(tmp_path):
    """(checkpoint path, marker path) for an exec payload."""
    marker = tmp_path / "PWNED"
    return _evil_checkpoint(tmp_path / "evil" / "checkpoint.pt", marker), marker


def test_payload_control_runs_when_loaded_unsafely(tmp_path):
    """Without this the other tests could pass with a payload that never works."""
    import torch

    for payload in (_ExecPayload, _ProcessPayload):
        marker = tmp_path / f"control-{payload.__name__}"
        path = _evil_checkpoint(tmp_path / f"{payload.__name__}.pt", marker, payload=payload)
        torch.load(path, weights_only=False)  # what emobench never does
        assert marker.is_file()


def _assert_refused(tally, what: str, result, marker: Path, *, exit_code: int = 1) -> None:
    refused = (result.exit_code == exit_code and "weights_only=True" in result.output
               and "Traceback" not in result.output and not marker.exists())
    tally.attack(what, refused=refused)
    assert result.exit_code == exit_code, result.output
    assert "pickled Python objects" in result.output and "weights_only=True" in result.output, result.output
    assert "Traceback" not in result.output
    assert not marker.exists(), "the payload ran"


@pytest.mark.parametrize("payload,where", [(_ExecPayload, "extra"), (_ProcessPayload, "config")])
def test_load_checkpoint_refuses_pickle_payloads(tmp_path, tally, payload, where):
    from training.checkpoint import CheckpointError, load_checkpoint, load_checkpoint_dict

    marker = tmp_path / "PWNED"
    path = _evil_checkpoint(tmp_path / "c.pt", marker, payload=payload, where=where)
    for loader in (load_checkpoint, load_checkpoint_dict):
        try:
            loader(path)
            error = None
        except CheckpointError as exc:
            error = exc
        refused = error is not None and "weights_only=True" in error.message and not marker.exists()
        tally.attack(f"{payload.__name__} in the checkpoint's {where} through {loader.__name__}", refused=refused)
        assert error is not None, f"{loader.__name__} loaded a checkpoint carrying a pickle payload"
        assert "weights_only=True" in error.message and str(path) in error.message
    assert not marker.exists()


def _train(tmp_path, tiny_sample, *extra: str):
    """`emobench train phase2` at tiny settings, with the option under test appended."""
    return CliRunner().invoke(cli, ["train", "phase2", "--data", str(tiny_sample["rafdb"]), "--out",
                                    str(tmp_path / "runs"), "--arch", "test_efficientnet", "--epochs", "1",
                                    "--image-size", "32", *extra])


def test_train_resume_refuses_payload(tmp_path, tally, tiny_sample, evil):
    path, marker = evil
    last = path.with_name("last.pt")
    path.rename(last)
    result = _train(tmp_path, tiny_sample, "--resume", str(last))
    _assert_refused(tally, "checkpoint payload through train --resume", result, marker)


def test_train_init_from_refuses_payload(tmp_path, tally, tiny_sample, evil):
    path, marker = evil
    result = _train(tmp_path, tiny_sample, "--init-from", str(path))
    _assert_refused(tally, "checkpoint payload through train --init-from", result, marker)


def test_train_pretrained_file_refuses_payload(tmp_path, tally, tiny_sample, evil):
    path, marker = evil
    result = _train(tmp_path, tiny_sample, "--pretrained-file", str(path))
    refused = result.exit_code == 1 and "Traceback" not in result.output and not marker.exists()
    tally.attack("checkpoint payload through train --pretrained-file", refused=refused)
    assert refused, result.output
    assert "weights_only" in result.output or "pickle" in result.output.lower(), result.output


def test_evaluate_refuses_payload(tally, tiny_sample, evil):
    path, marker = evil
    result = CliRunner().invoke(cli, ["evaluate", str(path), "--data", str(tiny_sample["rafdb"])])
    _assert_refused(tally, "checkpoint payload through evaluate", result, marker)


def test_export_refuses_payload(tmp_path, tally, tiny_sample, evil):
    path, marker = evil
    result = CliRunner().invoke(cli, ["export", str(path), "--out", str(tmp_path / "export"), "--formats", "onnx",
                                      "--eval-data", str(tiny_sample["rafdb"])])
    _assert_refused(tally, "checkpoint payload through export", result, marker)
    assert not (tmp_path / "export" / "manifest.json").exists()


def test_demo_refuses_a_planted_checkpoint(tmp_path, tally, tiny_sample, evil):
    """The demo reuses a finished stage's checkpoint: a file swapped in there is refused too."""
    from emobench_app import demo
    from emobench_common.errors import EmobenchError
    from emobench_common.fileio import atomic_write_json

    path, marker = evil
    cfg = demo.DemoConfig.quick_config(tmp_path / "demo")
    data = {name: str(p) for name, p in tiny_sample.items()}
    for stage, result in (("data", data), ("train", {"checkpoint": str(path), "run_dir": str(path.parent),
                                                     "pretrained": False, "note": "planted", "steps": 1})):
        atomic_write_json(demo._marker(cfg.out_dir, stage), {"settings": cfg.stage_settings(stage), "result": result})
    try:
        demo.run_demo(cfg)
        error = None
    except EmobenchError as exc:
        error = exc
    refused = error is not None and "weights_only=True" in error.message and not marker.exists()
    tally.attack("checkpoint planted in a finished demo stage", refused=refused)
    assert error is not None, "the demo ran on a checkpoint carrying a pickle payload"
    assert "weights_only=True" in error.message and str(path) in error.message and not marker.exists()


# ------------------------------------------------------------------------------- manifest paths


def _manifest_dict(artifact_path: str, target: Path | None = None) -> dict:
    """The test manifest with one artifact at ``artifact_path``, whose size and sha256 are those of
    ``target`` (the file the path would reach): were the path guard gone, the checksum would pass and
    the manifest would load, so only the guard can refuse it."""
    from emobench_common.fileio import sha256_file
    from tests.reliability.test_bad_inputs import MANIFEST

    obj = copy.deepcopy(MANIFEST)
    obj["artifacts"][0]["path"] = artifact_path
    if target is not None and target.is_file():
        obj["artifacts"][0]["size_bytes"] = target.stat().st_size
        obj["artifacts"][0]["sha256"] = sha256_file(target)
    return obj


def _load_or_error(manifest_path: Path, **kwargs):
    from export.errors import ManifestError
    from export.manifest import load_manifest

    try:
        return load_manifest(manifest_path, **kwargs), None
    except ManifestError as exc:
        return None, exc


ESCAPE_GUARD = "escapes the manifest's folder; refused"
OUTSIDE_GUARD = "outside"


@pytest.mark.parametrize("artifact_path", ["../outside.pte", "/etc/passwd", "sub/../../outside.pte",
                                           "..\\outside.pte", ".", "sub/./../../../outside.pte"])
def test_manifest_path_escapes_are_refused(tmp_path, tally, artifact_path):
    folder = tmp_path / "a" / "export"
    (folder / "sub").mkdir(parents=True)
    payload = b"x" * 1000
    # every place an escaping path could reach holds a file whose size and sha256 the manifest records
    for place in (tmp_path / "outside.pte", tmp_path / "a" / "outside.pte", folder / "..\\outside.pte"):
        place.write_bytes(payload)
    target = Path("/etc/passwd") if artifact_path == "/etc/passwd" else tmp_path / "outside.pte"
    source = str(folder / "manifest.json")
    # the path guard itself (load_manifest's schema refuses most of these before it is reached)
    from export.errors import ManifestError
    from export.manifest import safe_artifact_path

    try:
        reached = safe_artifact_path(folder, artifact_path, source=source)
        guard_error = None
    except ManifestError as exc:
        reached, guard_error = None, exc
    tally.attack(f"artifact path {artifact_path!r} given to the path guard",
                 refused=guard_error is not None and ESCAPE_GUARD in guard_error.message)
    assert guard_error is not None, f"the path guard let {artifact_path!r} through to {reached}"
    assert guard_error.message == f"{source}: artifact path {artifact_path!r} {ESCAPE_GUARD}"
    # and the whole loader, with a size and sha256 that would pass
    (folder / "manifest.json").write_text(json.dumps(_manifest_dict(artifact_path, target)))
    manifest, error = _load_or_error(folder / "manifest.json", verify_files=True)
    refused = error is not None and repr(artifact_path) in error.message and "sha256" not in error.message
    tally.attack(f"manifest artifact path {artifact_path!r}", refused=refused)
    assert error is not None, f"a manifest with artifact path {artifact_path!r} was loaded"
    assert source in error.message and repr(artifact_path) in error.message and "sha256" not in error.message
    # control: the same size and sha256 at a path inside the folder load fine, so the checksum is right
    (folder / "inside.pte").write_bytes(target.read_bytes() if target.is_file() else payload)
    (folder / "manifest.json").write_text(json.dumps(_manifest_dict("inside.pte", target)))
    manifest, error = _load_or_error(folder / "manifest.json", verify_files=True)
    assert error is None and manifest.artifacts[0].path == folder / "inside.pte"


@pytest.mark.parametrize("link", ["file", "folder"])
def test_manifest_symlinks_pointing_outside_are_refused(tmp_path, tally, link):
    folder = tmp_path / "export"
    folder.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "m.pte").write_bytes(b"x" * 1000)
    if link == "file":
        (folder / "m.pte").symlink_to(outside / "m.pte")
        rel = "m.pte"
    else:
        (folder / "sub").symlink_to(outside, target_is_directory=True)
        rel = "sub/m.pte"
    (folder / "manifest.json").write_text(json.dumps(_manifest_dict(rel, outside / "m.pte")))
    _, error = _load_or_error(folder / "manifest.json", verify_files=True)
    refused = error is not None and OUTSIDE_GUARD in error.message and str(outside.resolve()) in error.message
    tally.attack(f"manifest artifact through a {link} symlink out of the folder", refused=refused)
    assert error is not None, f"a manifest whose artifact is a {link} symlink out of its folder was loaded"
    assert f"artifact path {rel!r} resolves to" in error.message and "outside" in error.message, error.message
    # a symlink that stays inside the folder is fine
    (folder / "real.pte").write_bytes(b"x" * 1000)
    (folder / "inside.pte").symlink_to(folder / "real.pte")
    (folder / "manifest.json").write_text(json.dumps(_manifest_dict("inside.pte", folder / "real.pte")))
    manifest, error = _load_or_error(folder / "manifest.json", verify_files=True)
    assert error is None and manifest.artifacts[0].path == folder / "inside.pte"


# ------------------------------------------------------------------------------- device shell quoting

# Were any of these run by the device shell, "PWN42" would appear in an output, a PWNED_* file in the
# sandbox (the injected commands cd into /data/local/tmp first: names hold no '/'), or the runner
# command would fail (the virtual shell refuses $(...) and backticks; a phone's mksh would run them).
INTO_TMP = "cd data;cd local;cd tmp;"
HOSTILE_NAMES = [
    "model with spaces.pte",
    "quote'single.pte",
    'quote"double.pte',
    f"semi;echo PWN42;{INTO_TMP}touch PWNED_semi;.pte",
    f"dollar$(echo PWN42;{INTO_TMP}touch PWNED_dollar).pte",
    "back`echo PWN42`.pte",
    "amp&&echo PWN42||x.pte",
    "pipe|echo PWN42.pte",
    "redir>PWNED_redir.pte",
    "glob*?[a].pte",
    "newvar=$HOME ${IFS}x.pte",
    "-dash-first.pte",
    "tab\tand\\backslash.pte",
]


def _echoed_marker(output: str) -> bool:
    """An injected ``echo PWN42`` prints the marker on a line of its own (the names themselves hold it too)."""
    return any(line.strip() == "PWN42" for line in output.splitlines())


def _sandbox_strays(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("PWNED*"))  # what an injected `touch` makes


@pytest.mark.parametrize("protocol", ["v2", "legacy"])
def test_hostile_file_names_push_and_run_nothing_else(tmp_path, tally, virtual_device, adb_key, tiny_pte,
                                                      protocol, monkeypatch):
    from android_bench.device import connect
    from emobench_common.fileio import sha256_file

    monkeypatch.chdir(tmp_path)  # a host-side stray file would land here
    input_file = tmp_path / "input.bin"
    input_file.write_bytes(b"\0" * 4 * 8)  # one float32 [1, 8] input
    digest = sha256_file(tiny_pte)
    with connect(virtual_device.address, adb_key=adb_key, shell_protocol=protocol) as dev:
        dev.shell(["mkdir", "-p", f"{TMP}/hostile dir;x"])
        for name in HOSTILE_NAMES:
            local = tmp_path / "local" / name
            local.parent.mkdir(exist_ok=True)
            local.write_bytes(tiny_pte.read_bytes())
            remote = f"{TMP}/hostile dir;x/{name}"
            dev.push(local, remote)  # sha256-checked on the device through the same quoting
            assert dev.exists(remote) and dev.sha256(remote) == digest
            dev.push(input_file, f"{TMP}/hostile dir;x/{name}.in")
            result = dev.shell([virtual_device.runner_path, "--model_path", remote, "--inputs", f"{remote}.in",
                                "--output_file", f"{remote}.out", "--num_executions", "2"], timeout_s=60)
            assert "Model executed successfully 2 time(s)" in result.stderr + result.stdout
            assert not _echoed_marker(result.stdout + result.stderr)
            assert dev.exists(f"{remote}.out-0.bin")
            strays = _sandbox_strays(virtual_device.root) + sorted(str(p) for p in tmp_path.glob("PWNED*"))
            tally.attack(f"file name {name!r} on the device ({protocol} shell)", refused=not strays)
            assert not strays, f"{name!r} ran something: {strays}"
        listing = dev.shell(["ls", f"{TMP}/hostile dir;x"]).stdout.splitlines()
        assert set(HOSTILE_NAMES) <= set(listing)
        # the echo of every name comes back byte for byte: nothing was expanded
        echoed = dev.shell(["echo", *HOSTILE_NAMES]).stdout
        assert echoed == " ".join(HOSTILE_NAMES) + "\n" and not _echoed_marker(echoed)


# ------------------------------------------------------------------------------- the virtual device


def _listening_addresses(port: int) -> set[str]:
    """Local addresses bound to ``port`` in LISTEN state, from /proc/net/tcp and tcp6."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            addr, port_hex = fields[1].rsplit(":", 1)
            if int(port_hex, 16) == port and fields[3] == "0A":
                found.add(addr)
    return found


def test_virtual_device_listens_on_loopback_only(tmp_path, tally, adb_key):
    import socket

    from android_bench.virtual import VirtualDevice

    for kwargs in ({"authorized_keys": Path(f"{adb_key}.pub")}, {"auth": False}):
        with VirtualDevice(tmp_path / "r", **kwargs) as vd:
            addresses = _listening_addresses(vd.port)
            assert addresses == {"0100007F"}, addresses  # 127.0.0.1, and nothing else (no 0.0.0.0, no ::)
            # and it is not reachable through another address of this machine
            others = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
            for host in others - {"127.0.0.1"}:
                with pytest.raises(OSError), socket.create_connection((host, vd.port), timeout=2):
                    pass
            tally.check(held=addresses == {"0100007F"})


def test_unknown_key_is_refused_when_auth_is_on(tmp_path, tally, virtual_device):
    from android_bench.device import DeviceAuthError, connect
    from android_bench.keys import ensure_adb_key

    stranger = ensure_adb_key(tmp_path / "stranger" / "adbkey", create=True)
    try:
        connect(virtual_device.address, adb_key=stranger, auth_timeout_s=10).close()
        error = None
    except DeviceAuthError as exc:
        error = exc
    tally.attack("an adb key the device does not trust", refused=error is not None)
    assert error is not None, "the virtual device accepted a key it was never given"
    assert re.search("refused|did not accept", str(error)), str(error)


# ------------------------------------------------------------------------------- adb keys


def test_new_adb_key_is_private(tmp_path, tally):
    from android_bench.keys import ensure_adb_key

    key = ensure_adb_key(tmp_path / "fresh" / ".android" / "adbkey", create=True)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) & 0o077 == 0
    assert Path(f"{key}.pub").read_text().split()[0]  # the public half exists
    tally.check(held=stat.S_IMODE(key.stat().st_mode) == 0o600)


def test_loose_existing_key_gets_a_warning(tmp_path, tally, caplog):
    from android_bench.keys import ensure_adb_key

    key = ensure_adb_key(tmp_path / "k" / "adbkey", create=True)
    caplog.set_level(logging.WARNING, logger="android_bench.keys")
    ensure_adb_key(key)
    assert not [r for r in caplog.records if "readable by other users" in r.getMessage()]
    key.chmod(0o644)
    ensure_adb_key(key)
    warned = [r for r in caplog.records if "readable by other users" in r.getMessage() and "chmod 600" in r.getMessage()]
    tally.check(held=bool(warned))
    assert warned


def test_tests_never_touch_the_real_android_folder(tally):
    """Default key paths (this process and a child) point into a temporary folder during the test session."""
    from android_bench.keys import default_key_path

    real = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".android"
    here = default_key_path()
    child = subprocess.run([sys.executable, "-c", "from android_bench.keys import default_key_path as d; print(d())"],
                           cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                           check=True).stdout.strip()
    inside = [p for p in (here, Path(child)) if real in p.parents]
    tally.check(held=not inside)
    assert not inside, f"a default adb key path points into the real {real}: {inside}"


# ------------------------------------------------------------------------------- host subprocesses

SCANNED = ["training", "export", "android_bench", "device_results", "emobench_common", "bench", "scripts", "tests",
           "emobench.py"]
SHELL_CALLS = {("os", "system"), ("os", "popen"), ("subprocess", "getoutput"), ("subprocess", "getstatusoutput"),
               ("os", "execl"), ("os", "execlp")}


def _python_files() -> list[Path]:
    files = []
    for name in SCANNED:
        path = ROOT / name
        files.extend([path] if path.is_file() else sorted(path.rglob("*.py")))
    return files


def shell_uses(source: str, filename: str) -> list[str]:
    """``file:line what`` for every host shell use in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    found.append(f"{filename}:{node.lineno} shell={ast.unparse(kw.value)}")
            func = node.func
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and \
                    (func.value.id, func.attr) in SHELL_CALLS:
                found.append(f"{filename}:{node.lineno} {func.value.id}.{func.attr}()")
        elif isinstance(node, ast.ImportFrom) and node.module in ("os", "subprocess"):
            for alias in node.names:
                if (node.module, alias.name) in SHELL_CALLS:
                    found.append(f"{filename}:{node.lineno} from {node.module} import {alias.name}")
    return found


def test_the_scanner_finds_shell_uses():
    sample = ("import os, subprocess\nfrom os import system\nos.system('ls')\nsubprocess.run('ls', shell=True)\n"
              "subprocess.getoutput('ls')\nsubprocess.run(['ls'], shell=False)\nos.popen('ls')\n")
    assert [u.split(" ", 1)[0] for u in shell_uses(sample, "x.py")] == ["x.py:2", "x.py:3", "x.py:4", "x.py:5",
                                                                        "x.py:7"]


def test_no_host_subprocess_through_a_shell(tally):
    files = _python_files()
    assert len(files) > 50
    found = []
    for path in files:
        found += shell_uses(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    tally.check(held=not found)
    assert not found, "host shell use (build an argv list instead):\n" + "\n".join(found)
