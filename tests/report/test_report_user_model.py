"""``captum-ext report`` on the user's own model and images, end to end, and its bad inputs.

Three ways of giving a model (a torchvision ResNet-18 state_dict, a TorchScript file, a factory
in a module of the working folder), one folder of generated PNG and JPEG images of different
sizes with labels and object masks. Bad inputs end in one line on stderr, exit status 2, and
nothing written.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from browser import browser_available, check_page
from PIL import Image
from torch import nn

from captum_ext.cli import main
from captum_ext.metrics.summary import METRIC_NAMES
from captum_ext.report.methods import available_methods

#: Generated images: name -> (width, height, object box (x0, y0, x1, y1), class).
IMAGES = {
    "a_square.png": (60, 48, (10, 8, 30, 28), 0),
    "b_wide.jpg": (72, 40, (40, 5, 64, 30), 1),
    "c_tall.png": (40, 56, (5, 20, 30, 50), 2),
}
SIZE = 32


def _write_images(root: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    images, masks = root / "images", root / "masks"
    images.mkdir()
    masks.mkdir()
    rows = ["filename,label"]
    for name, (w, h, (x0, y0, x1, y1), label) in IMAGES.items():
        pixels = rng.integers(0, 80, size=(h, w, 3), dtype=np.uint8)
        pixels[y0:y1, x0:x1] = (230, 200 - 60 * label, 40 + 80 * label)
        Image.fromarray(pixels).save(images / name)
        mask = np.zeros((h, w), dtype=np.uint8)
        mask[y0:y1, x0:x1] = 255
        Image.fromarray(mask).save(masks / (Path(name).stem + ".png"))
        rows.append(f"{name},{label}")
    labels = root / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    return {"images": images, "masks": masks, "labels": labels}


class SmallNet(nn.Module):
    """A tiny CNN with 3 classes (also the factory's and the TorchScript file's model)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4)
        )
        self.head = nn.Linear(8 * 16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


FACTORY = """
import torch
from torch import nn

def make_net(num_classes=3):
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        nn.Linear(128, num_classes),
    )
"""


@pytest.fixture(scope="module")
def user_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("user")
    files = _write_images(root)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        import torchvision

        resnet = torchvision.models.resnet18(num_classes=3)
        torch.save(resnet.state_dict(), root / "resnet18.pt")
        files["resnet_params"] = sum(p.numel() for p in resnet.parameters())
        net = SmallNet().eval()
        torch.jit.save(torch.jit.script(net), root / "net.ts")
    (root / "user_models_e2e.py").write_text(FACTORY)
    files["weights"] = root / "resnet18.pt"
    files["script"] = root / "net.ts"
    files["root"] = root
    return files


def _report(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "captum_ext", "report", "--no-progress", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=900,
    )


def _check_folder(out: Path, methods: list[str], n_images: int) -> dict:
    """What every report folder must satisfy; returns results.json."""
    page = (out / "index.html").read_text()
    results = json.loads((out / "results.json").read_text())
    written = {p.relative_to(out).as_posix() for p in out.rglob("*.png")}
    referenced = set(re.findall(r"src='([^']+\.png)'", page))
    assert written and written == referenced  # every figure shown, nothing stale left
    assert set(results["figures"]) == referenced
    assert list(results["methods"]) == methods
    for name, entry in results["methods"].items():
        assert entry["error"] is None, (name, entry["error"])
        assert entry["seconds"] > 0 and entry["preset_note"]
        assert set(entry["metrics"]) == set(METRIC_NAMES), name  # masks given: all six
        for metric, values in entry["metrics"].items():
            assert len(values["per_image"]) == n_images
            assert all(math.isfinite(v) for v in values["per_image"]), (name, metric)
    assert [im["name"] for im in results["images"]] == sorted(IMAGES)[:n_images]
    assert [im["label"] for im in results["images"]] == [
        str(IMAGES[k][3]) for k in sorted(IMAGES)[:n_images]
    ]
    assert "captum-ext report" in results["metadata"]["command"]
    assert "Verdict" in page and "About this run" in page
    return results


def test_torchvision_state_dict_every_method(user_files, tmp_path):
    out = tmp_path / "rep"
    proc = _report(
        [
            "--out", str(out),
            "--model", "torchvision:resnet18",
            "--weights", str(user_files["weights"]),
            "--num-classes", "3",
            "--images", str(user_files["images"]),
            "--labels", str(user_files["labels"]),
            "--masks", str(user_files["masks"]),
            "--size", str(SIZE),
            "--quick",
        ],
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    results = _check_folder(out, list(available_methods()), len(IMAGES))
    assert results["n_parameters"] == user_files["resnet_params"]
    assert results["inputs"]["normalize"] == "imagenet"  # the torchvision default
    assert "class='warn'" not in (out / "index.html").read_text()  # weights were given
    # the page in a real browser: every image loads, no console error, no overflow at 800/1400
    if browser_available() is None:
        check = check_page(out / "index.html", tmp_path / "shots")
        assert check.broken_images == [] and check.console_errors == []
        assert check.n_images == len(results["figures"])
        assert check.overflow_px == {800: 0, 1400: 0}
        print("screenshots:", *check.screenshots)
    for stage in ("Read 3 images", "Loaded the model", "Explaining", "Scoring", "Drawing",
                  "sections", "Writing"):  # fmt: skip
        assert stage in proc.stderr, stage


@pytest.mark.parametrize("kind", ["torchscript", "factory"])
def test_torchscript_and_factory_models(kind, user_files, tmp_path):
    out = tmp_path / "rep"
    model = str(user_files["script"]) if kind == "torchscript" else "user_models_e2e:make_net"
    methods = ["Saliency", "LEG", "CASO"]
    proc = _report(
        [
            "--out", str(out), "--model", model,
            "--images", str(user_files["images"]), "--labels", str(user_files["labels"]),
            "--masks", str(user_files["masks"]), "--size", str(SIZE), "--quick",
            "--n-images", "2", "--methods", *methods,
        ],
        cwd=user_files["root"],  # the factory's module lives there
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    results = _check_folder(out, methods, 2)
    assert results["inputs"]["normalize"] == "none"
    expected = sum(p.numel() for p in SmallNet().parameters())  # same shapes in both
    assert results["n_parameters"] == expected


def test_random_torchvision_weights_are_flagged_in_the_report(user_files, tmp_path):
    out = tmp_path / "rep"
    proc = _report(
        ["--out", str(out), "--model", "torchvision:resnet18", "--num-classes", "3",
         "--images", str(user_files["images"]), "--size", str(SIZE), "--quick",
         "--methods", "Saliency", "--n-images", "1"],
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "warning:" in proc.stderr and "random" in proc.stderr
    page = (out / "index.html").read_text()
    assert "class='warn'" in page and "random" in page
    results = json.loads((out / "results.json").read_text())
    assert results["images"][0]["label"] is None  # no labels: the prediction is explained
    assert set(results["methods"]["Saliency"]["metrics"]) == {
        "deletion",
        "insertion",
        "infidelity",
        "max_sensitivity",
    }  # fmt: skip  (no masks: no localisation)


def _bad(root: Path, tmp_path: Path, name: str) -> list[str]:
    """The arguments of one bad-input case (files it needs are created in tmp_path)."""
    images, labels, masks = root / "images", root / "labels.csv", root / "masks"
    base = ["--images", str(images), "--size", str(SIZE), "--num-classes", "3"]
    tv = ["--model", "torchvision:resnet18", "--weights", str(root / "resnet18.pt")]
    if name == "unresolvable model":
        return ["--model", "no_such_package.models:make", "--images", str(images)]
    if name == "weights of another architecture":
        return ["--model", "torchvision:resnet34", "--weights", str(root / "resnet18.pt"), *base]
    if name == "folder without images":
        empty = tmp_path / "empty"
        empty.mkdir()
        (empty / "notes.txt").write_text("no images here")
        return [*tv, "--images", str(empty), "--num-classes", "3"]
    if name == "labels naming missing files":
        bad = tmp_path / "labels.csv"
        bad.write_text(labels.read_text() + "ghost.png,1\n")
        return [*tv, *base, "--labels", str(bad)]
    if name == "masks of another size":
        other = tmp_path / "masks"
        other.mkdir()
        for p in masks.iterdir():
            Image.open(p).resize((17, 13)).save(other / p.name)
        return [*tv, *base, "--masks", str(other)]
    if name == "unreadable image":
        broken = tmp_path / "images"
        broken.mkdir()
        for p in images.iterdir():
            (broken / p.name).write_bytes(p.read_bytes())
        (broken / "d_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
        return [*tv, "--images", str(broken), "--size", str(SIZE), "--num-classes", "3"]
    raise AssertionError(name)


@pytest.mark.parametrize(
    "case, message",
    [
        ("unresolvable model", "--model"),
        ("weights of another architecture", "--weights"),
        ("folder without images", "--images"),
        ("labels naming missing files", "--labels"),
        ("masks of another size", "--masks"),
        ("unreadable image", "--images"),
    ],
)
def test_bad_user_input_is_one_line_exit_2_nothing_written(
    case, message, user_files, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    assert main(["report", "--out", str(out), *_bad(user_files["root"], tmp_path, case)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("captum-ext: error:") and err.count("\n") == 1, err
    assert message in err, err
    assert not out.exists()  # nothing written
