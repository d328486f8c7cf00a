"""One-call comparison of z-score and POT parameter saliency (for the ``captum-ext`` report).

:func:`compare_calibrations` streams a reference set once into both calibrations, ranks the
filters of the misclassified test inputs, and returns plain (JSON-serialisable) numbers: the
per-group share of top-k filters (the POT paper's Tables 1-2) and the end points of the pruning
and one-step fine-tuning curves, with a random-ranking baseline.
"""

from __future__ import annotations

from collections.abc import Iterable, Sized

import torch
from torch import Tensor, nn

from captum_ext.attr._core.parameter_saliency import GroupSpec, ParameterSaliency
from captum_ext.calibration.pot import POTCalibration
from captum_ext.calibration.zscore import ZScoreCalibration
from captum_ext.evaluation.filter_editing import EditCurves, finetuning_curves, pruning_curves


def compare_calibrations(
    model: nn.Module,
    reference: Iterable,
    inputs: Tensor,
    labels: Tensor,
    layers: nn.Module | list[nn.Module] | None = None,
    k: int = 20,
    level: float = 0.9,
    groups: GroupSpec = None,
    lr: float = 1e-3,
    max_examples: int | None = None,
    seed: int = 0,
) -> dict:
    """Z-score vs POT parameter saliency on the misclassified examples of ``inputs``.

    Args:
        model: Classifier returning logits (never modified).
        reference: Iterable of ``(x, y, ...)`` batches (e.g. correctly-distributed held-out data).
        inputs: Test images; only the misclassified ones (argmax != label) are explained.
        labels: True labels of ``inputs``.
        layers: Layer selection of :class:`ParameterSaliency` (default every Conv2d).
        k: Top-k filters counted per example, and filters pruned / fine-tuned.
        level: POT threshold quantile.
        groups: Group mapping of :meth:`ParameterSaliency.group_summary`.
        lr: One-step fine-tuning learning rate.
        max_examples: Use at most this many misclassified examples.
        seed: Seed of the random baseline ranking.

    Returns:
        A dict with ``"n_reference"``, ``"n_misclassified"``, ``"k"``, ``"groups"``
        (``{method: {group: percent}}``), ``"pruning"`` and ``"finetuning"``
        (``{method: {...}}``), where each curve summary holds ``wrong_prob_delta``,
        ``true_prob_delta``, ``corrected`` and ``n`` at ``k`` filters (methods: ``"z-score"``,
        ``"POT"``, ``"random"``; the random baseline has no groups).

    Examples:
        >>> out = compare_calibrations(model, ref_loader, x_shift, y_shift, k=10)
        >>> out["groups"]["POT"]   # {'features.0': 6.8, 'features.3': 21.5, ...}
    """
    ps = ParameterSaliency(model, layers=layers)
    zcal, pot = ZScoreCalibration(), POTCalibration(level=level)
    dataset = getattr(reference, "dataset", None)  # a DataLoader's; None for other iterables
    try:
        n_total = len(dataset) if isinstance(dataset, Sized) else None
    except (AttributeError, TypeError):
        n_total = None
    zcal.begin(ps.layout(), n_total)
    pot.begin(ps.layout(), n_total)
    for batch in reference:
        x, y = (batch[0], batch[1]) if isinstance(batch, (list, tuple)) else (batch, None)
        prof = ps.profiles(x, y)
        zcal.update(prof)
        pot.update(prof)
    zcal.finalize()
    pot.finalize()
    with torch.no_grad():
        pred = torch.cat([model(inputs[i : i + 256]).argmax(1) for i in range(0, len(inputs), 256)])
    labels = torch.as_tensor(labels, device=inputs.device).long()
    wrong = (pred != labels).nonzero().flatten()
    if max_examples is not None:
        wrong = wrong[:max_examples]
    out: dict = {
        "n_reference": zcal.n_total,
        "n_misclassified": len(wrong),
        "k": k,
        "groups": {},
        "pruning": {},
        "finetuning": {},
    }
    if len(wrong) == 0:
        return out
    xw, yw = inputs[wrong], labels[wrong]
    prof = ps.profiles(xw, yw)
    gen = torch.Generator().manual_seed(seed)
    rankings: dict[str, Tensor | list[Tensor]] = {
        "z-score": zcal.rank(prof, k=k),
        "POT": pot.rank(prof, k=k),
        "random": zcal.rank(prof, k=k, order="random", generator=gen),
    }
    for name, r in rankings.items():
        if name != "random" and sum(len(x) for x in r) > 0:
            out["groups"][name] = ps.group_summary(r, groups=groups, k=k)
        out["pruning"][name] = _curve_end(pruning_curves(model, ps.filters, xw, yw, r, max_k=k))
        out["finetuning"][name] = _curve_end(
            finetuning_curves(model, ps.filters, xw, yw, r, max_k=k, lr=lr)
        )
    return out


def _curve_end(c: EditCurves) -> dict[str, float]:
    """The values of an edit curve at its last column that some example reaches."""
    last = int((c.counts > 0).nonzero().max())
    return {
        "filters": last,
        "wrong_prob_delta": float(c.wrong_prob_delta[last]),
        "true_prob_delta": float(c.true_prob_delta[last]),
        "corrected": float(c.corrected[last]),
        "n": int(c.counts[last]),
    }
