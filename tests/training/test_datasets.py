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
