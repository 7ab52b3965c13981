"""The executor_runner log parser on every form the runner's output comes in."""

from __future__ import annotations

import pytest

from android_bench import runner_log as rl

STDERR = """\
I 00:00:00.000102 executorch:executor_runner.cpp:180] Model file /data/local/tmp/emobench/m.pte is loaded.
I 00:00:00.000120 executorch:executor_runner.cpp:189] Using method forward
I 00:00:00.001400 executorch:executor_runner.cpp:240] Model loaded in 1.250000 ms.
I 00:00:00.004500 executorch:executor_runner.cpp:520] Iteration 1 of 3: 3.100000 ms
I 00:00:00.007400 executorch:executor_runner.cpp:520] Iteration 2 of 3: 2.900000 ms
I 00:00:00.010200 executorch:executor_runner.cpp:520] Iteration 3 of 3: 2.750000 ms
I 00:00:00.010210 executorch:executor_runner.cpp:528] Model executed successfully 3 time(s) in 8.750000 ms.
I 00:00:00.010300 executorch:executor_runner.cpp:534] 1 outputs: \n
OutputX 0: tensor(sizes=[2, 7], [0.1, 0.2, ...])
"""

LOGCAT_THREADTIME = """\
--------- beginning of main
01-02 03:04:05.678  4321  4321 I ExecuTorch: Model loaded in 1.2 ms.
01-02 03:04:05.681  4321  4321 I ExecuTorch: Iteration 1 of 2: 12.5 ms
01-02 03:04:05.682  1000  1002 D OtherTag: Iteration 9 of 9: 1.0 ms
01-02 03:04:05.694  4321  4321 I ExecuTorch: Iteration 2 of 2: 11.25 ms
01-02 03:04:05.695  4321  4321 I ExecuTorch: Model executed successfully 2 time(s) in 23.75 ms.
"""

LOGCAT_BRIEF = """\
I/ExecuTorch( 4321): Iteration 1 of 2: 12.5 ms\r
I/ExecuTorch( 4321): Iteration 2 of 2: 11.25 ms\r
"""

LOGGING_OFF = """\
OutputX 0: tensor(sizes=[2, 7], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, ...])
"""


def test_stderr_form():
    log = rl.parse_stderr(STDERR)
    assert log.form == "stderr"
    assert log.latencies_ms(expected_executions=3) == (3.1, 2.9, 2.75)
    assert log.total_executions == 3 and log.total_ms == pytest.approx(8.75)
    assert log.errors == ()


def test_logcat_forms_keep_only_the_executorch_tag():
    for text in (LOGCAT_THREADTIME, LOGCAT_BRIEF, "I/ExecuTorch: Iteration 1 of 2: 12.5 ms\nI/ExecuTorch: "
                 "Iteration 2 of 2: 11.25 ms\n", "01-02 03:04:05.678 I/ExecuTorch( 42): Iteration 1 of 2: 12.5 ms\n"
                 "01-02 03:04:05.679 I/ExecuTorch( 42): Iteration 2 of 2: 11.25 ms\n"):
        log = rl.parse_runner_output(text, form="logcat")
        assert log.latencies_ms(expected_executions=2) == (12.5, 11.25)


def test_logcat_text_is_not_read_as_stderr_and_vice_versa():
    with pytest.raises(rl.NoTimingLinesError):
        rl.parse_stderr(LOGCAT_THREADTIME).latencies_ms(expected_executions=2)
    with pytest.raises(rl.NoTimingLinesError):
        rl.parse_logcat(STDERR).latencies_ms(expected_executions=3)


def test_logging_off_says_how_to_rebuild():
    with pytest.raises(rl.NoTimingLinesError) as info:
        rl.parse_stderr(LOGGING_OFF, source="android:emu /data/local/tmp/r").latencies_ms(expected_executions=4)
    assert "logging off" in info.value.message
    assert "android:emu" in info.value.message
    assert "EXECUTORCH_ENABLE_LOGGING=ON" in info.value.hint
    with pytest.raises(rl.NoTimingLinesError):
        rl.parse_logcat("").latencies_ms(expected_executions=1)


def test_truncated_output_names_the_runner_errors():
    text = "\n".join(STDERR.splitlines()[:4]) + (
        "\nE 00:00:00.005000 executorch:executor_runner.cpp:515] Execution of method forward failed with status 0x12\n"
    )
    log = rl.parse_stderr(text)
    with pytest.raises(rl.RunnerLogError, match=r"1 of 3 iterations.*failed with status 0x12"):
        log.latencies_ms(expected_executions=3)
    assert log.errors == ("Execution of method forward failed with status 0x12",)


@pytest.mark.parametrize("bad, pattern", [
    ("Iteration 1 of 3: 1.0 ms\nIteration 1 of 3: 1.0 ms\nIteration 3 of 3: 1.0 ms", "expected iteration 2"),
    ("Iteration 1 of 2: 1.0 ms\nIteration 2 of 2: 1.0 ms", "asked for 3"),
    ("Iteration 1 of 3: nan ms", "finite"),
    ("Iteration 1 of 3: -4 ms", "finite"),
    ("Iteration 1 of 3: 1,5 ms", "not a number"),
])
def test_inconsistent_timings_are_refused(bad, pattern):
    text = "\n".join(f"I 00:00:00.000001 executorch:executor_runner.cpp:9] {line}" for line in bad.splitlines())
    with pytest.raises(rl.RunnerLogError, match=pattern):
        rl.parse_stderr(text).latencies_ms(expected_executions=3)


def test_bytes_and_bad_types():
    log = rl.parse_stderr(STDERR.encode() + b"\xff\xfe garbage")
    assert len(log.latencies_ms(expected_executions=3)) == 3
    with pytest.raises(rl.RunnerLogError):
        rl.parse_stderr(123)  # type: ignore[arg-type]
    with pytest.raises(rl.RunnerLogError):
        rl.parse_runner_output(STDERR, form="stdout")
