"""Claim experiments of POT-saliency (Wang & Sato, arXiv 2310.17951) under domain shift.

Both experiments share one setup per model (:func:`shift_setup`): a benchmark model trained on
the default ``SyntheticShapes`` background domain (``blobs``), z-score and POT calibrations
fitted on held-out images of that domain, and the misclassified images of the other background
domain (``stripes``), the benchmark's stand-in for the paper's MNIST -> SVHN shift. The paper
itself fits the statistics on the *shifted* domain ("we applied our method to the SVHN training
set to approximate the distributions of filter saliency", Section 5.2); that variant is measured
as a diagnostic (``paper_reference``).

- ``pot_vs_zscore_layers`` (Tables 1-2): which layer groups the top-k filters come from.
- ``filter_editing`` (Section 5.1, Figures 3-5): pruning / one-step fine-tuning of the top
  filters against random filters, and POT against z-score.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from captum_ext.attr import ParameterSaliency
from captum_ext.benchmark import SyntheticShapes, train
from captum_ext.benchmark.shapes import DOMAINS
from captum_ext.calibration import POTCalibration, ZScoreCalibration
from captum_ext.claims._base import ClaimSettings, Outcome, claim, claim_figure, verdict_from
from captum_ext.evaluation import EditCurves, finetuning_curves, pruning_curves

PAPER = "POT-saliency (Wang & Sato, arXiv 2310.17951)"
#: Top-k filters counted per misclassified image (paper: 20 for ResNet-18; small_cnn has only
#: 176 filters in 4 layers, so 10).
TOP_K = {"resnet18": 20, "small_cnn": 10}
#: Filters pruned and fine-tuned per model (paper, ResNet-50 with 26,560 filters: up to 50
#: pruned, 25 fine-tuned; lr 1e-3). small_cnn has 176 filters: 50 would prune 28 % of the
#: network (a first run did: random pruning then corrected more than either ranking), so it
#: edits 10.
EDIT_K = {"resnet18": (50, 25), "small_cnn": (10, 10)}
LR = 1e-3
#: Rule of ``pot_vs_zscore_layers`` (fixed before any run): z-score's last-group share at least
#: this (the paper: 96 %) ...
Z_LAST_MIN = 50.0
#: ... and POT's last-group share at least this many points below z-score's (paper: 56).
POT_GAP_MIN = 20.0
#: Rule of ``filter_editing``: a salient ranking "beats random" when it corrects at least this
#: many more percentage points of the misclassified images than random filters.
BEAT_RANDOM_MIN = 5.0


@dataclass(frozen=True)
class ShiftSetup:
    """One model's calibrations and misclassified shifted-domain images.

    Attributes:
        model_name: ``"small_cnn"`` or ``"resnet18"``.
        ps: The :class:`ParameterSaliency` of every Conv2d.
        zscore: Z-score calibration fitted on in-domain reference images.
        pot: POT calibration (level 0.9) fitted on the same profiles.
        x_wrong: Misclassified shifted-domain images.
        y_wrong: Their true labels.
        prof_wrong: Their raw profiles ``(n, F)``.
        ref_prof: The reference profiles ``(n_ref, F)`` the calibrations were fitted on.
        n_reference: Reference images.
        n_shift: Shifted-domain images classified.
        paper_reference: ``{"z-score": ..., "POT": ...}`` group shares when both calibrations
            are fitted on shifted-domain images instead (the paper's text); empty if not run.
    """

    model_name: str
    ps: ParameterSaliency
    zscore: ZScoreCalibration
    pot: POTCalibration
    x_wrong: Tensor
    y_wrong: Tensor
    prof_wrong: Tensor
    ref_prof: Tensor
    n_reference: int
    n_shift: int
    paper_reference: dict[str, dict[str, float]]


def _profiles(ps: ParameterSaliency, x: Tensor, y: Tensor, batch: int = 50) -> Tensor:
    return torch.cat(
        [ps.profiles(x[i : i + batch], y[i : i + batch]) for i in range(0, len(y), batch)]
    )


def _fit_both(ps: ParameterSaliency, prof: Tensor) -> tuple[ZScoreCalibration, POTCalibration]:
    """Both calibrations from one set of reference profiles (one profile pass)."""
    z, pot = ZScoreCalibration(), POTCalibration(level=0.9)
    for cal in (z, pot):
        cal.begin(ps.layout(), len(prof))
        cal.update(prof)
        cal.finalize()
    return z, pot


def rankings(setup: ShiftSetup, k: int, seed: int) -> dict[str, Tensor | list[Tensor]]:
    """Top-``k`` filters per misclassified image: z-score, POT and a seeded random ranking."""
    gen = torch.Generator().manual_seed(seed)
    p = setup.prof_wrong
    return {
        "z-score": setup.zscore.rank(p, k=k),
        "POT": setup.pot.rank(p, k=k),
        "random": setup.zscore.rank(p, k=k, order="random", generator=gen),
    }


@functools.lru_cache(maxsize=4)
def shift_setup(
    model_name: str, n_ref: int, n_shift: int, n_paper_ref: int, seed: int
) -> ShiftSetup:
    """Train/load ``model_name`` on shapes and calibrate it (cached per process).

    Args:
        model_name: ``"small_cnn"`` or ``"resnet18"`` (``train(model_name, "shapes")``).
        n_ref: In-domain held-out reference images (test split, training domain).
        n_shift: Shifted-domain test images; the misclassified ones are explained.
        n_paper_ref: Shifted-domain *train*-split images for the paper's calibration variant
            (0: skip it).
        seed: Data seed of the rendered images.
    """
    trained = train(model_name, "shapes")
    model = trained.model
    domain = trained.config.domain
    other = next(d for d in DOMAINS if d != domain)
    ps = ParameterSaliency(model)
    ref_x, ref_y, _ = SyntheticShapes(n=n_ref, split="test", domain=domain, seed=seed).tensors()
    ref_prof = _profiles(ps, ref_x, ref_y)
    zscore, pot = _fit_both(ps, ref_prof)
    x, y, _ = SyntheticShapes(n=n_shift, split="test", domain=other, seed=seed).tensors()
    with torch.no_grad():
        pred = torch.cat([model(x[i : i + 200]).argmax(1) for i in range(0, len(y), 200)])
    wrong = (pred != y).nonzero().flatten()
    xw, yw = x[wrong], y[wrong]
    prof = _profiles(ps, xw, yw)
    paper: dict[str, dict[str, float]] = {}
    k = TOP_K[model_name]
    if n_paper_ref and len(wrong):
        sx, sy, _ = SyntheticShapes(n=n_paper_ref, split="train", domain=other, seed=seed).tensors()
        z2, p2 = _fit_both(ps, _profiles(ps, sx, sy))
        paper = {
            "z-score": ps.group_summary(z2.rank(prof, k=k), k=k),
            "POT": ps.group_summary(p2.rank(prof, k=k), k=k),
        }
    return ShiftSetup(model_name, ps, zscore, pot, xw, yw, prof, ref_prof, n_ref, n_shift, paper)


def _models(settings: ClaimSettings) -> list[str]:
    return ["small_cnn"] if settings.size == "test" else ["resnet18", "small_cnn"]


def _setup_for(model_name: str, settings: ClaimSettings) -> ShiftSetup:
    """The cached setup of ``model_name`` at the sizes of ``settings.size``."""
    if model_name == "resnet18":
        n_ref, n_shift = settings.pick(0, 300, 1000), settings.pick(0, 240, 1200)
        n_paper = settings.pick(0, 0, 300)
    else:
        n_ref, n_shift = settings.pick(120, 600, 1200), settings.pick(80, 400, 1200)
        n_paper = settings.pick(0, 300, 600)
    return shift_setup(model_name, n_ref, n_shift, n_paper, settings.seed)


def group_stats(setup: ShiftSetup) -> dict[str, dict[str, float]]:
    """Per layer group: reference mean and CV, median POT shape ``xi`` and shift ratio.

    The shift ratio is the misclassified shifted images' mean profile over the reference mean.
    """
    gof = setup.ps.group_of()
    mean = setup.zscore.mean
    std = setup.zscore.std
    assert mean is not None and std is not None  # fitted
    out: dict[str, dict[str, float]] = {}
    for g in dict.fromkeys(gof):
        idx = torch.tensor([i for i, h in enumerate(gof) if h == g])
        m = mean[idx]
        out[g] = {
            "ref_mean": float(m.mean()),
            "ref_cv": float((std[idx] / m.clamp_min(1e-30)).median()),
            "xi_median": float(setup.pot.xi[idx].median()),
            "shift_over_ref": float(setup.prof_wrong[:, idx].double().mean() / m.mean()),
        }
    return out


def reference_code_rank(pot: POTCalibration, prof: Tensor, k: int) -> list[Tensor]:
    """POT rankings as the reference code orders them: ``argsort`` of the tail probabilities.

    There a value beyond the endpoint of a ``xi < 0`` fit gives NaN, which ``argsort`` puts
    last; our :meth:`POTCalibration.rank` gives it ``P = 0`` and ranks it first. Here such
    filters go after every filter with ``P > 0`` (ties by index).
    """
    sc = pot.score(prof)
    out = []
    for p, e in zip(sc.tail_prob, sc.exceeds):
        idx = e.nonzero().flatten()
        key = torch.where(p[idx] > 0, p[idx], torch.full_like(p[idx], float("inf")))
        out.append(idx[torch.sort(key, stable=True).indices][:k])
    return out


def zero_share(pot: POTCalibration, prof: Tensor, ranks: list[Tensor]) -> float:
    """Percentage of ranked entries whose POT tail probability is exactly 0."""
    p = pot.score(prof).tail_prob
    hits = [int((p[i, r] == 0).sum()) for i, r in enumerate(ranks)]
    return 100.0 * sum(hits) / max(sum(len(r) for r in ranks), 1)


def _fmt_groups(shares: dict[str, float]) -> str:
    return ", ".join(f"{g} {v:.0f}%" for g, v in shares.items())


def _plot_groups(fig: Any, rows: dict[str, dict[str, dict[str, float]]]) -> None:
    for i, (model_name, shares) in enumerate(rows.items()):
        ax = fig.add_subplot(1, len(rows), i + 1)
        groups = list(shares["z-score"])
        pos = torch.arange(len(groups)).numpy()
        for j, method in enumerate(("z-score", "POT")):
            vals = [shares.get(method, {}).get(g, 0.0) for g in groups]
            ax.bar(pos + (j - 0.5) * 0.38, vals, 0.38, label=method)
        ax.set_xticks(pos, groups, rotation=30, fontsize=7)
        ax.set_ylabel("% of top-k filters")
        ax.set_title(f"{model_name}: blobs -> stripes", fontsize=9)
        ax.legend(fontsize=7)


@claim(
    name="pot_vs_zscore_layers",
    paper=PAPER,
    statement=(
        "Under domain shift (ResNet-18 trained on MNIST, evaluated on SVHN) the z-score "
        "ranking puts almost all top filters in the last stage (conv5_x 96 %), while POT "
        "spreads them over all stages (conv5_x 40 %)."
    ),
)
def pot_vs_zscore_layers(settings: ClaimSettings) -> Outcome:
    """Share of each layer group among the top-k salient filters, z-score vs POT.

    Paper: Section 5.2, Table 1 (ResNet-18, MNIST -> SVHN, top-20: z-score conv1/2/3/4/5_x =
    0/0.5/1.0/2.5/96.0 %, POT 7.5/2.3/19.8/31.0/40.0 %; Table 2, ResNet-50 on ImageNet, top-25:
    conv5_x 73.6 % vs 50.8 %). The paper attributes the bias to the z-score's division by a
    standard deviation that shrinks from conv1 to conv5_x.

    Protocol: ``train("resnet18", "shapes")`` (and ``small_cnn`` as a second row; only it at
    size "test") trained on the ``blobs`` background; both calibrations fitted on one profile
    pass over held-out ``blobs`` test images (default: 300 for ResNet-18, 600 for small_cnn);
    the misclassified images among ``stripes`` test images (240 / 400) are ranked; the top-k
    filters (20 for ResNet-18 as in the paper, 10 for small_cnn) are counted per layer group
    (ResNet stages conv1, conv2_x..conv5_x; one group per layer for small_cnn). As a
    diagnostic, both calibrations are also fitted on ``stripes`` train images (the paper's
    text calibrates on the shifted domain), and the per-group reference mean, CV, fitted GPD
    shape and shifted/reference profile ratio are reported.

    Rule (fixed before running): a model row agrees with the paper when z-score's share in the
    last group is >= 50 % and POT's is at least 20 points lower. Holds: every row agrees;
    partly: some row agrees; does not hold: none.

    Result at size="default" (run of 2026-12-07, seed 0): does not hold; neither row agrees.
    ResNet-18 (``train("resnet18", "shapes")``, 32 x 32; 23 of 240 ``stripes`` images
    misclassified), top-20, conv1/conv2_x/conv3_x/conv4_x/conv5_x: z-score 25/11/10/2/52 %,
    POT 7/4/1/2/86 %: z-score's conv5_x share is about half the paper's 96 % and POT
    concentrates *more* in conv5_x, not less. small_cnn (153 of 400 misclassified), top-10,
    features.0/3/7/11: z-score 39/19/20/22 %, POT 12/11/41/37 % (an earlier run with another
    training of small_cnn: 38/21/20/21 and 10/20/33/37 %): z-score favours the *first* layer
    and POT the last two, the opposite of the paper.

    Why (no implementation error: the profiles equal plain autograd, the z-scores torch
    moments, the POT tail probabilities scipy's GPD, see the tests): with in-domain
    calibration the misclassified shifted images' profiles lie far beyond the reference:
    55x (conv5_x) to 258x (conv1) the reference mean on ResNet-18, 10x (features.11) to 26x
    (features.0) on small_cnn, so almost every filter exceeds its POT threshold and both
    scores extrapolate. z ~ ratio / CV then ranks the layers the background-texture shift
    disturbs most; the reference CV has no depth trend (ResNet-18 4.7-5.4, small_cnn
    1.5-1.9), so the division-by-std bias the paper describes does not arise. POT orders the
    far tail by the fitted shape: on ResNet-18 the reference profiles of a model that is
    right on 99.5 % of its domain are extremely heavy-tailed (CV about 5, median GPD shape
    xi 1.12 in conv1 falling to 0.89 in conv5_x, from 30 peaks per filter), and the lightest
    tail wins however large the others' excess is, hence conv5_x. On small_cnn 53 % of POT's
    top-10 entries lie beyond the endpoint of a bounded (xi < 0) fit (P = 0, ordered by
    excess / sigma) and the rest follow the tail shape (median xi 0.27 in features.0, 0.09
    in features.11), which favours the later layers. The reference code's ordering (NaN
    beyond the endpoint ranked last) gives the same picture (ResNet-18 POT 7/4/1/2/85 %).
    Calibrating on the shifted domain, as the paper's text does (SVHN train; run for
    small_cnn at this size, for both models at size "full"), gives on small_cnn z-score
    10/10/23/58 % and POT 9/13/31/47 % (earlier run: 10/10/23/57 and 8/14/30/48 %): the
    paper's direction with an 11-point gap, below the rule's 20. The benchmark also differs
    from the paper's: its shift is a background texture (an early-layer feature), not
    MNIST->SVHN, and 23 misclassified images are few.
    """
    rows: dict[str, dict[str, dict[str, float]]] = {}
    numbers: dict[str, float | list[float]] = {}
    agree: dict[str, bool] = {}
    stats: dict[str, dict[str, dict[str, float]]] = {}
    n_wrong: dict[str, int] = {}
    for model_name in _models(settings):
        setup = _setup_for(model_name, settings)
        k = TOP_K[model_name]
        r = rankings(setup, k, settings.seed)
        shares = {m: setup.ps.group_summary(r[m], k=k) for m in ("z-score", "POT")}
        rows[model_name] = shares
        stats[model_name] = group_stats(setup)
        last = list(shares["z-score"])[-1]
        z_last, p_last = shares["z-score"][last], shares["POT"][last]
        agree[model_name] = z_last >= Z_LAST_MIN and p_last <= z_last - POT_GAP_MIN
        n_wrong[model_name] = len(setup.y_wrong)
        numbers[f"{model_name}_n_misclassified"] = float(len(setup.y_wrong))
        numbers[f"{model_name}_zscore_shares"] = list(shares["z-score"].values())
        numbers[f"{model_name}_pot_shares"] = list(shares["POT"].values())
        numbers[f"{model_name}_zscore_last"] = z_last
        numbers[f"{model_name}_pot_last"] = p_last
        for key in ("ref_mean", "ref_cv", "xi_median", "shift_over_ref"):
            numbers[f"{model_name}_{key}"] = [s[key] for s in stats[model_name].values()]
        pot_ranks = r["POT"]
        assert isinstance(pot_ranks, list)  # POT rankings have variable lengths
        numbers[f"{model_name}_pot_zero_share"] = zero_share(setup.pot, setup.prof_wrong, pot_ranks)
        ref_order = reference_code_rank(setup.pot, setup.prof_wrong, k)
        numbers[f"{model_name}_pot_nan_last_shares"] = list(
            setup.ps.group_summary(ref_order, k=k).values()
        )
        for m, sh in setup.paper_reference.items():
            tag = "zscore" if m == "z-score" else "pot"
            numbers[f"{model_name}_paper_reference_{tag}_shares"] = list(sh.values())
    figure = claim_figure(
        settings, "pot_vs_zscore_layers.png", lambda fig: _plot_groups(fig, rows),
        (5 * len(rows), 3.2),
    )  # fmt: skip
    ours = "; ".join(
        f"{m} (top-{TOP_K[m]}, {n_wrong[m]} misclassified): "
        f"z-score {_fmt_groups(s['z-score'])} | POT {_fmt_groups(s['POT'])}"
        for m, s in rows.items()
    )
    verdict = verdict_from(all(agree.values()), any(agree.values()))
    return Outcome(
        paper_value=(
            "Table 1 (ResNet-18, MNIST->SVHN, top-20): z-score conv5_x 96.0 %, POT conv5_x "
            "40.0 % (conv1 7.5, conv2_x 2.3, conv3_x 19.8, conv4_x 31.0)"
        ),
        ours=ours,
        verdict=verdict,
        rule=(
            f"per model: z-score's last-group share >= {Z_LAST_MIN:.0f} % and POT's last-group "
            f"share <= z-score's - {POT_GAP_MIN:.0f} points; holds if every model row agrees, "
            "partly if some does"
        ),
        why="" if verdict == "holds" else _layers_why(stats, agree, numbers),
        numbers=numbers,
        figure=figure,
    )


def _layers_why(
    stats: dict[str, dict[str, dict[str, float]]],
    agree: dict[str, bool],
    numbers: dict[str, float | list[float]],
) -> str:
    parts = []
    for m, st in stats.items():
        if agree[m]:
            continue
        groups = list(st)
        ratio = ", ".join(f"{g} {st[g]['shift_over_ref']:.1f}x" for g in groups)
        xi = ", ".join(f"{g} {st[g]['xi_median']:.2f}" for g in groups)
        cv = ", ".join(f"{g} {st[g]['ref_cv']:.2f}" for g in groups)
        zero = numbers[f"{m}_pot_zero_share"]
        assert isinstance(zero, float)  # a scalar entry
        parts.append(
            f"{m}: the misclassified shifted images' profiles lie far beyond the in-domain "
            f"reference ({ratio} the reference mean), so nearly every filter exceeds its "
            "threshold and both scores extrapolate. z ~ ratio / CV ranks the groups the shift "
            f"disturbs most (reference CV {cv}: no depth trend, so no division-by-std bias). "
            f"For POT, {zero:.0f} % of the top entries lie beyond the endpoint of a bounded "
            "(xi < 0) GPD fit (P = 0, ordered among themselves by excess / sigma), and the "
            f"other entries are ordered by the fitted tail shape (median xi {xi}): light or "
            "bounded tails win however large the others' excess is"
        )
    parts.append(
        "The benchmark's shift is a background-texture change, which disturbs the first "
        "layers most, unlike MNIST->SVHN where the paper's model lacks usable features at every "
        "depth; and the paper calibrates on the shifted domain itself (SVHN train), which "
        "removes the far extrapolation (numbers *_paper_reference_*: same direction as the "
        "paper, z-score more concentrated in the last group than POT, but a smaller gap). The "
        "reference code's ordering (beyond-endpoint NaN ranked last, *_pot_nan_last_shares) "
        "does not change the picture"
    )
    return "; ".join(parts)


# ---------------------------------------------------------------------------- filter editing
def _end(c: EditCurves) -> dict[str, float]:
    """Values at the last column some example reaches, in percent."""
    last = int((c.counts > 0).nonzero().max())
    return {
        "k": float(last),
        "corrected": 100.0 * float(c.corrected[last]),
        "wrong_drop": -100.0 * float(c.wrong_prob_delta[last]),
        "true_gain": 100.0 * float(c.true_prob_delta[last]),
    }


def _weights(setup: ShiftSetup) -> list[Tensor]:
    """The weight tensor of every selected layer, in flat order."""
    return [setup.ps.model.get_parameter(f"{n}.weight") for n in setup.ps.filters.layer_names]


def _gradient_mass(setup: ShiftSetup, ranks: Tensor | list[Tensor], k: int) -> float:
    """Mean over images of the sum over the top-k filters of ``profile * n_weights``.

    That is the L1 norm of the loss gradient on the edited weights, which sets the size of a
    one-step update.
    """
    table = setup.ps.filters
    sizes = torch.cat(
        [
            torch.full((s.stop - s.start,), float(w[0].numel()))
            for s, w in zip(table.layer_slices(), _weights(setup))
        ]
    )
    mass = setup.prof_wrong.double() * sizes.double()
    vals = [float(mass[i, r[:k]].sum()) for i, r in enumerate(ranks)]
    return sum(vals) / max(len(vals), 1)


def _edit_row(setup: ShiftSetup, settings: ClaimSettings, n_max: int) -> dict[str, dict]:
    """Pruning and fine-tuning end points of the three rankings for one model."""
    n = min(n_max, len(setup.y_wrong))
    x, y = setup.x_wrong[:n], setup.y_wrong[:n]
    sub = ShiftSetup(
        setup.model_name, setup.ps, setup.zscore, setup.pot, x, y,
        setup.prof_wrong[:n], setup.ref_prof, setup.n_reference, setup.n_shift, {},
    )  # fmt: skip
    model = setup.ps.model
    out: dict[str, dict] = {}
    k_prune, k_tune = EDIT_K[setup.model_name]
    for name, r in rankings(sub, k_prune, settings.seed).items():
        pr = pruning_curves(model, setup.ps.filters, x, y, r, max_k=k_prune)
        rf = [t[:k_tune] for t in r]
        ft = finetuning_curves(model, setup.ps.filters, x, y, rf, max_k=k_tune, lr=LR)
        out[name] = {
            "pruning": _end(pr),
            "finetuning": _end(ft),
            "grad_mass": _gradient_mass(sub, rf, k_tune),
            "curves": (pr.corrected.tolist(), ft.corrected.tolist()),
        }
    return out


def _plot_edits(fig: Any, rows: dict[str, dict[str, dict]]) -> None:
    for i, (model_name, res) in enumerate(rows.items()):
        for j, proto in enumerate(("pruning", "one-step fine-tuning")):
            ax = fig.add_subplot(len(rows), 2, 2 * i + j + 1)
            for name, r in res.items():
                ax.plot([100 * v for v in r["curves"][j]], label=name)
            ax.set_xlabel("filters edited")
            ax.set_ylabel("% corrected")
            ax.set_title(f"{model_name}: {proto}", fontsize=9)
            ax.legend(fontsize=7)


@claim(
    name="filter_editing",
    paper=PAPER,
    statement=(
        "Pruning or one-step fine-tuning the top salient filters corrects more misclassified "
        "images than random filters; under domain shift POT finds the harmful filters better "
        "than the z-score baseline (fine-tuning lowers the wrong-class confidence by up to 6 % "
        "vs 2 %)."
    ),
)
def filter_editing(settings: ClaimSettings) -> Outcome:
    """Pruning / one-step fine-tuning of top filters (POT, z-score) against random filters.

    Paper: Section 5.1.1, Figure 3 (ResNet-50, ImageNet: pruning 50 POT/z-score filters lowers
    the wrong-class confidence by ~25 % and corrects ~12 %, random much less; POT and z-score
    "almost the same"); Section 5.1.2, Figure 4 (one-step fine-tuning, lr 1e-3, 25 filters
    corrects about half, both rankings alike); Section 5.2, Figure 5 (ResNet-18 MNIST -> SVHN,
    the domain-shift setting used here: POT better than the baseline, wrong-class confidence
    -6 % vs -2 %).

    Protocol: the setup of ``pot_vs_zscore_layers`` (in-domain calibration, misclassified
    ``stripes`` images; at most 40 of them for ResNet-18 and 150 for small_cnn at size
    "default"); per image, prune the top 1..K filters of the POT, z-score and a seeded random
    ranking cumulatively, and fine-tune the top 1..K' once with lr 1e-3
    (``captum_ext.evaluation``), K = 50, K' = 25 for ResNet-18 (4,800 filters; the paper's
    values) and K = K' = 10 for small_cnn (176 filters: pruning 50 would remove 28 % of the
    network, and in a first run random pruning then corrected more than either ranking);
    report the corrected fraction and the wrong-class probability drop (percentage points) at
    the last k reached.

    Rule (fixed before running): (a) for every model, both POT and z-score correct at least 5
    points more than random, after pruning and after fine-tuning; (b) for every model, POT's
    wrong-class probability drop after fine-tuning >= z-score's (Figure 5). Holds: (a) and
    (b); partly: (a) only; does not hold: not (a).

    Result at size="default" (run of 2026-12-07, seed 0): does not hold. Corrected after
    pruning / fine-tuning: ResNet-18 (23 misclassified ``stripes`` images, 50 / 25 filters)
    z-score 57 / 43 %, POT 4 / 17 %, random 9 / 13 %; small_cnn (150 images, 10 / 10
    filters) z-score 44 / 68 %, POT 51 / 60 %, random 17 / 24 %. Wrong-class probability drop
    after fine-tuning: ResNet-18 z-score 54.0, POT 13.0, random 2.4 points; small_cnn 75.7,
    69.0, 22.4. z-score beats random everywhere; POT beats random on small_cnn but not on
    ResNet-18 (pruning its top 50 corrects fewer images than random), and z-score beats POT
    on both models, against Figure 5. (An earlier run with another training of small_cnn:
    z-score 52 / 69 %, POT 39 / 54 %, random 21 / 23 %; drops 75.9 / 63.9 / 22.1.) Why: a
    one-step update lowers the loss by about ``lr * |grad|^2`` on the edited weights, so what
    matters is the gradient mass of the chosen filters: the L1 gradient of the top-25 on
    ResNet-18 is 6,050 (z-score), 1,290 (POT), 1,370 (random), of the top-10 on small_cnn
    3,410 / 3,080 / 1,290. Under in-domain calibration z-score picks the large-gradient
    filters of the layers the shift disturbs, while POT's far-tail ranking follows the fitted
    tail shape (on ResNet-18 to conv5_x, whose filters carry no more gradient than random
    ones; see ``pot_vs_zscore_layers``).
    """
    rows: dict[str, dict[str, dict]] = {}
    numbers: dict[str, float | list[float]] = {}
    beats, order = [], []
    for model_name in _models(settings):
        setup = _setup_for(model_name, settings)
        n_max = (
            settings.pick(0, 40, 400) if model_name == "resnet18" else settings.pick(10, 150, 600)
        )
        res = _edit_row(setup, settings, n_max)
        rows[model_name] = res
        rnd = res["random"]
        for proto in ("pruning", "finetuning"):
            for m in ("POT", "z-score"):
                beats.append(
                    res[m][proto]["corrected"] >= rnd[proto]["corrected"] + BEAT_RANDOM_MIN
                )
        order.append(
            res["POT"]["finetuning"]["wrong_drop"] >= res["z-score"]["finetuning"]["wrong_drop"]
        )
        numbers[f"{model_name}_n_examples"] = float(min(n_max, len(setup.y_wrong)))
        for m, r in res.items():
            tag = {"POT": "pot", "z-score": "zscore", "random": "random"}[m]
            for proto in ("pruning", "finetuning"):
                for key, v in r[proto].items():
                    numbers[f"{model_name}_{tag}_{proto}_{key}"] = v
            numbers[f"{model_name}_{tag}_grad_mass"] = r["grad_mass"]
    figure = claim_figure(
        settings, "filter_editing.png", lambda fig: _plot_edits(fig, rows),
        (8, 2.8 * len(rows)), layout="constrained",
    )  # fmt: skip
    ours = "; ".join(
        f"{mn}: corrected after pruning / fine-tuning: "
        + ", ".join(
            f"{m} {r['pruning']['corrected']:.0f}% / {r['finetuning']['corrected']:.0f}%"
            for m, r in res.items()
        )
        + "; wrong-class drop after fine-tuning: "
        + ", ".join(f"{m} {r['finetuning']['wrong_drop']:.1f} pts" for m, r in res.items())
        for mn, res in rows.items()
    )
    verdict = verdict_from(all(beats) and all(order), all(beats))
    return Outcome(
        paper_value=(
            "Fig. 3-4 (ResNet-50, ImageNet): POT ~ z-score >> random (pruning 50: -25 % wrong-"
            "class confidence, 12 % corrected; fine-tuning 25: ~50 % corrected); Fig. 5 "
            "(ResNet-18, MNIST->SVHN): POT -6 % vs z-score -2 % wrong-class confidence"
        ),
        ours=ours,
        verdict=verdict,
        rule=(
            f"(a) POT and z-score each correct >= {BEAT_RANDOM_MIN:.0f} points more than random "
            "after pruning 50 / fine-tuning 25 filters (small_cnn: 10 / 10), every model; (b) "
            "POT's wrong-class drop after fine-tuning >= z-score's, every model; holds: (a) and "
            "(b), partly: (a)"
        ),
        why="" if verdict == "holds" else _edit_why(rows, all(beats)),
        numbers=numbers,
        figure=figure,
    )


def _edit_why(rows: dict[str, dict[str, dict]], beats: bool) -> str:
    parts = []
    if not beats:
        parts.append("some salient ranking does not beat random by 5 points (see numbers)")
    for mn, res in rows.items():
        gm = ", ".join(f"{m} {r['grad_mass']:.3g}" for m, r in res.items())
        parts.append(
            f"{mn}: a one-step update changes the loss by about lr * |grad|^2 on the edited "
            f"weights, and the L1 gradient mass of the top-{EDIT_K[mn][1]} filters is {gm}: "
            "z-score picks large-gradient filters (the layers the shift disturbs), while POT's "
            "far-tail ranking favours light-tailed layers whose gradients are small"
        )
    return "; ".join(parts)
