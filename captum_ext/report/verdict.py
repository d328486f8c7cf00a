"""The report's reading aids: per-column best values, metric definitions, a plain verdict."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

from captum_ext.metrics._maps import spearman
from captum_ext.metrics.summary import HIGHER_IS_BETTER
from captum_ext.report.runner import MethodResult

#: What each metric measures, in one sentence each (the direction comes from HIGHER_IS_BETTER).
METRIC_HELP: dict[str, str] = {
    "deletion": "probability of the explained class as the map's most important pixels are "
    "set to zero first, in 224 steps (area under the curve, RISE protocol): a faithful map "
    "makes it fall fast",
    "insertion": "probability of the explained class as the most important pixels are pasted "
    "into an 11 x 11 blurred copy first (area under the curve): a faithful map makes it rise "
    "fast",
    "infidelity": "how far the map's prediction of the output change under random perturbations "
    "(noisy baseline, 10 samples) is from the real change (Yeh et al. 2019, Captum's "
    "infidelity, normalised); for methods that multiply by the inputs, such as "
    "IntegratedGradients, Captum divides the perturbation by the input, which inflates the "
    "score on dark pixels",
    "max_sensitivity": "largest change of the map when the image moves by at most 0.02 per "
    "pixel (Yeh et al. 2019): small means stable",
    "pointing_game": "share of images whose map peaks inside the object mask",
    "energy": "share of the map's mass inside the object mask (compare with the object's area)",
}

#: Longest side of the maps compared in :func:`map_agreement` (pooled down for speed).
AGREEMENT_SIDE = 56


def mean_of(values: Sequence[float] | None) -> float | None:
    """Mean of the finite values (None when there are none)."""
    finite = [v for v in values or [] if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def column_means(results: Sequence[MethodResult], n_images: int) -> dict[str, dict[str, float]]:
    """``{column: {method: value}}`` for ``seconds_per_image`` and every metric present."""
    cols: dict[str, dict[str, float]] = {"seconds_per_image": {}}
    for r in results:
        if r.seconds is not None:
            cols["seconds_per_image"][r.name] = r.seconds / n_images
        for k, v in r.metrics.items():
            m = mean_of(v)
            if m is not None:
                cols.setdefault(k, {})[r.name] = m
    return cols


def best_methods(cols: dict[str, dict[str, float]]) -> dict[str, set[str]]:
    """The methods holding the best value of each column (ties all count; 3 significant digits)."""
    best = {}
    for col, values in cols.items():
        if not values:
            continue
        higher = HIGHER_IS_BETTER.get(col, False)  # seconds: lower is better
        target = (max if higher else min)(values.values())
        best[col] = {m for m, v in values.items() if f"{v:.3g}" == f"{target:.3g}"}
    return best


def _flat_maps(attr: torch.Tensor) -> torch.Tensor:
    m = attr.detach().float().abs().sum(1, keepdim=True)
    h, w = m.shape[-2:]
    side = max(h, w)
    if side > AGREEMENT_SIDE:
        size = (max(1, h * AGREEMENT_SIDE // side), max(1, w * AGREEMENT_SIDE // side))
        m = F.adaptive_avg_pool2d(m, size)
    return m.flatten(1)


def map_agreement(results: Sequence[MethodResult]) -> dict[tuple[str, str], torch.Tensor]:
    """Per-image Spearman correlation of |map| (summed over channels) for every method pair."""
    maps = {r.name: _flat_maps(r.attributions) for r in results if r.attributions is not None}
    names = list(maps)
    return {(a, b): spearman(maps[a], maps[b]) for i, a in enumerate(names) for b in names[i + 1 :]}


def _list(names: Iterable[str]) -> str:
    ordered = sorted(names)
    return ordered[0] if len(ordered) == 1 else ", ".join(ordered[:-1]) + " and " + ordered[-1]


def verdict(
    results: Sequence[MethodResult],
    image_names: Sequence[str],
    object_area: float | None,
) -> list[str]:
    """A few plain sentences: who localises best, who is fastest, where the maps disagree."""
    n = len(image_names)
    cols = column_means(results, n)
    best = best_methods(cols)
    lines = []
    if "pointing_game" in cols and "energy" in cols:
        pg, en = cols["pointing_game"], cols["energy"]
        area = "" if object_area is None else f"; the objects cover {object_area:.0%} on average"
        lines.append(
            f"Localisation: {_list(best['energy'])} put the most of the map inside the objects "
            f"(energy {max(en.values()):.2f}{area}); {_list(best['pointing_game'])} point at "
            f"the object most often (pointing game {max(pg.values()):.2f})."
        )
    else:
        lines.append("Localisation was not measured: no object masks (pass --masks DIR).")
    for col, text in (
        ("deletion", "Most faithful by deletion"),
        ("insertion", "Most faithful by insertion"),
        ("max_sensitivity", "Most stable under small noise"),
    ):
        if col in best:
            value = cols[col][next(iter(best[col]))]
            lines.append(f"{text}: {_list(best[col])} ({col.replace('_', ' ')} {value:.3g}).")
    times = cols["seconds_per_image"]
    if times:
        fast, slow = min(times, key=lambda m: times[m]), max(times, key=lambda m: times[m])
        ratio = times[slow] / max(times[fast], 1e-9)
        lines.append(
            f"Speed: {fast} is the fastest ({times[fast]:.3g} s per image), {slow} the slowest "
            f"({times[slow]:.3g} s, {ratio:.0f}x)."
        )
    pairs = map_agreement(results)
    if pairs:
        means = {p: float(v.mean()) for p, v in pairs.items()}
        lo, hi = min(means, key=lambda p: means[p]), max(means, key=lambda p: means[p])
        per_image = torch.stack(list(pairs.values())).mean(0)
        worst = int(per_image.argmin())
        lines.append(
            f"Agreement (Spearman correlation of the maps): {hi[0]} and {hi[1]} agree most "
            f"({means[hi]:.2f}), {lo[0]} and {lo[1]} least ({means[lo]:.2f}); the methods "
            f"disagree most on {image_names[worst]} (mean {float(per_image[worst]):.2f})."
        )
    failed = [r.name for r in results if r.error]
    if failed:
        lines.append(f"Failed: {_list(failed)} (the errors are listed under the table).")
    return lines
