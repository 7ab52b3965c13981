"""Bad input never crashes with a raw traceback and is never half-accepted.

Property-based (hypothesis) tests feed every parser of outside input garbage, truncations, wrong
types, binary junk and huge fields:

- the RAF-DB label file (``list_patition_label.txt``) and the class-folder names of the folder layouts;
- the FER-2013 csv reader;
- the export manifest loader (``export.manifest.load_manifest``);
- the checkpoint loader (``training.checkpoint.load_checkpoint``, then ``build_model``);
- the executor_runner log parser (``android_bench.runner_log``).

Each must either accept input that really is valid, or raise a specific ``EmobenchError`` subclass
whose message names the file (and the line or field where there is one). Any other exception is a
bug. Every generated case is counted in the ``bad inputs`` summary line.
"""

from __future__ import annotations

import copy
import io
import json
import math
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from emobench_common.errors import EmobenchError
from training.labels import is_emotion

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
FEW = settings(SETTINGS, max_examples=30)

# one line of text: anything but line breaks and unpaired surrogates
LINE_CHARS = st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",))
LINE_TEXT = st.text(alphabet=LINE_CHARS, max_size=80)


def check_refused(tally, kind: str, fn: Callable[[], object], *, names: tuple[str, ...] = (),
                  error: type[EmobenchError] = EmobenchError, valid: Callable[[object], bool] | None = None):
    """Run ``fn`` on one generated input and count the outcome.

    Refused: ``error`` (a subclass of EmobenchError) whose message holds every string in ``names``.
    Valid: ``fn`` returned and ``valid(result)`` says the input was really good. Anything else fails.
    """
    try:
        result = fn()
    except error as exc:
        text = str(exc)
        missing = [n for n in names if n not in text]
        if missing:
            tally.bad_input(kind, "crashed")
            pytest.fail(f"{kind}: refused, but the message does not name {missing}: {text!r}")
        tally.bad_input(kind, "refused")
        return exc
    except Exception:
        tally.bad_input(kind, "crashed")
        raise
    if valid is not None and valid(result):
        tally.bad_input(kind, "valid")
        return result
    tally.bad_input(kind, "crashed")
    pytest.fail(f"{kind}: bad input was accepted ({type(result).__name__})")


# ---------------------------------------------------------------------------------------- RAF-DB

RAF_NAMES = [f"train_{i:05d}.jpg" for i in range(1, 8)]
RAF_VALID = [f"{name} {label}" for name, label in zip(RAF_NAMES, range(1, 8), strict=True)]


def _jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 60, 30)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def rafdb_root(tmp_path_factory) -> Path:
    """A RAF-DB basic layout with seven aligned images (one per class); tests rewrite its label file."""
    root = tmp_path_factory.mktemp("rafdb")
    aligned = root / "basic" / "Image" / "aligned"
    aligned.mkdir(parents=True)
    (root / "basic" / "EmoLabel").mkdir(parents=True)
    data = _jpeg()
    for name in RAF_NAMES:
        (aligned / name.replace(".jpg", "_aligned.jpg")).write_bytes(data)
    return root


def _label_file(root: Path) -> Path:
    return root / "basic" / "EmoLabel" / "list_patition_label.txt"


def _read_rafdb(root: Path):
    from training.datasets import create_dataset

    return create_dataset(root, kind="rafdb_basic", split="all")


bad_label_lines = st.one_of(
    LINE_TEXT,
    # near misses: a plausible name with a wrong label, or a wrong name with a plausible label
    st.builds(lambda name, label: f"{name} {label}",
              st.sampled_from(RAF_NAMES + ["train_1.png", "val_0001.jpg", "../train_00001.jpg", ".hidden.jpg",
                                           "train_00001.jpg train_00002.jpg", "test_99999.jpg"]),
              st.one_of(st.integers(-10**30, 10**30).filter(lambda n: not 1 <= n <= 7).map(str),
                        st.sampled_from(["", "4.0", "four", "0x4", "1e0", "NaN", "4 4", "٤4"]), LINE_TEXT)),
)


def test_rafdb_valid_file_is_read(rafdb_root):
    _label_file(rafdb_root).write_text("\n".join(RAF_VALID) + "\n")
    assert len(_read_rafdb(rafdb_root)) == 7


@SETTINGS
@given(garbage=bad_label_lines, position=st.integers(0, 7))
@example(garbage="train_00001.jpg\x0c4\x0c5", position=3)  # a form feed is whitespace, not a line break
@example(garbage="\x1c\u2028train_00009.jpg 4", position=2)
def test_rafdb_label_line_garbage_names_file_and_line(rafdb_root, tally, garbage, position):
    parts = garbage.split()
    assume(garbage.strip() and not (len(parts) == 2 and parts[0] in RAF_NAMES and parts[1].strip() in "1234567"))
    lines = list(RAF_VALID)
    lines.insert(position, garbage)
    label_file = _label_file(rafdb_root)
    label_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    check_refused(tally, "rafdb labels", lambda: _read_rafdb(rafdb_root),
                  names=(str(label_file), f"line {position + 1}:"))


@SETTINGS
@given(data=st.binary(max_size=400))
def test_rafdb_label_file_binary_junk(rafdb_root, tally, data):
    _label_file(rafdb_root).write_bytes(data)
    check_refused(tally, "rafdb labels", lambda: _read_rafdb(rafdb_root), names=(str(rafdb_root),))


@FEW
@given(cut=st.integers(0, len("\n".join(RAF_VALID)) - 1))
def test_rafdb_label_file_truncated(rafdb_root, tally, cut):
    _label_file(rafdb_root).write_text("\n".join(RAF_VALID)[:cut])
    check_refused(tally, "rafdb labels", lambda: _read_rafdb(rafdb_root), names=(str(rafdb_root),))


FOLDER_NAME = st.text(alphabet=st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)),
                      min_size=1, max_size=40).filter(lambda s: s not in (".", "..") and len(s.encode()) < 200)


def _rafdb_id(name: str) -> bool:
    try:
        return 1 <= int(name) <= 7
    except ValueError:
        return False


@SETTINGS
@given(name=FOLDER_NAME, numeric=st.booleans())
def test_class_folder_names(tally, name, numeric):
    from training.datasets import create_dataset

    assume(not (_rafdb_id(name) if numeric else is_emotion(name)))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = root / "train" if numeric else root
        for folder in ("4" if numeric else "happy", name):
            (base / folder).mkdir(parents=True, exist_ok=True)
            (base / folder / "a.jpg").write_bytes(b"not decoded unless verify_images")
        kind = "rafdb_folder" if numeric else "custom"
        check_refused(tally, "class folders",
                      lambda: create_dataset(root, kind=kind, split="train", allow_empty_classes=True),
                      names=(str(base / name), repr(name)))


# ---------------------------------------------------------------------------------------- FER-2013 csv

FER_HEADER = "emotion,pixels,Usage"
PIXELS = " ".join(str((i * 37) % 256) for i in range(48 * 48))
FER_VALID = [f"{emotion},{PIXELS},Training" for emotion in range(7)]


def _read_fer(csv_path: Path):
    from training.datasets import create_dataset

    return create_dataset(csv_path, kind="fer2013_csv", split="all")


def _pixels(values) -> str:
    return " ".join(str(v) for v in values)


bad_fer_rows = st.one_of(
    # emotion not an integer in 0..6
    st.one_of(st.integers().filter(lambda n: not 0 <= n <= 6).map(str),
              st.sampled_from(["", "x", "3.0", "1e1", "0x3", "- 1"])).map(lambda e: f"{e},{PIXELS},Training"),
    # wrong pixel count
    st.integers(0, 3000).filter(lambda n: n != 48 * 48).map(lambda n: f"3,{_pixels([7] * n)},Training"),
    # a pixel out of range (including far beyond int64) or not an integer
    st.tuples(st.integers(0, 48 * 48 - 1),
              st.one_of(st.integers(256, 10**40), st.integers(-10**40, -1),
                        st.sampled_from(["1.5", "x", "0x10", "１２", "nan", "--1"]))).map(
        lambda t: f"3,{_pixels([7] * t[0] + [t[1]] + [7] * (48 * 48 - 1 - t[0]))},Training"),
    # Usage not one of the three
    LINE_TEXT.filter(lambda u: u.strip() not in ("Training", "PublicTest", "PrivateTest") and '"' not in u
                     and "," not in u).map(lambda u: f"3,{PIXELS},{u}"),
    # too many or too few fields
    st.integers(1, 6).filter(lambda n: n != 3).map(lambda n: ",".join(["3"] * n)),
    # a field larger than the csv module's limit
    st.integers(140_000, 300_000).map(lambda n: f"3,{'1' * n},Training"),
    # free text on one line (no quotes, so it stays one physical line)
    LINE_TEXT.filter(lambda s: s.strip() and '"' not in s),
)


@SETTINGS
@given(row=bad_fer_rows, position=st.integers(0, 7))
def test_fer_csv_bad_row_names_file_and_line(tally, row, position):
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "fer2013.csv"
        rows = list(FER_VALID)
        rows.insert(position, row)
        csv_path.write_text("\n".join([FER_HEADER, *rows]) + "\n", encoding="utf-8")
        check_refused(tally, "fer2013 csv", lambda: _read_fer(csv_path),
                      names=(str(csv_path), f"line {position + 2}:"))


@SETTINGS
@given(data=st.one_of(st.binary(max_size=600), st.binary(max_size=200).map(lambda b: FER_HEADER.encode() + b"\n" + b)))
def test_fer_csv_binary_junk(tally, data):
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "fer2013.csv"
        csv_path.write_bytes(data)
        check_refused(tally, "fer2013 csv", lambda: _read_fer(csv_path), names=(str(csv_path),))


@FEW
@given(cut=st.integers(0, len("\n".join([FER_HEADER, *FER_VALID])) - 2))
def test_fer_csv_truncated(tally, cut):
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "fer2013.csv"
        csv_path.write_text("\n".join([FER_HEADER, *FER_VALID])[:cut])
        check_refused(tally, "fer2013 csv", lambda: _read_fer(csv_path), names=(str(csv_path),))


# ---------------------------------------------------------------------------------------- manifest

SHA = "0" * 64
ARTIFACT = {
    "format": "executorch", "precision": "fp32", "mode": None, "path": "tiny_executorch_fp32.pte", "size_bytes": 1000,
    "sha256": SHA, "batch_size": 2, "runtime": "executorch.runtime (XNNPACK)", "export_seconds": 1.5,
    "parity": {"images": 8, "top1_agreement": 1.0, "max_abs_diff": 1e-8, "mean_abs_diff": 1e-9,
               "eager_accuracy": 0.5, "artifact_accuracy": 0.5, "passed": True, "threshold": "max_abs_diff < 0.001"},
    "quantization": None, "details": {},
}
MANIFEST = {
    "format": "emobench-export-manifest", "format_version": 1, "created_at": "2026-01-01T00:00:00+00:00",
    "versions": {"torch": "2.14.1"},
    "checkpoint": {"path": "/x/checkpoint.pt", "sha256": SHA, "arch": "test_efficientnet", "epoch": 0},
    "arch": "test_efficientnet", "class_names": ["anger", "fear", "happy", "sad", "surprise", "neutral", "disgust"],
    "input": {"name": "input", "shape": [2, 3, 32, 32], "dtype": "float32", "layout": "NCHW", "color": "RGB",
              "image_size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "value_range": "0..1"},
    "output": {"name": "logits", "shape": [2, 7], "dtype": "float32", "meaning": "class scores"},
    "config": {}, "verification_data": {"root": "/x", "kind": "rafdb_basic", "split": "test", "images": 8,
                                        "image_ids": ["a.jpg"]},
    "calibration_data": None, "artifacts": [ARTIFACT], "failures": [], "skipped": [],
}

JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=3), max_leaves=8)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


# (json path, what a valid value looks like): a replacement that fails the check must be refused
TYPED_FIELDS: list[tuple[tuple, Callable[[object], bool]]] = [
    (("format_version",), lambda v: v == 1 and _is_int(v)),
    (("created_at",), lambda v: isinstance(v, str) and v != ""),
    (("versions",), lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values())),
    (("class_names",), lambda v: isinstance(v, list) and len(v) >= 2 and len(set(map(str, v))) == len(v)
     and all(isinstance(x, str) and x for x in v)),
    (("input", "shape"), lambda v: isinstance(v, list) and len(v) == 4 and all(_is_int(x) and x >= 1 for x in v)),
    (("input", "image_size"), lambda v: _is_int(v) and v >= 1),
    (("input", "std"), lambda v: isinstance(v, list) and len(v) >= 1 and all(_is_num(x) and x > 0 for x in v)),
    (("checkpoint", "epoch"), lambda v: _is_int(v) and v >= 0),
    (("artifacts",), lambda v: isinstance(v, list) and v == []),
    (("artifacts", 0, "path"), lambda v: isinstance(v, str)),  # unsafe strings: see test_manifest_unsafe_*
    (("artifacts", 0, "size_bytes"), lambda v: _is_int(v) and v >= 1),
    (("artifacts", 0, "sha256"), lambda v: isinstance(v, str) and re.fullmatch("[0-9a-f]{64}", v) is not None),
    (("artifacts", 0, "batch_size"), lambda v: _is_int(v) and v >= 1),
    (("artifacts", 0, "parity", "top1_agreement"), lambda v: _is_num(v) and 0 <= v <= 1),
    (("artifacts", 0, "parity", "passed"), lambda v: isinstance(v, bool)),
    (("artifacts", 0, "quantization"), lambda v: v is None),
    (("artifacts", 0, "details"), lambda v: isinstance(v, dict)),
    (("config",), lambda v: isinstance(v, dict)),
]


def _set(obj, path, value):
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value


def _manifest_case(tally, text, *, names_field: str | None = None, valid=None):
    from export.errors import ManifestError
    from export.manifest import load_manifest

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "manifest.json"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        names = (str(path),) + ((names_field,) if names_field else ())
        return check_refused(tally, "manifest", lambda: load_manifest(path), names=names, error=ManifestError,
                             valid=valid)


def test_manifest_base_is_valid(tally):
    manifest = _manifest_case(tally, json.dumps(MANIFEST), valid=lambda m: True)
    assert manifest.artifacts[0].path.name == "tiny_executorch_fp32.pte"


@SETTINGS
@given(field=st.sampled_from(TYPED_FIELDS), value=JSON_VALUES)
def test_manifest_wrong_types_name_the_field(tally, field, value):
    path, is_valid = field
    assume(not is_valid(value))
    obj = copy.deepcopy(MANIFEST)
    _set(obj, path, value)
    _manifest_case(tally, json.dumps(obj), names_field="field " + "/".join(map(str, path[:2])))


REQUIRED_KEYS = [(k,) for k in MANIFEST] + [("artifacts", 0, k) for k in ARTIFACT] + [("input", k) for k in
                                                                                    MANIFEST["input"]]


@SETTINGS
@given(path=st.sampled_from(REQUIRED_KEYS))
def test_manifest_missing_field(tally, path):
    obj = copy.deepcopy(MANIFEST)
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    if path[-1] in ("eager_accuracy", "artifact_accuracy"):
        return
    del parent[path[-1]]
    _manifest_case(tally, json.dumps(obj), names_field=repr(path[-1]))


@SETTINGS
@given(cut=st.integers(0, len(json.dumps(MANIFEST)) - 1))
def test_manifest_truncated(tally, cut):
    _manifest_case(tally, json.dumps(MANIFEST)[:cut])


@SETTINGS
@given(data=st.binary(max_size=300))
@example(data=b"[" * 100_000)  # nesting deeper than the json module's recursion allows
@example(data=b"\xef\xbb\xbf{}")
def test_manifest_binary_junk(tally, data):
    _manifest_case(tally, data)


UNSAFE_PATHS = st.one_of(
    st.sampled_from(["../evil.pte", "/etc/passwd", "a/../../evil.pte", "..", ".", "a\\..\\evil.pte", "./../x",
                     "a/\0b.pte", "//host/share/x.pte", "a/./../../x"]),
    st.lists(st.sampled_from(["..", "a", ".", "b.pte"]), min_size=1, max_size=5).map("/".join).filter(
        lambda p: ".." in p.split("/")),
    LINE_TEXT.map(lambda s: "/" + s),
)


@SETTINGS
@given(bad=UNSAFE_PATHS)
def test_manifest_unsafe_artifact_paths_refused(tally, bad):
    obj = copy.deepcopy(MANIFEST)
    obj["artifacts"][0]["path"] = bad
    _manifest_case(tally, json.dumps(obj))


# ---------------------------------------------------------------------------------------- checkpoint

@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory) -> tuple[dict, bytes]:
    """A real (tiny) emobench checkpoint: its dict and its bytes."""
    import torch

    from training.checkpoint import make_checkpoint_dict
    from training.labels import EMOTIONS
    from training.models import create_model

    torch.manual_seed(0)
    model = create_model("test_efficientnet", num_classes=len(EMOTIONS))
    ckpt = make_checkpoint_dict(model=model, arch="test_efficientnet", class_names=EMOTIONS, input_size=(3, 32, 32),
                                mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    return ckpt, buf.getvalue()


def _checkpoint_case(tally, data: bytes, *, field: str | None = None, valid=None):
    from training.checkpoint import load_checkpoint

    def load_and_build():
        ckpt = load_checkpoint(path)
        ckpt.build_model()
        return ckpt

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "checkpoint.pt"
        path.write_bytes(data)
        return check_refused(tally, "checkpoint", load_and_build, names=(str(path),) + ((field,) if field else ()),
                             valid=valid)


def test_checkpoint_base_is_valid(tally, base_checkpoint):
    _checkpoint_case(tally, base_checkpoint[1], valid=lambda c: c.arch == "test_efficientnet")


@FEW
@given(data=st.one_of(st.binary(max_size=400), st.binary(max_size=64).map(lambda b: b"PK\x03\x04" + b)))
def test_checkpoint_binary_junk(tally, data):
    _checkpoint_case(tally, data)


@FEW
@given(fraction=st.floats(0.0, 0.999))
def test_checkpoint_truncated(tally, base_checkpoint, fraction):
    data = base_checkpoint[1]
    _checkpoint_case(tally, data[: int(len(data) * fraction)])


def _tensors():
    import torch

    return st.sampled_from([torch.zeros(3), torch.ones(2, 2, dtype=torch.int64), torch.tensor(1.5)])


def _numbers(v, n: int) -> bool:
    return isinstance(v, list | tuple) and len(v) == n and all(_is_num(x) and math.isfinite(x) for x in v)


# what a valid value of each field looks like (the base checkpoint has 7 classes at 3x32x32)
CHECKPOINT_FIELD_OK: dict[str, Callable[[object], bool]] = {
    "arch": lambda v: v == "test_efficientnet",
    "num_classes": lambda v: v == 7 and _is_int(v),
    "class_names": lambda v: isinstance(v, list | tuple) and len(v) == 7 and len(set(v)) == 7
    and all(isinstance(c, str) and c for c in v),
    "input_size": lambda v: isinstance(v, list | tuple) and len(v) == 3 and all(_is_int(x) and x >= 1 for x in v)
    and v[0] == 3,
    "mean": lambda v: _numbers(v, 3),
    "std": lambda v: _numbers(v, 3) and all(x > 0 for x in v),
    "model_state": lambda v: False,  # only the model's own weights fit
    "model_kwargs": lambda v: v in ({}, None),
    "epoch": lambda v: v is None or (_is_int(v) and v >= 0),
    "best_metric": lambda v: v is None or _is_num(v),
    "config": lambda v: v is None or isinstance(v, dict),
    "format": lambda v: v == "emobench-checkpoint",
    "format_version": lambda v: v == 1 and _is_int(v),
}
CHECKPOINT_FIELDS = sorted(CHECKPOINT_FIELD_OK)
SAFE_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats() | st.text(max_size=12),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                       max_size=3), max_leaves=6)


@SETTINGS
@given(field=st.sampled_from(CHECKPOINT_FIELDS), value=st.one_of(SAFE_VALUES, st.deferred(_tensors)))
@example(field="epoch", value="three")
@example(field="model_kwargs", value={"no_such_option": 1})
@example(field="model_kwargs", value=[1, 2])
@example(field="arch", value="no_such_arch_xyz")
@example(field="input_size", value=[3, -32, 0])
@example(field="class_names", value=["happy", "happy", "sad", "fear", "anger", "neutral", "disgust"])
def test_checkpoint_wrong_types(tally, base_checkpoint, field, value):
    import torch

    ckpt = dict(base_checkpoint[0])
    ckpt[field] = value
    buf = io.BytesIO()
    torch.save(ckpt, buf)

    def really_valid(_loaded) -> bool:
        # a replacement that is still a valid value (e.g. another epoch number) may be accepted
        return CHECKPOINT_FIELD_OK[field](value)

    _checkpoint_case(tally, buf.getvalue(), valid=really_valid)


# ---------------------------------------------------------------------------------------- runner log

PREFIX = "I 00:00:00.000100 executorch:executor_runner.cpp:520] "
VALID_STDERR = [f"{PREFIX}Iteration {i} of 3: {1.5 * i:.6f} ms" for i in (1, 2, 3)] + [
    f"{PREFIX}Model executed successfully 3 time(s) in 9.000000 ms."]
VALID_LOGCAT = [f"01-02 03:04:05.6{i}  4321  4321 I ExecuTorch: Iteration {i} of 3: {1.5 * i} ms" for i in (1, 2, 3)]

bad_runner_lines = st.one_of(
    LINE_TEXT,
    st.builds(lambda i, n, ms: f"{PREFIX}Iteration {i} of {n}: {ms} ms",
              st.one_of(st.integers(0, 10**6).map(str), st.just("9" * 5000), st.just("٣")),
              st.one_of(st.integers(0, 10).map(str), st.just("1" * 4400)),
              st.one_of(st.floats(allow_nan=True).map(repr), st.sampled_from(["1e400", "-1", "x", "nan", "inf", "1,5"]))),
    st.builds(lambda n, ms: f"{PREFIX}Model executed successfully {n} time(s) in {ms} ms.",
              st.one_of(st.integers(0, 10**9).map(str), st.just("7" * 4500)),
              st.sampled_from(["1", "nan", "-3", "1e999", "zz"])),
)


def _latencies(text, form: str):
    from android_bench import runner_log

    return runner_log.parse_runner_output(text, form=form, source="dev1 exp000.log").latencies_ms(
        expected_executions=3)


@SETTINGS
@given(line=bad_runner_lines, position=st.integers(0, 4), form=st.sampled_from(["stderr", "logcat"]),
       as_bytes=st.booleans())
def test_runner_log_mutations(tally, line, position, form, as_bytes):
    from android_bench.runner_log import RunnerLogError

    lines = list(VALID_STDERR if form == "stderr" else VALID_LOGCAT)
    if form == "logcat" and line.startswith(PREFIX):
        line = "01-02 03:04:05.699  4321  4321 I ExecuTorch: " + line[len(PREFIX):]
    lines.insert(position, line)
    text = "\n".join(lines)
    check_refused(tally, "runner log", lambda: _latencies(text.encode() if as_bytes else text, form),
                  names=("dev1 exp000.log",), error=RunnerLogError,
                  valid=lambda lat: len(lat) == 3 and all(v >= 0 for v in lat))


@SETTINGS
@given(data=st.one_of(st.binary(max_size=300), st.text(max_size=300), st.none(), st.integers(), st.lists(st.text())),
       form=st.sampled_from(["stderr", "logcat", "json", ""]))
def test_runner_log_junk_and_wrong_types(tally, data, form):
    from android_bench.runner_log import RunnerLogError

    check_refused(tally, "runner log", lambda: _latencies(data, form), error=RunnerLogError)
