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

from captum_ext.benchmark.training import load_data
from captum_ext.metrics.landscape import landscape_summary
from captum_ext.report.plots import save_figure
from captum_ext.report.runner import ReportData

#: Test images used for the model's importance landscape.
LANDSCAPE_IMAGES = {False: 512, True: 128}


@dataclass
class Section:
    """One block of the report: HTML, the PNG files it shows, and numbers for results.json."""

    key: str
    title: str
    html: str
    figures: list[str] = field(default_factory=list)
    json: dict = field(default_factory=dict)


def landscape_section(data: ReportData, out: Path) -> Section:
    """The model's importance landscape (PILCRO, Moens et al.) on test images, and its TV."""
    test_set = load_data(data.trained.config, "test")
    n = min(len(test_set), LANDSCAPE_IMAGES[data.quick])
    images = torch.stack([test_set[i][0] for i in range(n)])
    gen = torch.Generator().manual_seed(0)
    summary = landscape_summary(data.trained.model, images, generator=gen)
    fig, ax = plt.subplots(figsize=(3.2, 2.8))
    im = ax.imshow(summary.landscape.numpy(), cmap="viridis")
    fig.colorbar(im, ax=ax)
    ax.set_title(f"I' (TV = {summary.total_variation:.3g})", fontsize=9)
    ax.axis("off")
    name = "landscape.png"
    save_figure(fig, out / name)
    text = (
        f"<p>Normalised importance landscape I' of the model on {n} test images (squared input "
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


SECTIONS: list[Callable[[ReportData, Path], Section | None]] = [landscape_section]
