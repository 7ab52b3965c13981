"""The virtual device's shell interpreter and sandboxed file system, without a network."""

from __future__ import annotations

import os
import shlex

import pytest

from android_bench.virtual.profiles import ProfileError, load_profile
from android_bench.virtual.shell import Shell
from android_bench.virtual.state import DeviceState, FaultPlan


@pytest.fixture
def sh(tmp_path):
    state = DeviceState(tmp_path / "root", load_profile(), "stderr", FaultPlan())
    shell = Shell(state)

    def run(line: str) -> tuple[str, str, int]:
        out, err = bytearray(), bytearray()
        status = shell.run(line, stdout=out.extend, stderr=err.extend)
        return out.decode(), err.decode(), status

    run.root = tmp_path / "root"
    run.outside = tmp_path
    return run


def test_quoting_expansion_and_operators(sh):
    assert sh("echo 'a  b' \"c $?\" d\\ e") == ("a  b c 0 d e\n", "", 0)
    assert sh("false; echo $?")[0] == "1\n"
    assert sh("false && echo no || echo yes")[0] == "yes\n"
    assert sh("true && echo one; echo two")[0] == "one\ntwo\n"
    assert sh("! false")[2] == 0
    assert sh("X=5; echo ${X}$X")[0] == "55\n"
    assert sh("echo '$(x)' \"\\$(y)\"")[0] == "$(x) $(y)\n"
    assert sh("(exit 4); echo $?")[0] == "4\n"
    assert sh("exit 9") == ("", "", 9)
    assert sh("echo a # comment")[0] == "a\n"
    assert sh("printf '%s-%d\\n' x 3 y 4")[0] == "x-3\ny-4\n"


def test_command_substitution_is_refused_not_run(sh):
    for line in ("echo $(touch /data/local/tmp/P)", "echo `touch /data/local/tmp/P`", 'echo "$(touch x)"'):
        out, err, status = sh(line)
        assert status == 2 and "not supported" in err
    assert not (sh.root / "P").exists()


@pytest.mark.parametrize("name", ["a b", "q'uote", 'd"q', "semi;colon", "$(touch P)", "`touch P`", "a|b>c", "*"])
def test_shlex_quoted_arguments_are_literal(sh, name):
    path = f"/data/local/tmp/{name}"
    assert sh(f"echo hi > {shlex.quote(path)}")[2] == 0
    assert sh(f"cat {shlex.quote(path)}")[0] == "hi\n"
    assert os.listdir(sh.root) == [name] or sorted(os.listdir(sh.root)) == sorted(["executor_runner", name])
    assert not (sh.root / "P").exists()


def test_redirections_pipes_and_globs(sh):
    sh("cd /data/local/tmp && echo one > a.txt && echo two >> a.txt && echo err 2> e.txt >&2")
    assert (sh.root / "a.txt").read_text() == "one\ntwo\n"
    assert sh("cat /data/local/tmp/a.txt | grep -c o")[0] == "2\n"
    assert sh("ls /data/local/tmp/*.txt")[0] == "/data/local/tmp/a.txt\n/data/local/tmp/e.txt\n"
    assert sh("cat /data/local/tmp/nothing 2>&1")[0].endswith("No such file or directory\n")
    assert sh("echo x > /dev/null")[0] == ""
    assert sh("head -n 1 /data/local/tmp/a.txt")[0] == "one\n"


def test_sandbox_cannot_be_escaped(sh):
    (sh.outside / "secret").write_text("host secret")
    _, err, status = sh("cat /data/local/tmp/../../../secret")
    assert status == 1
    assert sh("echo x > /data/local/tmp/../escape.txt")[2] == 1
    assert not (sh.outside / "escape.txt").exists()
    os.symlink(sh.outside / "secret", sh.root / "link")
    out, err, status = sh("cat /data/local/tmp/link")
    assert status == 1 and "Permission denied" in err and "host secret" not in out
    os.symlink(sh.outside, sh.root / "dirlink")
    assert sh("echo x > /data/local/tmp/dirlink/new")[2] == 1
    assert not (sh.outside / "new").exists()


def test_writes_outside_tmp_fail_like_a_phone(sh):
    assert "Read-only file system" in sh("echo x > /system/bin/evil")[1]
    assert "Permission denied" in sh("mkdir /sdcard_evil")[1]
    assert sh("rm -rf /data/local/tmp")[2] == 1
    assert sh.root.exists()


def test_toybox_commands(sh):
    sh("echo hello > /data/local/tmp/f")
    assert sh("sha256sum /data/local/tmp/f")[0].split()[0] == \
        "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
    assert sh("test -f /data/local/tmp/f && test ! -d /data/local/tmp/f && [ 3 -lt 4 ]")[2] == 0
    assert sh("chmod 755 /data/local/tmp/f && stat -c %a /data/local/tmp/f")[0] == "755\n"
    assert sh("getprop ro.emobench.virtual")[0] == "1\n"
    assert sh("df -k /data/local/tmp")[0].splitlines()[0].startswith("Filesystem")
    assert sh("nosuchcmd")[2] == 127
    assert sh("sh -c 'echo inner; exit 3'") == ("inner\n", "", 3)
    assert sh("uname -m")[0].strip()


def test_profiles(tmp_path):
    p = load_profile("default")
    assert p.properties["ro.emobench.virtual"] == "1" and "{" not in p.properties["ro.product.cpu.abi"]
    assert load_profile("android-release-virtual").runner_logging == "logcat"
    bad = tmp_path / "bad.json"
    bad.write_text('{"runner_logging": "loud"}')
    with pytest.raises(ProfileError, match="runner_logging"):
        load_profile(bad)
    bad.write_text('{"features": ["ls_v2"]}')
    with pytest.raises(ProfileError, match="not implemented"):
        load_profile(bad)
    with pytest.raises(ProfileError, match="no device profile"):
        load_profile("nope")
