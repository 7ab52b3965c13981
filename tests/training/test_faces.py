"""Face cropping on a real photograph (matplotlib's grace_hopper.jpg), stored the ways phones store photos."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from click.testing import CliRunner
from matplotlib import cbook
from PIL import Image

from emobench import cli
from training.datasets import create_dataset
from training.faces import (
    FaceDetector,
    FaceDetectorError,
    FacesConfig,
    attach_face_crops,
    crop_faces,
)
from training.images import FaceCrop, junk_reason, open_upright

EXIF_ORIENTATION = 0x0112
CANVAS = (1600, 1200)
OFFSET = (900, 450)  # where the photo's top-left corner sits in the upright canvas


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


def _scene(photo: Image.Image) -> Image.Image:
    """The photo pasted off-centre into a larger, plain scene (the face is ~2% of the picture)."""
    canvas = Image.new("RGB", CANVAS, (88, 118, 64))
    canvas.paste(photo, OFFSET)
    return canvas


def _save_with_orientation(upright: Image.Image, path, orientation: int) -> None:
    """Store ``upright`` the way a phone does: sensor pixels plus the EXIF tag that turns them upright."""
    stored = {6: upright.transpose(Image.Transpose.ROTATE_90),  # orientation 6: view by rotating 90 deg clockwise
              8: upright.transpose(Image.Transpose.ROTATE_270),
              3: upright.transpose(Image.Transpose.ROTATE_180),
              1: upright}[orientation]
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    stored.save(path, exif=exif, quality=92)


def _overlap(a, b) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    return inter / (aw * ah + bw * bh - inter)


def test_detector_finds_the_face_and_both_eyes_on_the_plain_photo(photo, detector):
    faces = detector.detect(photo)
    assert len(faces) == 1
    face = faces[0]
    # her face spans roughly x 160-370, y 110-330 in the 512x600 photo (looked at by eye)
    assert 130 <= face.x <= 190 and 80 <= face.y <= 140 and 190 <= face.w <= 260
    assert face.eyes_found
    (lx, ly), (rx, ry) = face.left_eye, face.right_eye
    assert face.x < lx < face.x + face.w / 2 < rx < face.x + face.w  # one eye in each half
    assert face.y + face.h * 0.2 < ly < face.y + face.h * 0.6 and abs(ly - ry) < 15


def test_exif_orientation_is_applied_by_every_loader(photo, tmp_path):
    for orientation in (6, 8, 3):
        path = tmp_path / "happy" / f"o{orientation}.jpg"
        _save_with_orientation(photo, path, orientation)
        with Image.open(path) as raw:
            assert raw.size == ((600, 512) if orientation in (6, 8) else (512, 600))  # stored sideways
        upright = open_upright(path)
        assert upright.size == (512, 600)
        diff = np.abs(np.asarray(upright, dtype=np.int16) - np.asarray(photo, dtype=np.int16)).mean()
        assert diff < 6, f"orientation {orientation}: mean pixel difference {diff:.1f} to the upright photo"
    ds = create_dataset(tmp_path, allow_empty_classes=True)
    assert {ds.load_image(i).size for i in range(len(ds))} == {(512, 600)}


def test_data_faces_finds_the_face_in_a_rotated_off_centre_photo(photo, detector, tmp_path):
    plain = detector.detect(photo)[0]
    expected = (plain.x + OFFSET[0], plain.y + OFFSET[1], plain.w, plain.h)  # in upright canvas pixels
    src = tmp_path / "photos"
    _save_with_orientation(_scene(photo), src / "happy" / "IMG_0042.JPG", 6)
    (src / "sad").mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(src / "sad" / "noise.jpg")
    (src / "sad" / "broken.jpeg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    (src / "sad" / "._noise.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (src / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")

    result = CliRunner().invoke(cli, ["data", "faces", str(src), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert ("3 images: 1 faces cropped (1 eye-aligned), 1 without a face, 0 with several faces, 1 undecodable; "
            "2 non-image files skipped (.DS_Store 1, AppleDouble ._* 1)") in result.output
    with open(tmp_path / "out" / "faces.csv", newline="") as fh:
        rows = {r["source"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {"happy/IMG_0042.JPG", "sad/noise.jpg", "sad/broken.jpeg"}
    row = rows["happy/IMG_0042.JPG"]
    box = tuple(int(row[k]) for k in ("x", "y", "w", "h"))
    assert _overlap(box, expected) > 0.8, (box, expected)
    assert row["emotion"] == "happy" and float(row["score"]) > 0 and row["aligned"] == "yes"
    assert row["output"] == "happy/IMG_0042.JPG" and row["reason"] == ""
    assert (rows["sad/noise.jpg"]["reason"], rows["sad/noise.jpg"]["output"]) == ("no face", "")
    assert rows["sad/broken.jpeg"]["reason"] == "undecodable"
    crop = Image.open(tmp_path / "out" / "happy" / "IMG_0042.JPG")
    assert crop.width == crop.height and abs(crop.width - round(box[2] * 1.5)) <= 2  # margin 0.25 each side
    # the crop shows the face, not the scene: the detector finds it filling most of the crop
    again = detector.detect(crop)
    assert again and again[0].w > 0.5 * crop.width


def test_one_face_reports_several_faces(photo, tmp_path):
    scene = _scene(photo)
    scene.paste(photo, (50, 50))
    _save_with_orientation(scene, tmp_path / "src" / "neutral" / "two.jpg", 1)
    result = crop_faces(tmp_path / "src", tmp_path / "out", FacesConfig(one_face=True))
    (row,) = result.rows
    assert (row.reason, row.faces_found, row.output) == ("several faces", 2, None)
    assert not (tmp_path / "out" / "neutral" / "two.jpg").exists()
    taken = crop_faces(tmp_path / "src", tmp_path / "out2")
    assert taken.rows[0].faces_found == 2 and taken.rows[0].output == "neutral/two.jpg"


def test_refusals_name_the_folder(tmp_path):
    (tmp_path / "src" / "holiday").mkdir(parents=True)
    with pytest.raises(FaceDetectorError, match="'holiday' is not an emotion"):
        crop_faces(tmp_path / "src", tmp_path / "out")
    (tmp_path / "src" / "holiday").rmdir()
    (tmp_path / "src" / "happy").mkdir()
    with pytest.raises(FaceDetectorError, match="inside the source"):
        crop_faces(tmp_path / "src", tmp_path / "src" / "crops")
    with pytest.raises(FaceDetectorError, match="margin"):
        FacesConfig(margin=-1)


def test_on_the_fly_crops_for_a_dataset(photo, tmp_path):
    _save_with_orientation(_scene(photo), tmp_path / "happy" / "a.jpg", 8)
    Image.new("RGB", (200, 200), (30, 60, 90)).save(tmp_path / "happy" / "wall.png")
    ds = create_dataset(tmp_path, allow_empty_classes=True)
    scan = attach_face_crops(ds, FacesConfig(size=96))
    assert scan.cropped == 1 and scan.no_face == ("happy/wall.png",)
    sizes = {ds.image_ids[i]: ds.load_image(i).size for i in range(len(ds))}
    assert sizes == {"happy/a.jpg": (96, 96), "happy/wall.png": (200, 200)}
    assert "1 cropped, 1 without a face used whole" in ds.summary()


def test_face_crop_pads_past_the_border_and_levels_the_eyes():
    img = Image.new("RGB", (40, 40), (200, 10, 10))
    crop = FaceCrop(left=-10, top=-10, right=30, bottom=30).apply(img)
    assert crop.size == (40, 40) and crop.getpixel((0, 0)) == (200, 10, 10)  # edge colour, not black
    # a horizontal bar tilted 20 degrees clockwise comes out level after the crop's rotation
    bar = Image.new("L", (101, 101), 0)
    bar.paste(255, (20, 48, 81, 53))
    tilted = bar.rotate(-20, center=(50, 50), resample=Image.BICUBIC).convert("RGB")
    levelled = np.asarray(FaceCrop(0, 0, 101, 101, angle_deg=20).apply(tilted).convert("L"))
    rows = np.nonzero(levelled[:, 30:70].max(axis=1) > 128)[0]
    assert rows.max() - rows.min() <= 8


@pytest.mark.parametrize("name, reason", [
    ("__MACOSX", "__MACOSX"), ("._img.jpg", "AppleDouble ._*"), (".DS_Store", ".DS_Store"),
    ("Thumbs.db", "Thumbs.db"), (".hidden.jpg", "hidden"), ("img.jpg", None), ("Thumbs.jpg", None),
])
def test_junk_names(name, reason):
    assert junk_reason(name) == reason


def test_create_dataset_faces_flag(photo, tmp_path):
    _save_with_orientation(_scene(photo), tmp_path / "sad" / "a.jpg", 6)
    plain = create_dataset(tmp_path, allow_empty_classes=True)
    assert plain.load_image(0).size == CANVAS and plain.face_scan is None
    cropped = create_dataset(tmp_path, allow_empty_classes=True, faces=True)
    assert cropped.face_scan.cropped == 1
    w, h = cropped.load_image(0).size
    assert w == h and 300 < w < 360  # the face box (~222 px) plus a quarter on each side
