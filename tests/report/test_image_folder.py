"""captum_ext.report.image_folder: --images / --labels / --masks / --size / --normalize."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from captum_ext.report.image_folder import ImageSet, Normalized, load_images, parse_normalize


def _pattern(h: int = 16, w: int = 16) -> np.ndarray:
    """A (H, W, 3) uint8 image where every pixel and channel differs."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 15 % 256, y * 15 % 256, (x * 7 + y * 11) % 256], -1).astype(np.uint8)


def _halves(h: int = 10, w: int = 20) -> np.ndarray:
    """Left half red, right half blue."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2, 0] = 255
    a[:, w // 2 :, 2] = 255
    return a


def _save(path, array: np.ndarray, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)


def _flat(tmp_path, n: int = 3):
    folder = tmp_path / "imgs"
    for i in range(n):
        _save(folder / f"{i:03d}.png", _pattern() // (i + 1))
    return folder


# --- reading ----------------------------------------------------------------------------------


def test_exact_pixels_without_resize(tmp_path):
    _save(tmp_path / "a" / "x.png", _pattern())
    got = load_images(tmp_path / "a", size=16)
    assert isinstance(got, ImageSet)
    assert got.images.dtype == torch.float32 and got.images.shape == (1, 3, 16, 16)
    want = torch.from_numpy(_pattern()).permute(2, 0, 1).float() / 255
    assert torch.equal(got.images[0], want)
    assert (got.names, got.labels, got.class_names, got.masks) == (["x.png"], None, None, None)


def test_resize_and_centre_crop_keep_aspect(tmp_path):
    _save(tmp_path / "a" / "wide.png", _halves(10, 20))  # 20 wide, 10 high
    img = load_images(tmp_path / "a", size=8).images[0]
    assert img.shape == (3, 8, 8)
    # the shorter side becomes 8 (16 x 8), the crop keeps columns 4..11: left half red
    red, blue = img[0], img[2]
    assert torch.all(red[:, :3] > 0.99) and torch.all(blue[:, :3] < 0.01)
    assert torch.all(blue[:, 5:] > 0.99) and torch.all(red[:, 5:] < 0.01)
    assert img.min() >= 0 and img.max() <= 1


def test_jpeg_and_case_insensitive_suffixes(tmp_path):
    folder = tmp_path / "a"
    _save(folder / "b.JPG", np.full((12, 12, 3), (200, 100, 50), np.uint8), quality=95)
    _save(folder / "a.jpeg", np.full((12, 12, 3), 30, np.uint8), quality=95)
    (folder / ".hidden.png").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("ignored")
    got = load_images(folder, size=12)
    assert got.names == ["a.jpeg", "b.JPG"]
    want = torch.tensor([200, 100, 50]).float().view(3, 1, 1) / 255
    assert (got.images[1] - want).abs().max() < 4 / 255
    assert (got.images[0] - 30 / 255).abs().max() < 4 / 255


def test_image_folder_layout(tmp_path):
    root = tmp_path / "classes"
    for cls, n in (("dog", 2), ("cat", 1), ("zebra", 1)):
        for i in range(n):
            _save(root / cls / f"{i}.png", _pattern())
    (root / "empty").mkdir()  # no images: ignored
    got = load_images(root, size=16)
    assert got.class_names == ["cat", "dog", "zebra"]
    assert got.names == ["cat/0.png", "dog/0.png", "dog/1.png", "zebra/0.png"]
    assert got.labels.dtype == torch.int64 and got.labels.tolist() == [0, 1, 1, 2]
    limited = load_images(root, size=16, limit=2)
    assert limited.names == ["cat/0.png", "dog/0.png"] and limited.labels.tolist() == [0, 1]
    assert limited.class_names == ["cat", "dog", "zebra"]


@pytest.mark.parametrize("header", [True, False])
def test_csv_labels(tmp_path, header):
    folder = _flat(tmp_path, 3)
    rows = "000.png,2\n\n001.png, 0\n002.png,5\n"
    (tmp_path / "l.csv").write_text(("filename,label\n" if header else "") + rows)
    got = load_images(folder, size=16, labels=tmp_path / "l.csv")
    assert got.labels.dtype == torch.int64 and got.labels.tolist() == [2, 0, 5]
    assert got.class_names is None
    limited = load_images(folder, size=16, labels=tmp_path / "l.csv", limit=2)
    assert limited.names == ["000.png", "001.png"] and limited.labels.tolist() == [2, 0]
    assert limited.images.shape == (2, 3, 16, 16)
    assert torch.equal(limited.images, got.images[:2])


def test_masks_follow_the_resize_and_crop(tmp_path):
    _save(tmp_path / "imgs" / "cat" / "001.jpg", _halves(10, 20))
    _save(tmp_path / "imgs" / "dog" / "002.png", _pattern(16, 16))
    left = np.zeros((10, 20), np.uint8)
    left[:, :10] = 255  # the left half of the image
    _save(tmp_path / "masks" / "cat" / "001.png", left)
    corner = np.zeros((16, 16), np.uint8)
    corner[:4, :8] = 200
    _save(tmp_path / "masks" / "dog" / "002.png", corner)
    got = load_images(tmp_path / "imgs", size=8, masks=tmp_path / "masks")
    assert got.masks.dtype == torch.bool and got.masks.shape == (2, 8, 8)
    want = torch.zeros(8, 8, dtype=torch.bool)
    want[:, :4] = True  # 20x10 -> 16x8, crop columns 4..11: the left half of the crop
    assert torch.equal(got.masks[0], want)
    want = torch.zeros(8, 8, dtype=torch.bool)
    want[:2, :4] = True
    assert torch.equal(got.masks[1], want)


# --- bad inputs -------------------------------------------------------------------------------


def _raises(match: str, *args, **kwargs) -> str:
    with pytest.raises(ValueError, match=match) as err:
        load_images(*args, **kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_bad_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    _raises(r"^--images .*empty holds no PNG or JPEG images$", tmp_path / "empty")
    (tmp_path / "file.png").write_bytes(b"x")
    _raises(r"^--images .*file\.png is not a folder$", tmp_path / "file.png")
    _raises(r"^--images .*nowhere does not exist$", tmp_path / "nowhere")
    _save(tmp_path / "mixed" / "top.png", _pattern())
    _save(tmp_path / "mixed" / "cls" / "a.png", _pattern())
    _raises(
        r"^--images .*mixed mixes images \(top\.png\) and class folders \(cls/\)",
        tmp_path / "mixed",
    )
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "garbage.png").write_bytes(b"\x89PNG not really")
    _raises(r"^--images: cannot read garbage\.png \(", tmp_path / "bad")
    folder = _flat(tmp_path)
    for size in (7, 0, 8.0, True):
        _raises(r"^--size must be an integer >= 8", folder, size=size)
    _raises(r"^--n-images must be a positive integer", folder, size=16, limit=0)


def test_bad_labels(tmp_path):
    folder = _flat(tmp_path, 3)
    csv = tmp_path / "l.csv"
    cases = {
        "000.png,0\n001.png,1\n002.png,2\nzzz.png,1\nyyy.png,0\n": (
            r"names 2 files that are not in --images \(first: zzz\.png\)$"
        ),
        "000.png,0\n": r"has no label for 2 images \(first: 001\.png\)$",
        "000.png,0\n001.png,cat\n002.png,1\n": r"line 2: label 'cat' is not a non-negative",
        "filename,label\n000.png,0\n001.png,-1\n002.png,1\n": r"line 3: label '-1'",
        "000.png,0\n001.png,1.5\n002.png,1\n": r"line 2: label '1\.5'",
        "000.png,0\n000.png,1\n002.png,1\n": r"line 2: 000\.png is listed twice \(also line 1\)",
        "000.png,0,extra\n": r"line 1: expected filename,label",
    }
    for text, match in cases.items():
        csv.write_text(text)
        _raises(rf"^--labels {csv} " + match, folder, size=16, labels=csv)
    # the CSV is checked against all images, even those the limit drops
    csv.write_text("000.png,0\n001.png,1\n")
    _raises("has no label for 1 image ", folder, size=16, labels=csv, limit=1)
    _raises(r"^--labels .*nope\.csv does not exist", folder, size=16, labels=tmp_path / "nope.csv")
    _save(tmp_path / "cls" / "a" / "0.png", _pattern())
    _raises(r"^--labels cannot be used with the class folders", tmp_path / "cls", labels=csv)


def test_bad_masks(tmp_path):
    _save(tmp_path / "imgs" / "a.png", _pattern(16, 16))
    _save(tmp_path / "imgs" / "b.png", _pattern(16, 16))
    fg = np.full((16, 16), 255, np.uint8)
    masks = tmp_path / "masks"
    _save(masks / "a.png", fg)
    _raises(rf"^--masks {masks} has no mask for b\.png", tmp_path / "imgs", size=16, masks=masks)
    _save(masks / "b.png", np.full((8, 16), 255, np.uint8))
    _raises(
        r"^--masks: mask b\.png is 16x8 but its image b\.png is 16x16$",
        tmp_path / "imgs",
        size=16,
        masks=masks,
    )
    _save(masks / "b.png", np.full((16, 16), 127, np.uint8))
    _raises(r"^--masks: mask b\.png has no foreground", tmp_path / "imgs", size=16, masks=masks)
    _save(masks / "b.png", fg)
    _save(masks / "b.jpg", fg)
    _raises(
        r"has several masks \(b\.jpg, b\.png\) for b\.png", tmp_path / "imgs", size=16, masks=masks
    )
    _raises(r"^--masks .*nope is not a folder", tmp_path / "imgs", size=16, masks=tmp_path / "nope")


# --- --normalize and Normalized -----------------------------------------------------------------


def test_parse_normalize():
    assert parse_normalize("imagenet") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert parse_normalize("ImageNet ") == parse_normalize("imagenet")
    assert parse_normalize("none") is None
    assert parse_normalize("0.5,0.25") == ((0.5,) * 3, (0.25,) * 3)
    assert parse_normalize("1,2,3,4,5,6") == ((1.0, 2.0, 3.0), (4.0, 5.0, 6.0))
    for bad in ("imagenet2", "1,2,3", "0.5,0", "nan,1", "1,inf", "", "a,b", "0.5,-1"):
        with pytest.raises(ValueError, match="^--normalize"):
            parse_normalize(bad)


def test_normalized_wrapper():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    wrapped = Normalized(net, mean, std)
    assert wrapped.model is net
    assert wrapped.mean.shape == (1, 3, 1, 1) and wrapped.std.shape == (1, 3, 1, 1)
    assert set(wrapped.state_dict()) == {f"model.{k}" for k in before}  # buffers not persistent
    x = torch.rand(2, 3, 4, 4)
    by_hand = torch.stack([(x[:, c] - mean[c]) / std[c] for c in range(3)], 1)
    assert torch.equal(wrapped(x), net(by_hand))
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    with pytest.raises(ValueError):
        Normalized(net, (0.5,), (0.0,))
