"""Extra report sections beyond the per-method table: one function per section.

A section function takes the computed :class:`~captum_ext.report.runner.ReportData` and the
output folder, writes its figures there and returns a :class:`Section` (or None to skip). Adding
a section is one function appended to :data:`SECTIONS`.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from captum_ext._io import atomic_write_bytes
from captum_ext.benchmark.shapes import DOMAINS
from captum_ext.benchmark.training import load_data
from captum_ext.claims.page import claims_html, verdict_counts
from captum_ext.claims.results import load_results
from captum_ext.evaluation.saliency_summary import compare_calibrations
from captum_ext.metrics.landscape import landscape_summary
from captum_ext.report.plots import save_figure
from captum_ext.report.runner import ReportData

#: Test images used for the model's importance landscape.
LANDSCAPE_IMAGES = {False: 512, True: 128}
#: Parameter saliency: reference (calibration) images and images searched for mistakes.
PSAL_REFERENCE = {False: 1000, True: 200}
PSAL_INPUTS = {False: 400, True: 150}
PSAL_TOP_K = 10


@dataclass
class Section:
    """One block of the report: HTML, the PNG files it shows, and numbers for results.json."""

    key: str
    title: str
    html: str
    figures: list[str] = field(default_factory=list)
    json: dict = field(default_factory=dict)


def landscape_section(data: ReportData, out: Path) -> Section:
    """The model's importance landscape (PILCRO, Moens et al.) on test images, and its TV.

    For a user's model the landscape is computed on the report's own images.
    """
    if data.trained is not None:
        test_set = load_data(data.trained.config, "test")
        n = min(len(test_set), LANDSCAPE_IMAGES[data.quick])
        images = torch.stack([test_set[i][0] for i in range(n)])
        source = "test images"
    else:  # the user's images: the only ones we have
        images = data.images
        n = len(images)
        source = "of your images"
    gen = torch.Generator().manual_seed(0)
    summary = landscape_summary(data.inputs.model, images, generator=gen)
    fig, ax = plt.subplots(figsize=(3.2, 2.8))
    im = ax.imshow(summary.landscape.numpy(), cmap="viridis")
    fig.colorbar(im, ax=ax)
    ax.set_title(f"I' (TV = {summary.total_variation:.3g})", fontsize=9)
    ax.axis("off")
    name = "landscape.png"
    save_figure(fig, out / name)
    text = (
        f"<p>Normalised importance landscape I' of the model on {n} {source} (squared input "
        "gradients of a class sampled from the softmax, normalised so that mean(I'^2) = 1; "
        "PILCRO, Moens et al.). A flat landscape means every location can matter equally; "
        f"total variation (mean squared neighbour difference): "
        f"<b>{summary.total_variation:.4g}</b>.</p><img src='{html.escape(name)}' alt='{name}'>"
    )
    return Section(
        "landscape",
        "Importance landscape",
        text,
        [name],
        {"total_variation": summary.total_variation, "n_images": n},
    )


def _stack(dataset, start: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    items = [dataset[i] for i in range(start, min(len(dataset), start + n))]
    return torch.stack([it[0] for it in items]), torch.tensor([int(it[1]) for it in items])


def _percent_table(groups: dict[str, dict[str, float]]) -> str:
    methods = list(groups)
    names = list(dict.fromkeys(g for m in methods for g in groups[m]))
    head = "".join(f"<th>{html.escape(m)}</th>" for m in methods)
    rows = "".join(
        f"<tr><td>{html.escape(g)}</td>"
        + "".join(f"<td>{groups[m].get(g, 0.0):.1f} %</td>" for m in methods)
        + "</tr>"
        for g in names
    )
    return f"<table><tr><th>layer group</th>{head}</tr>{rows}</table>"


def _edit_table(summary: dict) -> str:
    rows = []
    for protocol in ("pruning", "finetuning"):
        for method, r in summary[protocol].items():
            rows.append(
                f"<tr><td>{protocol}</td><td>{html.escape(method)}</td><td>{r['filters']}</td>"
                f"<td>{r['wrong_prob_delta']:+.3f}</td><td>{r['true_prob_delta']:+.3f}</td>"
                f"<td>{r['corrected']:.1%}</td></tr>"
            )
    return (
        "<table><tr><th>protocol</th><th>ranking</th><th>filters edited</th>"
        "<th>&Delta; p(wrong class)</th><th>&Delta; p(true class)</th><th>now correct</th></tr>"
        f"{''.join(rows)}</table>"
    )


def parameter_saliency_section(data: ReportData, out: Path) -> Section:
    """Which filters cause the model's mistakes: z-score vs POT parameter saliency.

    The calibration uses held-out test images of the training distribution; the explained
    mistakes come from the other background domain (domain shift) for ``shapes``, and from the
    test split for ``digits``.
    """
    if data.trained is None:
        return Section(
            "parameter_saliency",
            "Which filters cause the mistakes",
            "<p>Not run: parameter saliency needs a calibration set of about 1,000 labelled "
            "images of the training distribution, which the report only has for the embedded "
            "benchmark. On your own data, fit a calibration from "
            "<code>captum_ext.calibration</code> and rank filters with "
            "<code>captum_ext.attr.ParameterSaliency</code>.</p>",
            [],
            {"skipped": "needs a labelled calibration set (benchmark only)"},
        )
    cfg = data.trained.config
    reference_set = load_data(cfg, "test")
    n_ref, n_in = PSAL_REFERENCE[data.quick], PSAL_INPUTS[data.quick]
    ref_x, ref_y = _stack(reference_set, 0, n_ref)
    if cfg.dataset == "shapes":
        other = next(d for d in DOMAINS if d != cfg.domain)
        source = f"the {other} domain (domain shift)"
        x, y = _stack(load_data(cfg, "test", domain=other), 0, n_in)
    else:
        source = "the test split"
        x, y = _stack(reference_set, n_ref, n_in)
    reference = [(ref_x[i : i + 100], ref_y[i : i + 100]) for i in range(0, len(ref_y), 100)]
    summary = compare_calibrations(data.inputs.model, reference, x, y, k=PSAL_TOP_K)
    intro = (
        f"<p>Parameter saliency (Levin et al. 2022) of the {summary['n_misclassified']} "
        f"misclassified images among {len(y)} from {source}, calibrated on {len(ref_y)} "
        "held-out images by z-scores or by peaks-over-threshold tail probabilities (POT, "
        f"GPD fitted above the 90th percentile). Share of each layer group among the top "
        f"{PSAL_TOP_K} filters per image:</p>"
    )
    if summary["n_misclassified"] == 0:
        body = "<p>The model made no mistake on these images.</p>"
    else:
        body = (
            _percent_table(summary["groups"])
            + f"<p>Editing the top {PSAL_TOP_K} filters of each ranking (zeroing them, or one "
            "gradient step with lr 1e-3 on them only), against a random ranking:</p>"
            + _edit_table(summary)
        )
    return Section(
        "parameter_saliency", "Which filters cause the mistakes", intro + body, [], summary
    )


def claims_section(data: ReportData, out: Path) -> Section | None:
    """The table of ``captum-ext claims`` (from ``data.claims_dir``) and its figures."""
    if data.claims_dir is None:
        return None
    results = load_results(data.claims_dir)
    figures = [r.outcome.figure for r in results if r.outcome.figure]
    for name in figures:
        atomic_write_bytes((data.claims_dir / name).read_bytes(), out / name)
    counts = verdict_counts(results)
    intro = (
        f"<p>From <code>{html.escape(str(data.claims_dir))}</code>, written by "
        "<code>captum-ext claims</code>: each paper's central claim run on the embedded "
        "benchmark, with the rule that gave the verdict and, where it does not hold, why.</p>"
    )
    return Section(
        "claims",
        "Do the papers' claims hold here?",
        intro + claims_html(results),
        figures,
        {"verdicts": counts, "claims": [r.as_dict() for r in results]},
    )


SECTIONS: list[Callable[[ReportData, Path], Section | None]] = [
    landscape_section,
    parameter_saliency_section,
    claims_section,
]
