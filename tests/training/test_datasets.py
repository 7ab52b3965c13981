"""The dataset layer against every real layout, built from the sample generator and small fixtures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import TINY_SAMPLE
from training.datasets import (
    CorruptImageError,
    DatasetLayoutError,
    DatasetNotFoundError,
    EmptyClassError,
    LabelParseError,
    MissingImageError,
    PixelStringError,
    UnknownLabelError,
    create_dataset,
    detect_layout,
)
from training.labels import EMOTIONS, FER2013_IDS, PHASE1_CLASSES, RAFDB_IDS, canonical_emotion
from training.transforms import EvalTransform, TrainTransform


def _face(path, value=128, size=20, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size, size), value if mode == "L" else (value, value // 2, 255 - value)).save(path)


def test_label_mappings_match_the_datasets_documentation():
    assert EMOTIONS == ("anger", "fear", "happy", "sad", "surprise", "neutral", "disgust")
    assert PHASE1_CLASSES == EMOTIONS[:6]
    assert [FER2013_IDS[i] for i in range(7)] == ["anger", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert [RAFDB_IDS[i] for i in range(1, 8)] == ["surprise", "fear", "disgust", "happy", "sad", "anger", "neutral"]
    assert canonical_emotion("Angry") == "anger" and canonical_emotion("happiness") == "happy"


def test_sample_rafdb_basic_counts_and_labels(tiny_sample):
    train = create_dataset(tiny_sample["rafdb"], split="train")
    test = create_dataset(tiny_sample["rafdb"], split="test")
    assert train.kind == "rafdb_basic"
    assert train.class_counts() == {e: TINY_SAMPLE.rafdb_train_per_class for e in EMOTIONS}
    assert len(test) == 7 * TINY_SAMPLE.rafdb_test_per_class
    # Each sample's label equals the RAF-DB id written in the label file for that image.
    lines = (tiny_sample["rafdb"] / "basic/EmoLabel/list_patition_label.txt").read_text().split("\n")
    written = dict(line.split() for line in lines if line)
    for sample in train.samples[:20]:
        name = sample.path.name.replace("_aligned.jpg", ".jpg")
        assert train.class_names[sample.label] == RAFDB_IDS[int(written[name])]
    image, label = train[0]
    assert image.size == (100, 100) and image.mode == "RGB" and isinstance(label, int)


def test_sample_fer_csv_splits_and_phase1_exclusion(tiny_sample):
    ds = create_dataset(tiny_sample["fer2013"], split="train", class_names=PHASE1_CLASSES)
    assert ds.kind == "fer2013_csv"
    assert ds.class_counts() == {e: TINY_SAMPLE.fer_train_per_class for e in PHASE1_CLASSES}
    assert ds.excluded == {"disgust": TINY_SAMPLE.fer_train_per_class}
    assert len(create_dataset(tiny_sample["fer2013"], split="val")) == 7 * TINY_SAMPLE.fer_val_per_class
    assert len(create_dataset(tiny_sample["fer2013"], split="test")) == 7 * TINY_SAMPLE.fer_test_per_class
    image, _ = ds[0]
    arr = np.asarray(image)
    assert arr.shape == (48, 48, 3) and (arr[..., 0] == arr[..., 1]).all()  # grayscale -> 3 channels


def test_sample_custom_folder_and_transforms(tiny_sample):
    ds = create_dataset(tiny_sample["custom"], split="test", transform=EvalTransform(image_size=32))
    assert ds.kind == "custom" and ds.split == "all"
    assert ds.class_counts() == {e: TINY_SAMPLE.custom_per_class for e in EMOTIONS}
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    torch.manual_seed(0)
    t = TrainTransform(image_size=32)(ds.load_image(0))
    assert t.shape == (3, 32, 32)


def test_fer_csv_fixture_all_usages_and_values(tmp_path):
    csv_path = tmp_path / "fer2013.csv"
    px = lambda v: " ".join([str(v)] * 2304)  # noqa: E731
    csv_path.write_text(
        "emotion,pixels,Usage\n"
        f"3,{px(10)},Training\n"
        f"0,{px(20)},PublicTest\n"
        f"6,{px(30)},PrivateTest\n"
        f"1,{px(40)},Training\n"
    )
    train = create_dataset(tmp_path, split="train", allow_empty_classes=True)
    assert [train.class_names[s.label] for s in train.samples] == ["happy", "disgust"]
    assert train.image_ids == ["fer2013.csv#L2", "fer2013.csv#L5"]
    assert np.asarray(train[0][0])[0, 0, 0] == 10
    assert [train.class_names[s.label] for s in create_dataset(csv_path, split="val", allow_empty_classes=True).samples] == ["anger"]
    test = create_dataset(csv_path, split="test", allow_empty_classes=True)
    assert np.asarray(test[0][0]).mean() == 30
    assert len(create_dataset(csv_path, split="all", allow_empty_classes=True)) == 4


@pytest.mark.parametrize(
    "row, error, fragment",
    [
        ("3,1 2 3,Training", PixelStringError, "3 pixel values, expected 2304"),
        ("9,{px},Training", UnknownLabelError, "emotion id 9"),
        ("x,{px},Training", LabelParseError, "is not an integer"),
        ("3,{px},Validation", LabelParseError, "Usage 'Validation'"),
        ("3,{bigpx},Training", PixelStringError, "0..255"),
    ],
)
def test_fer_csv_bad_rows_name_file_and_line(tmp_path, row, error, fragment):
    px = " ".join(["1"] * 2304)
    bigpx = " ".join(["300"] * 2304)
    good = f"3,{px},Training"
    (tmp_path / "fer2013.csv").write_text(f"emotion,pixels,Usage\n{good}\n{row.format(px=px, bigpx=bigpx)}\n")
    with pytest.raises(error) as info:
        create_dataset(tmp_path, allow_empty_classes=True)
    assert "fer2013.csv, line 3" in str(info.value) and fragment in str(info.value)
    skipping = create_dataset(tmp_path, skip_bad=True, allow_empty_classes=True)
    assert len(skipping) == 1 and len(skipping.skipped) == 1


def _rafdb_fixture(tmp_path):
    basic = tmp_path / "RAF" / "basic"
    _face(basic / "Image/aligned/train_00001_aligned.jpg", 50)
    _face(basic / "Image/original/train_00002.jpg", 90, size=30)  # only the original exists
    _face(basic / "Image/aligned/test_0001_aligned.jpg", 200)
    _face(basic / "Image/original/test_0001.jpg", 10, size=30)
    (basic / "EmoLabel").mkdir(parents=True)
    label_file = basic / "EmoLabel/list_patition_label.txt"
    label_file.write_text("train_00001.jpg 4\ntrain_00002.jpg 6\ntest_0001.jpg 7\n")
    return tmp_path / "RAF", label_file


def test_rafdb_both_image_folders(tmp_path):
    root, _ = _rafdb_fixture(tmp_path)
    train = create_dataset(root, split="train", allow_empty_classes=True)
    assert [(train.class_names[s.label], s.path.parent.name) for s in train.samples] == [
        ("happy", "aligned"), ("anger", "original")]
    test = create_dataset(root, split="test", allow_empty_classes=True)
    assert test.load_image(0).size == (20, 20)  # aligned preferred
    original = create_dataset(root, split="test", allow_empty_classes=True, image_variant="original")
    assert original.load_image(0).size == (30, 30)


@pytest.mark.parametrize(
    "content, error, fragment",
    [
        ("train_00001.jpg 4\ntrain_00002.jpg\n", LabelParseError, "line 2"),
        ("train_00001.jpg 4\ntrain_00002.jpg nine\n", LabelParseError, "line 2"),
        ("train_00001.jpg 8\n", UnknownLabelError, "label 8 is outside"),
        ("train_00001.jpg 4\ntrain_00099.jpg 1\n", MissingImageError, "train_00099.jpg"),
        ("../etc/passwd 4\n", LabelParseError, "line 1"),
    ],
)
def test_rafdb_bad_label_lines(tmp_path, content, error, fragment):
    root, label_file = _rafdb_fixture(tmp_path)
    label_file.write_text(content)
    with pytest.raises(error) as info:
        create_dataset(root, split="train", allow_empty_classes=True)
    assert str(label_file) in str(info.value) and fragment in str(info.value)


def test_corrupt_jpeg_raises_or_is_skipped(tmp_path):
    root = tmp_path / "custom"
    _face(root / "happy" / "a.jpg", 100)
    _face(root / "sad" / "b.jpg", 100)
    bad = root / "sad" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    ds = create_dataset(root, allow_empty_classes=True)
    broken_index = ds.image_ids.index("sad/broken.jpg")
    with pytest.raises(CorruptImageError, match="broken.jpg"):
        ds[broken_index]
    with pytest.raises(CorruptImageError, match="broken.jpg"):
        create_dataset(root, allow_empty_classes=True, verify_images=True)
    skipped = create_dataset(root, allow_empty_classes=True, skip_bad=True)
    assert len(skipped) == 2 and len(skipped.skipped) == 1 and "broken.jpg" in skipped.skipped[0]


def test_folder_layouts_fer_and_rafdb_repackaged(tmp_path):
    fer = tmp_path / "fer"
    _face(fer / "train" / "angry" / "1.jpg", 40, size=48, mode="L")
    _face(fer / "train" / "happy" / "2.jpg", 80, size=48, mode="L")
    _face(fer / "test" / "happy" / "3.jpg", 80, size=48, mode="L")
    assert detect_layout(fer) == "fer2013_folder"
    ds = create_dataset(fer, split="train", allow_empty_classes=True)
    assert ds.class_counts()["anger"] == 1 and ds[0][0].mode == "RGB"
    raf = tmp_path / "raf"
    _face(raf / "DATASET" / "train" / "1" / "a.jpg")
    _face(raf / "DATASET" / "train" / "7" / "b.jpg")
    _face(raf / "DATASET" / "test" / "3" / "c.jpg")
    assert detect_layout(raf) == "rafdb_folder"
    train = create_dataset(raf, split="train", allow_empty_classes=True)
    assert sorted(train.class_names[s.label] for s in train.samples) == ["neutral", "surprise"]
    test = create_dataset(raf, split="test", allow_empty_classes=True)
    assert [test.class_names[s.label] for s in test.samples] == ["disgust"]


def test_missing_root_bad_layout_and_empty_class(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        create_dataset(tmp_path / "nope")
    (tmp_path / "junk" / "stuff").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match="no dataset layout"):
        create_dataset(tmp_path / "junk")
    _face(tmp_path / "c" / "happy" / "a.jpg")
    (tmp_path / "c" / "sad").mkdir()
    with pytest.raises(EmptyClassError, match="sad"):
        create_dataset(tmp_path / "c", class_names=["happy", "sad"])


# --------------------------------------------------------------------------- dataset copies met in the wild


def _info(*args):
    import json

    from click.testing import CliRunner

    from emobench import cli

    result = CliRunner().invoke(cli, ["data", "info", *map(str, args), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _macos_litter(folder):
    """What a zip made on a Mac leaves: __MACOSX/ with AppleDouble twins, and .DS_Store."""
    (folder / "__MACOSX").mkdir(parents=True, exist_ok=True)
    (folder / "__MACOSX" / "._fer2013.csv").write_bytes(b"\x00\x05\x16\x07")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")


def test_info_rafdb_label_file_with_crlf_and_trailing_spaces(tmp_path):
    basic = tmp_path / "RAF" / "basic"
    for name in ("train_00001", "train_00002", "train_00003", "test_0001"):
        _face(basic / "Image" / "aligned" / f"{name}_aligned.jpg")
    (basic / "Image" / "aligned" / "._train_00001_aligned.jpg").write_bytes(b"\x00\x05\x16\x07")
    (basic / "EmoLabel").mkdir()
    (basic / "EmoLabel" / "list_patition_label.txt").write_bytes(
        b"train_00001.jpg 4  \r\ntrain_00002.jpg 4\t\r\ntrain_00003.jpg 1 \r\ntest_0001.jpg 7   \r\n\r\n")
    _macos_litter(tmp_path / "RAF")
    info = _info(tmp_path / "RAF", "--split", "train")
    assert (info["kind"], info["images"]) == ("rafdb_basic", 3)
    assert info["layout_reason"] == "basic/EmoLabel/ holds RAF-DB's label file"
    assert (info["class_counts"]["happy"], info["class_counts"]["surprise"], info["skipped"]) == (2, 1, [])
    assert _info(tmp_path / "RAF", "--split", "test")["class_counts"]["neutral"] == 1


@pytest.mark.parametrize("bom", [False, True])
def test_info_quoted_fer_csv_with_crlf_with_and_without_bom(tmp_path, bom):
    px = lambda v: " ".join([str(v)] * 2304)  # noqa: E731
    rows = ['"emotion","pixels","Usage"', f'"3","{px(10)}","Training"', f'0,"{px(20)}",Training',
            f'"6","{px(30)}","PublicTest"', f'"1","{px(40)}","PrivateTest"']
    data = "\r\n".join(rows).encode() + b"\r\n"
    (tmp_path / "fer2013.csv").write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    _macos_litter(tmp_path)
    info = _info(tmp_path, "--split", "train")
    assert (info["kind"], info["images"], info["skipped"]) == ("fer2013_csv", 2, [])
    assert info["layout_reason"] == "fer2013.csv is in the folder"
    assert (info["class_counts"]["happy"], info["class_counts"]["anger"]) == (1, 1)
    assert _info(tmp_path, "--split", "all")["images"] == 4
    ds = create_dataset(tmp_path, split="val", allow_empty_classes=True)
    assert ds.image_ids == ["fer2013.csv#L4"] and np.asarray(ds[0][0]).max() == 30


def test_info_kaggle_fer_png_folders_and_rafdb_sorted_by_emotion(tmp_path):
    root = tmp_path / "archive"
    for split, counts in (("train", {"angry": 3, "happy": 2, "surprise": 1}), ("test", {"angry": 1, "neutral": 2})):
        for emotion, n in counts.items():
            for i in range(n):
                _face(root / split / emotion / f"PrivateTest_{i:05d}.png", 40 + i, size=48, mode="L")
    (root / "train" / "happy" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    _macos_litter(root)
    info = _info(root, "--split", "train")
    assert (info["kind"], info["images"]) == ("fer2013_folder", 6)
    assert info["layout_reason"].startswith("train/ has emotion-named folders")
    assert {k: v for k, v in info["class_counts"].items() if v} == {"anger": 3, "happy": 2, "surprise": 1}
    assert info["not_data"] == {"Thumbs.db": 1}
    assert _info(root, "--split", "test")["images"] == 3
    # the same folders holding a RAF-DB copy: the user says so and it is read, and named, as RAF-DB
    raf = _info(root, "--split", "train", "--kind", "rafdb_folder")
    assert (raf["kind"], raf["images"], raf["layout_reason"]) == ("rafdb_folder", 6, "given as the kind (rafdb_folder)")
    from android_bench.plan import _dataset_name

    assert _dataset_name("rafdb_folder", root) != _dataset_name("fer2013_folder", root)


def test_info_custom_folder_with_mixed_case_extensions_and_litter(tmp_path):
    root = tmp_path / "phone photos"
    for name in ("IMG_0001.JPG", "IMG_0002.Jpg", "b.jpeg", "c.JPEG", "d.PNG"):
        _face(root / "Happy" / name)
    for name in ("e.jpg", "f.WebP"):
        _face(root / "sad" / name)
    for folder in ("Happy", "sad"):
        (root / folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
        (root / folder / "._e.jpg").write_bytes(b"\x00\x05\x16\x07 not an image")
    (root / "sad" / "notes.txt").write_text("not an image either")
    _macos_litter(root)
    (root / "__MACOSX" / "Happy").mkdir()
    info = _info(root, "--skip-bad")
    assert (info["kind"], info["images"], info["skipped"]) == ("custom", 7, [])
    assert info["layout_reason"].startswith("every folder is an emotion")
    assert {k: v for k, v in info["class_counts"].items() if v} == {"happy": 5, "sad": 2}
    assert info["not_data"] == {"__MACOSX": 1, ".DS_Store": 3, "AppleDouble ._*": 2}


def test_sample_custom_set_holds_scene_photos_stored_sideways(tiny_sample):
    ds = create_dataset(tiny_sample["custom"], split="all")
    sideways = []
    for i, sample in enumerate(ds.samples):
        with Image.open(sample.path) as raw:
            orientation = raw.getexif().get(0x0112)
            stored = raw.size
        if orientation in (6, 8):
            sideways.append(sample.image_id)
            assert ds.load_image(i).size == stored[::-1]  # read upright: width and height swap back
        elif stored != (128, 128):
            assert ds.load_image(i).size == stored  # an upright scene photo
    # TINY_SAMPLE has 6 images per class: images 2 and 5 are scenes, image 5 stored with orientation 6
    assert sideways == [f"{e}/{e}_0005.jpg" for e in sorted(EMOTIONS)]
