"""The report folder is swapped in atomically: an interrupted rewrite leaves the previous report
whole, earlier runs' figures are removed afterwards, and nothing else in the folder is touched."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from captum_ext._io import host_tag
from captum_ext.report import plots
from captum_ext.report.methods import available_methods
from captum_ext.report.runner import ReportInputs, build_report_data
from captum_ext.report.writer import write_report


def _data():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
            nn.Linear(16, 3),
        ).eval()  # fmt: skip
        images = torch.rand(2, 3, 16, 16)
    inputs = ReportInputs(model, "tiny", sum(p.numel() for p in model.parameters()), images,
                          ["one.png", "two.png"])  # fmt: skip
    specs = [available_methods()["Saliency"]]
    return build_report_data(inputs, specs, quick=True, show_progress=False, log=lambda m: None)


def _referenced(out: Path) -> set[str]:
    return set(re.findall(r"src='([^']+)'", (out / "index.html").read_text()))


@pytest.fixture(scope="module")
def data():
    return _data()


def test_interrupted_rewrite_keeps_the_previous_report_whole(data, tmp_path, monkeypatch):
    out = tmp_path / "rep"
    write_report(data, out)
    before = {p: p.read_bytes() for p in (out / "index.html", out / "results.json")}
    old = _referenced(out)
    assert old and all((out / f).is_file() for f in old)

    calls = []

    def interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the figures
        return real(*args, **kwargs)

    real = plots.method_tile
    monkeypatch.setattr(plots, "method_tile", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_report(data, out)
    monkeypatch.setattr(plots, "method_tile", real)
    # the old page and its numbers are untouched and every figure they show still exists
    assert {p: p.read_bytes() for p in before} == before
    assert all((out / f).is_file() for f in old)
    assert len([p for p in out.iterdir() if p.name.startswith("assets-")]) == 2  # + orphan

    write_report(data, out)  # the next run removes both earlier asset folders
    new = _referenced(out)
    assets = {p.name for p in out.iterdir() if p.name.startswith("assets-")}
    assert len(assets) == 1 and {f.split("/")[0] for f in new} == assets
    assert not any((out / f).exists() for f in old)


def test_only_our_stale_asset_folders_are_removed(data, tmp_path):
    out = tmp_path / "rep"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    live_pid = os.getppid()  # our parent is alive while we run
    folders = {
        "dead": out / f"assets-{host_tag()}-{int(dead.stdout)}-0a1b",
        "live": out / f"assets-{host_tag()}-{live_pid}-0a1b",
        "other_host": out / f"assets-{'0' * 8 if host_tag() != '0' * 8 else '1' * 8}-1-0a1b",
        "not_ours": out / "assets-mine",
    }
    for path in folders.values():
        path.mkdir()
        (path / "keep.txt").write_text("user data")
    (out / "notes.txt").write_text("user data")
    write_report(data, out)
    assert not folders["dead"].exists()
    for key in ("live", "other_host", "not_ours"):
        assert (folders[key] / "keep.txt").read_text() == "user data", key
    assert (out / "notes.txt").read_text() == "user data"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_report_files_follow_the_umask(data, tmp_path):
    old = os.umask(0o027)
    try:
        out = tmp_path / "rep"
        write_report(data, out)
    finally:
        os.umask(old)
    files = [out / "index.html", out / "results.json", *out.rglob("*.png")]
    assert len(files) > 3
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path
    for folder in [out, *(p for p in out.iterdir() if p.is_dir())]:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o750, folder
