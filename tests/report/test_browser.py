"""The generated report in a real headless browser (Debian's Chromium): every image loads, no
console errors, no horizontal overflow at 800 and 1400 px; and the checker itself can fail.

Skipped, with the reason, on a machine without chromium, chromedriver or selenium
(``.ci/run`` installs the browser where it can).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from browser import browser_available, check_page
from PIL import Image

_UNAVAILABLE = browser_available()
pytestmark = pytest.mark.skipif(_UNAVAILABLE is not None, reason=_UNAVAILABLE or "")

WIDTHS = (800, 1400)


def _png(path: Path, size: tuple[int, int] = (40, 30)) -> Path:
    Image.new("RGB", size, (200, 60, 30)).save(path)
    return path


def _page(folder: Path, body: str) -> Path:
    html = folder / "page.html"
    html.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>t</title>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'></head>"
        f"<body>{body}</body></html>",
        encoding="utf-8",
    )
    return html


def _assert_screenshots(shots: list[Path], folder: Path) -> None:
    assert [s.name for s in shots] == [f"report-{w}px.png" for w in WIDTHS]
    for shot, width in zip(shots, WIDTHS):
        assert shot.parent == folder and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(shot) as im:
            assert im.format == "PNG" and im.width == width, (shot, im.size)


def test_checker_finds_broken_image_script_error_and_overflow(tmp_path):
    _png(tmp_path / "good.png")
    html = _page(
        tmp_path,
        "<p>text</p><img src='good.png' alt='good'><img src='missing.png' alt='missing'>"
        "<div style='width:1200px'>wide</div>"
        "<script>throw new Error('boom')</script>",
    )
    shots = tmp_path / "shots"
    check = check_page(html, shots)

    assert check.n_images == 2
    assert [Path(src).name for src in check.broken_images] == ["missing.png"]
    assert any("boom" in e for e in check.console_errors), check.console_errors
    assert any("missing.png" in e for e in check.console_errors), check.console_errors
    assert check.overflow_px[800] > 0, check.overflow_px
    assert check.overflow_px[1400] == 0, check.overflow_px
    _assert_screenshots(check.screenshots, shots)


def test_checker_passes_a_clean_page(tmp_path):
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png", (600, 400))
    html = _page(
        tmp_path,
        "<h1>Clean</h1><p>Some text.</p><img src='a.png' alt='a'>"
        "<img src='b.png' alt='b' style='max-width:100%'>"
        "<div style='height:2000px'>tall</div><script>console.log('fine')</script>",
    )
    check = check_page(html, tmp_path)

    assert check.n_images == 2
    assert check.broken_images == []
    assert check.console_errors == []
    assert check.overflow_px == {800: 0, 1400: 0}
    _assert_screenshots(check.screenshots, tmp_path)


def test_report_in_browser(shapes_model, tmp_path):
    out = tmp_path / "rep"
    start = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "captum_ext",
            "report",
            "--out",
            str(out),
            "--quick",
            "--n-images",
            "1",
            "--methods",
            "Saliency",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
    )
    report_s = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    html = out / "index.html"

    start = time.perf_counter()
    check = check_page(html, tmp_path)
    browser_s = time.perf_counter() - start
    print(f"report {report_s:.1f} s, browser check {browser_s:.1f} s, {check}")

    assert check.broken_images == []
    assert check.n_images == html.read_text(encoding="utf-8").count("<img")
    assert check.n_images > 0
    assert check.console_errors == []
    # the page reads well at both widths: nothing wider than the window
    assert check.overflow_px == {800: 0, 1400: 0}
    _assert_screenshots(check.screenshots, tmp_path)
