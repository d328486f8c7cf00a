"""Write the report folder: ``index.html``, ``results.json`` and the figures they show.

A reader never sees a half-written report: the figures of a run go into a fresh folder
``assets-<host>-<pid>-<random>/`` inside the output folder, then ``results.json`` and finally
``index.html`` replace the previous ones atomically. Only then are the asset folders of earlier
runs removed (never those of another live process, nor any file we did not write).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import secrets
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

import captum
import torch

import captum_ext
from captum_ext._compat import NullProgress, progress
from captum_ext._io import atomic_write_text, host_tag, pid_alive
from captum_ext.report import plots
from captum_ext.report.page import (
    STYLE,
    esc,
    image_rows,
    metadata_block,
    methods_table,
    metric_help,
)
from captum_ext.report.runner import SENSITIVITY_BUDGET_S, SENSITIVITY_SAMPLES, ReportData
from captum_ext.report.sections import SECTIONS, Section
from captum_ext.report.verdict import mean_of, verdict

_ASSETS_RE = re.compile(r"^assets-(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)-[0-9a-f]+$")


def versions() -> dict[str, str]:
    """Versions of captum-ext, Captum, torch, torchvision (when installed) and Python."""
    out = {"captum-ext": captum_ext.__version__, "captum": captum.__version__}
    out["torch"] = torch.__version__
    try:
        import torchvision

        out["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover - torchvision is optional
        pass
    out["python"] = platform.python_version()
    return out


def results_dict(data: ReportData, figures: list[str], sections: list[Section], meta: dict) -> dict:
    """The JSON-serialisable summary of a report (what ``results.json`` holds)."""
    inputs = data.inputs
    n = len(inputs.images)
    training = None
    if inputs.trained is not None:
        t = inputs.trained
        training = {"config": vars(t.config), **t.info, "cache_hit": t.cache_hit}
    images = []
    for i in range(n):
        label = None if inputs.labels is None else int(inputs.labels[i])
        pred = int(data.predictions[i])
        images.append(
            {
                "name": inputs.names[i],
                "label": None if label is None else inputs.class_name(label),
                "prediction": inputs.class_name(pred),
                "correct": None if label is None else label == pred,
            }
        )
    return {
        "model": inputs.model_name,
        "n_parameters": inputs.n_parameters,
        "preset": data.preset,
        "quick": data.quick,
        "metadata": meta,
        "inputs": inputs.details,
        "training": training,
        "images": images,
        "methods": {
            r.name: {
                "reference": r.reference,
                "settings": json.loads(json.dumps(r.settings, default=str)),
                "preset_note": r.note,
                "seconds": r.seconds,
                "seconds_per_image": None if r.seconds is None else r.seconds / n,
                "error": r.error,
                "sensitivity_samples": r.sensitivity_samples,
                "metrics": {k: {"mean": mean_of(v), "per_image": v} for k, v in r.metrics.items()},
            }
            for r in data.results
        },
        "sections": {s.key: s.json for s in sections},
        "figures": figures,
    }


def _titles(data: ReportData) -> list[str]:
    inputs, titles = data.inputs, []
    for i, name in enumerate(inputs.names):
        pred = inputs.class_name(int(data.predictions[i]))
        if inputs.labels is None:
            titles.append(f"{name}: predicted {pred}")
        else:
            label = inputs.class_name(int(inputs.labels[i]))
            wrong = "" if int(inputs.labels[i]) == int(data.predictions[i]) else " (wrong)"
            titles.append(f"{name}: {label} -> {pred}{wrong}")
    return titles


def _remove_old_assets(out: Path, keep: str) -> None:
    for entry in os.scandir(out):
        match = _ASSETS_RE.match(entry.name)
        if match is None or entry.name == keep or not entry.is_dir(follow_symlinks=False):
            continue
        pid = int(match["pid"])
        if match["host"] == host_tag() and (pid == os.getpid() or not pid_alive(pid)):
            shutil.rmtree(entry.path, ignore_errors=True)


def write_report(
    data: ReportData,
    out: Path,
    *,
    command: str | None = None,
    show_progress: bool = False,
    log: Callable[[str], None] = lambda msg: None,
) -> Path:
    """Write the figures, ``results.json`` and ``index.html`` into ``out``; returns the HTML path.

    Args:
        data: The computed report (:func:`~captum_ext.report.runner.build_report_data`).
        out: Output folder (created if missing).
        command: The command line shown in the metadata block (default: ``sys.argv``).
        show_progress: Progress bars for the figures and sections.
        log: Receives one line per stage.
    """
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    assets_name = f"assets-{host_tag()}-{os.getpid()}-{secrets.token_hex(4)}"
    assets = out / assets_name
    assets.mkdir()
    inputs, titles = data.inputs, _titles(data)
    n = len(inputs.images)

    log(f"Drawing {n} x {len(data.results) + 1} image tiles and the overview ...")
    bar = progress(desc="figures", total=n + 2) if show_progress else NullProgress()
    tiles: list[list[str]] = []
    try:
        for i in range(n):
            mask = None if inputs.masks is None else inputs.masks[i]
            row = [plots.image_tile(inputs.images[i], mask, titles[i], assets / f"image{i}.png")]
            for j, r in enumerate(data.results):
                attr = None if r.attributions is None else r.attributions[i]
                path = assets / f"image{i}-method{j}.png"
                row.append(plots.method_tile(inputs.images[i], attr, mask, r.name, path, r.error))
            tiles.append([f"{assets_name}/{p.name}" for p in row])
            bar.update()
        maps = {r.name: r.attributions for r in data.results}
        grid = plots.saliency_grid(inputs.images, titles, maps, inputs.masks, assets / "grid.png")
        overview = [f"{assets_name}/{grid.name}"]
        bar.update()
        timed = {r.name: r.seconds / n for r in data.results if r.seconds is not None}
        if timed:
            chart = plots.timing_chart(timed, assets / "timings.png")
            overview.append(f"{assets_name}/{chart.name}")
        bar.update()
    finally:
        bar.close()

    log("Running the extra sections (importance landscape, parameter saliency) ...")
    sections = []
    bar = progress(desc="sections", total=len(SECTIONS)) if show_progress else NullProgress()
    try:
        for make in SECTIONS:
            section = make(data, assets)
            if section is not None:
                section.figures = [f"{assets_name}/{f}" for f in section.figures]
                section.html = section.html.replace("src='", f"src='{assets_name}/")
                sections.append(section)
            bar.update()
    finally:
        bar.close()

    seconds = {**data.seconds, "figures_and_sections": time.perf_counter() - start}
    meta = {
        "date (UTC)": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **{f"{k} version": v for k, v in versions().items()},
        "command": command if command is not None else " ".join(sys.argv),
        "model": f"{inputs.model_name} ({inputs.n_parameters:,} parameters)",
        "images": f"{n} ({inputs.images.shape[-2]} x {inputs.images.shape[-1]})",
        "preset": data.preset + (" (--quick)" if data.quick else ""),
        "seed": data.seed,
        "device": f"{inputs.images.device} ({torch.get_num_threads()} CPU threads)",
        "total time (s)": f"{sum(seconds.values()):.1f}",
        **{f"time: {k} (s)": f"{v:.1f}" for k, v in seconds.items()},
        **{k: str(v) for k, v in inputs.details.items() if k != "test_indices"},
    }
    figures = [t for row in tiles for t in row] + overview
    figures += [f for s in sections for f in s.figures]
    log("Writing results.json and index.html ...")
    results = results_dict(data, figures, sections, meta)
    atomic_write_text(json.dumps(results, indent=2, default=str), out / "results.json")
    page = atomic_write_text(_page(data, tiles, overview, sections, meta), out / "index.html")
    _remove_old_assets(out, assets_name)
    return page


def _page(
    data: ReportData,
    tiles: list[list[str]],
    overview: list[str],
    sections: list[Section],
    meta: dict,
) -> str:
    inputs = data.inputs
    warnings = "".join(f"<p class='warn'>Warning: {esc(w)}</p>" for w in inputs.warnings)
    n = len(inputs.images)
    n_wrong = 0
    if inputs.labels is not None:
        n_wrong = int((inputs.labels != data.predictions).sum())
    wrong = f" ({n_wrong} misclassified)" if inputs.labels is not None else ""
    area = None
    if inputs.masks is not None:
        area = float(inputs.masks.float().mean())
    lines = verdict(data.results, inputs.names, area)
    verdict_html = "".join(f"<li>{esc(line)}</li>" for line in lines)
    section_html = "".join(f"<h2>{esc(s.title)}</h2>{s.html}" for s in sections)
    overview_html = "".join(f"<img src='{esc(f)}' alt='{esc(f)}'>" for f in overview)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>captum-ext report: {esc(inputs.model_name)}</title>
<style>{STYLE}</style></head><body>
<h1>captum-ext report: {esc(inputs.model_name)}</h1>
{warnings}
<p>{esc(inputs.description)} {n} images{wrong}, each explained for the class the model
predicts, with the <b>{esc(data.preset)}</b> preset. Each tile shows the map blended over the
image (colour bar: |attribution| scaled by its 99th percentile) and, beside it, the raw map.</p>
<h2>Methods</h2>
{methods_table(data)}
<p class="small">Per-image means; the best value of each column is highlighted. Max-sensitivity
uses {SENSITIVITY_SAMPLES[data.quick]} samples, fewer (at least 2) for methods slower than
{SENSITIVITY_BUDGET_S / SENSITIVITY_SAMPLES[data.quick]:.0f} s per batch (see results.json).
Times are wall-clock on this machine.</p>
{metric_help(data)}
<h2>Verdict</h2>
<ul class="verdict">{verdict_html}</ul>
<h2>Maps, one row per image</h2>
{image_rows(data, tiles)}
<h2>Overview and timings</h2>
{overview_html}
{section_html}
<h2>About this run</h2>
{metadata_block(meta, data)}
<p>Numbers: <a href="results.json">results.json</a>.</p>
</body></html>
"""
