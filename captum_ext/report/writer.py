"""Write the report folder: PNG figures, ``results.json`` and ``index.html``."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from captum_ext._io import atomic_write_text
from captum_ext.metrics.summary import HIGHER_IS_BETTER, METRIC_NAMES
from captum_ext.report import plots
from captum_ext.report.runner import SENSITIVITY_BUDGET_S, SENSITIVITY_SAMPLES, ReportData
from captum_ext.report.sections import SECTIONS, Section


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def results_dict(data: ReportData, figures: list[str], sections: list[Section]) -> dict:
    """The JSON-serialisable summary of a report (what ``results.json`` holds)."""
    n = len(data.indices)
    cfg = data.trained.config
    return {
        "dataset": cfg.dataset,
        "model": cfg.model,
        "training": {"config": vars(cfg), **data.trained.info, "cache_hit": data.trained.cache_hit},
        "images": [
            {
                "test_index": idx,
                "label": data.class_names[int(data.labels[i])],
                "prediction": data.class_names[int(data.predictions[i])],
                "correct": bool(data.labels[i] == data.predictions[i]),
            }
            for i, idx in enumerate(data.indices)
        ],
        "methods": {
            r.name: {
                "reference": r.reference,
                "seconds": r.seconds,
                "seconds_per_image": None if r.seconds is None else r.seconds / n,
                "error": r.error,
                "sensitivity_samples": r.sensitivity_samples,
                "metrics": {k: {"mean": _mean(v), "per_image": v} for k, v in r.metrics.items()},
            }
            for r in data.results
        },
        "sections": {s.key: s.json for s in sections},
        "figures": figures,
    }


def _fmt(x: float | None, digits: int = 3) -> str:
    return "&ndash;" if x is None else f"{x:.{digits}g}"


def _methods_table(data: ReportData) -> str:
    present = {k for r in data.results for k in r.metrics}
    metric_names = [k for k in METRIC_NAMES if k in present]
    head = "".join(
        f"<th>{html.escape(k)} {'&uarr;' if HIGHER_IS_BETTER[k] else '&darr;'}</th>"
        for k in metric_names
    )
    rows = []
    n = len(data.indices)
    for r in data.results:
        per_image = None if r.seconds is None else r.seconds / n
        status = "ok" if r.error is None else f"failed: {html.escape(r.error)}"
        cells = "".join(
            f"<td>{_fmt(_mean(r.metrics[k])) if k in r.metrics else ''}</td>" for k in metric_names
        )
        rows.append(
            f"<tr><td>{html.escape(r.name)}</td><td>{_fmt(r.seconds)}</td><td>{_fmt(per_image)}</td>"
            f"{cells}<td>{status}</td><td class='ref'>{html.escape(r.reference)}</td></tr>"
        )
    return (
        "<table><tr><th>method</th><th>seconds (batch)</th><th>seconds / image</th>"
        f"{head}<th>status</th><th>reference</th></tr>{''.join(rows)}</table>"
    )


def write_report(data: ReportData, out: Path) -> Path:
    """Write figures, ``results.json`` and ``index.html`` into ``out``; returns the HTML path."""
    out.mkdir(parents=True, exist_ok=True)
    titles = [
        f"{data.class_names[int(y)]} -> {data.class_names[int(p)]}" + ("" if y == p else " (wrong)")
        for y, p in zip(data.labels, data.predictions)
    ]
    maps = {r.name: r.attributions for r in data.results}
    figures = [
        plots.saliency_grid(data.images, titles, maps, data.masks, out / "saliency_grid.png").name
    ]
    timed = {r.name: r.seconds / len(data.indices) for r in data.results if r.seconds is not None}
    if timed:
        figures.append(plots.timing_chart(timed, out / "timings.png").name)
    sections = [s for s in (make(data, out) for make in SECTIONS) if s is not None]
    section_figures = [f for s in sections for f in s.figures]

    results = results_dict(data, figures + section_figures, sections)
    atomic_write_text(json.dumps(results, indent=2, default=str), out / "results.json")

    info = data.trained.info
    acc = info.get("test_accuracy")
    shift = ""
    if "shift_accuracy" in info:
        shift = f", accuracy under the {info['shift_domain']} domain: {info['shift_accuracy']:.1%}"
    section_html = "".join(f"<h2>{html.escape(s.title)}</h2>{s.html}" for s in sections)
    cfg = data.trained.config
    n_wrong = sum(int(y != p) for y, p in zip(data.labels, data.predictions))
    imgs = "".join(
        f"<figure><img src='{html.escape(f)}' alt='{html.escape(f)}'></figure>" for f in figures
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>captum-ext report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1200px; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; font-size: 0.9em; }}
td.ref {{ color: #555; font-size: 0.8em; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>captum-ext report</h1>
<p>Model <b>{html.escape(cfg.model)}</b> on <b>{html.escape(cfg.dataset)}</b>;
test accuracy {acc:.1%}{shift}. {len(data.indices)} test images
({n_wrong} misclassified), each explained for
the predicted class. Maps show the sum of |attribution| over channels, scaled by its 99th
percentile.</p>
<h2>Methods</h2>
{_methods_table(data)}
<p class="ref">Metrics are per-image means (&uarr; higher is better, &darr; lower is better):
deletion and insertion AUC of the predicted class's probability (RISE protocol, 224 steps, zero
substrate for deletion and an 11x11 blur for insertion), infidelity (Yeh et al. 2019, Captum's
<code>infidelity</code> with <code>normalize=True</code>, noisy-baseline perturbations, 10
samples; for methods that multiply by the inputs, such as IntegratedGradients, Captum divides
the perturbation by the input, which inflates the score on dark pixels), max-sensitivity
(Captum's <code>sensitivity_max</code>, L-infinity radius 0.02,
{SENSITIVITY_SAMPLES[data.quick]} samples, fewer but at least 2 for methods slower than
{SENSITIVITY_BUDGET_S / SENSITIVITY_SAMPLES[data.quick]:.0f} s per batch: the number is in
results.json), pointing game and energy inside the
ground-truth mask (when the dataset has masks). Times are wall-clock on this machine.</p>
<h2>Saliency maps and timings</h2>
{imgs}
{section_html}
<p>Numbers: <a href="results.json">results.json</a>.</p>
</body></html>
"""
    return atomic_write_text(page, out / "index.html")
