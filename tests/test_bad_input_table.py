# ruff: noqa: E501  (one row per line: the table reads as a table)
"""One table of (entry point, bad input) cases: each must raise ValueError or TypeError, before
any heavy work, with a message that names the offending argument (issue 15, items 13-14).

Each row is ``(id, call, error type, argument name expected in the message)``. The rows cover
the classes of bad input the review found: empty batches, NaN inputs, wrong types for
structured knobs (grid, generator, sparsity_range), non-finite hyper-parameters that used to
return zeros, impossible targets (negative and too large), and NaN metric parameters.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import pytest
import torch
from captum.attr import Saliency
from small_nets import bn_dropout_net
from test_captum_contract import REGISTRY

from captum_ext.attr import CAFO, CASO, LEG, LEGTV, ParameterSaliency, RelEx
from captum_ext.metrics import (
    blur,
    center_of_mass,
    deletion,
    energy_pointing_game,
    insertion,
    model_randomization,
    pointing_game,
    preservation,
    saliency_stability,
)

M = bn_dropout_net()
X = torch.rand((2, 2, 6, 6), generator=torch.Generator().manual_seed(0))
Y = torch.tensor([0, 1])
NAN = X.clone()
NAN[1, 0, 2, 2] = float("nan")
MASK = torch.zeros(2, 6, 6, dtype=torch.bool)
MASK[:, 2:4, 2:4] = True
#: a signed map whose positive and negative mass cancel (centre far outside the image)
CANCEL = torch.zeros(1, 6, 6)
CANCEL[0, 0, 0], CANCEL[0, 5, 5] = 1.0, -1.0 + 1e-6
LEG_KW: dict[str, Any] = {"n_samples": 16, "grid": (2, 2)}

Row = tuple[str, Callable[[], Any], type, str]
ROWS: list[Row] = []


def _rows(entry: str, cases: list[tuple[str, Callable[[], Any], type, str]]) -> None:
    ROWS.extend((f"{entry}-{case}", call, err, name) for case, call, err, name in cases)


for cls in (LEG, LEGTV):
    _rows(
        cls.__name__,
        [
            ("empty", lambda c=cls: c(M).attribute(X[:0], target=Y[:0], **LEG_KW), ValueError, "inputs"),
            ("nan", lambda c=cls: c(M).attribute(NAN, target=Y, **LEG_KW), ValueError, "inputs"),
            ("int-input", lambda c=cls: c(M).attribute((X * 9).long(), target=Y), TypeError, "inputs"),
            ("grid-int", lambda c=cls: c(M).attribute(X, target=Y, grid=5), TypeError, "grid"),
            ("grid-zero", lambda c=cls: c(M).attribute(X, target=Y, grid=(0, 2)), ValueError, "grid"),
            ("generator-str", lambda c=cls: c(M).attribute(X, target=Y, generator="seed", **LEG_KW), TypeError, "generator"),
            ("sigma-nan", lambda c=cls: c(M).attribute(X, target=Y, sigma=float("nan")), ValueError, "sigma"),
            ("sigma-neg", lambda c=cls: c(M).attribute(X, target=Y, sigma=-0.1), ValueError, "sigma"),
            ("n_samples-float", lambda c=cls: c(M).attribute(X, target=Y, n_samples=2.5), ValueError, "n_samples"),
            ("target-neg", lambda c=cls: c(M).attribute(X, target=-1, **LEG_KW), ValueError, "target"),
            ("target-big", lambda c=cls: c(M).attribute(X, target=3, **LEG_KW), ValueError, "target"),
            ("sampler-name", lambda c=cls: c(M).attribute(X, target=Y, sampler="halton", **LEG_KW), ValueError, "sampler"),
            ("n_samples-pairs", lambda c=cls: c(M).attribute(X, target=Y, n_samples=10, grid=(2, 3)), ValueError, "n_samples"),
        ],
    )  # fmt: skip
_rows(
    "LEGTV",
    [
        ("K_L-nan", lambda: LEGTV(M).attribute(X, target=Y, K_L=float("nan")), ValueError, "K_L"),
        ("L-inf", lambda: LEGTV(M).attribute(X, target=Y, L=float("inf")), ValueError, "L"),
    ],
)  # fmt: skip
for cls in (CAFO, CASO):
    _rows(
        cls.__name__,
        [
            ("empty", lambda c=cls: c(M).attribute(X[:0], target=Y[:0]), ValueError, "inputs"),
            ("nan", lambda c=cls: c(M).attribute(NAN, target=Y), ValueError, "inputs"),
            ("lambda2-inf", lambda c=cls: c(M).attribute(X, target=Y, lambda2=float("inf")), ValueError, "lambda2"),
            ("c1-inf", lambda c=cls: c(M).attribute(X, target=Y, c1=float("inf")), ValueError, "c1"),
            ("c1-nan", lambda c=cls: c(M).attribute(X, target=Y, c1=float("nan")), ValueError, "c1"),
            ("sparsity-short", lambda c=cls: c(M).attribute(X, target=Y, sparsity_range=(0.5,)), ValueError, "sparsity_range"),
            ("sparsity-str", lambda c=cls: c(M).attribute(X, target=Y, sparsity_range="0.5"), ValueError, "sparsity_range"),
            ("loss-unknown", lambda c=cls: c(M, loss="hinge"), ValueError, "loss"),
            ("loss-list", lambda c=cls: c(M, loss=[0]), ValueError, "loss"),
            ("lambda1-neg", lambda c=cls: c(M).attribute(X, target=Y, lambda1=-1.0), ValueError, "lambda1"),
            ("lambda1-str", lambda c=cls: c(M).attribute(X, target=Y, lambda1="big"), ValueError, "lambda1"),
            ("abs-str", lambda c=cls: c(M).attribute(X, target=Y, abs="yes"), TypeError, "abs"),
            ("target-neg", lambda c=cls: c(M).attribute(X, target=-1), ValueError, "target"),
            ("target-big", lambda c=cls: c(M).attribute(X, target=[0, 3]), ValueError, "target"),
            ("logits-3d", lambda c=cls: c(lambda a: M(a).unsqueeze(-1)).attribute(X, target=Y), ValueError, "forward_func"),
        ],
    )  # fmt: skip
_rows(
    "CASO",
    [
        ("generator-str", lambda: CASO(M).attribute(X, target=Y, generator="seed"), TypeError, "generator"),
        ("n_iter-zero", lambda: CASO(M).attribute(X, target=Y, n_iter=0), ValueError, "n_iter"),
    ],
)  # fmt: skip
_rows(
    "RelEx",
    [
        ("empty", lambda: RelEx(M).attribute(X[:0], target=Y[:0]), ValueError, "inputs"),
        ("nan", lambda: RelEx(M).attribute(NAN, target=Y, n_iter=1), ValueError, "inputs"),
        ("generator-str", lambda: RelEx(M).attribute(X, target=Y, generator="seed"), TypeError, "generator"),
        ("n_iter-zero", lambda: RelEx(M).attribute(X, target=Y, n_iter=0), ValueError, "n_iter"),
        ("lr-nan", lambda: RelEx(M).attribute(X, target=Y, lr=float("nan")), ValueError, "lr"),
        ("momentum-one", lambda: RelEx(M).attribute(X, target=Y, momentum=1.0), ValueError, "momentum"),
        ("lambda1-neg", lambda: RelEx(M).attribute(X, target=Y, lambda1=-1.0), ValueError, "lambda1"),
        ("baselines-str", lambda: RelEx(M).attribute(X, target=Y, baselines="median"), ValueError, "baselines"),
        ("init-name", lambda: RelEx(M).attribute(X, target=Y, init="zeros"), ValueError, "init"),
        ("antithetic-str", lambda: RelEx(M).attribute(X, target=Y, antithetic="yes"), TypeError, "antithetic"),
        ("baselines-nan", lambda: RelEx(M).attribute(X, target=Y, baselines=float("nan")), ValueError, "baselines"),
        ("baselines-shape", lambda: RelEx(M).attribute(X, target=Y, baselines=X[:, :1, :3]), ValueError, "baselines"),
        ("temperature-zero", lambda: RelEx(M).attribute(X, target=Y, temperature=0.0), ValueError, "temperature"),
        ("temperature-str", lambda: RelEx(M).attribute(X, target=Y, temperature="hot"), ValueError, "temperature"),
        ("target-neg", lambda: RelEx(M).attribute(X, target=-1, n_iter=1), ValueError, "target"),
        ("target-big", lambda: RelEx(M).attribute(X, target=3, n_iter=1), ValueError, "target"),
    ],
)  # fmt: skip
_rows(
    "ParameterSaliency",
    [
        ("empty", lambda: ParameterSaliency(M).attribute(X[:0], target=Y[:0]), ValueError, "inputs"),
        ("target-neg", lambda: ParameterSaliency(M).attribute(X, target=-1), ValueError, "target"),
        ("target-big", lambda: ParameterSaliency(M).attribute(X, target=[0, 3]), ValueError, "target"),
        ("loss_fn-list", lambda: ParameterSaliency(M, M[0], loss_fn=[0]), TypeError, "loss_fn"),
        ("device_ids-str", lambda: ParameterSaliency(M, M[0], "0"), TypeError, "device_ids"),
        ("layers-str", lambda: ParameterSaliency(M, "0"), TypeError, "layers"),
        ("method-unknown", lambda: ParameterSaliency(M).attribute(X, target=Y, method="x"), ValueError, "method"),
        ("input_saliency-noise_iters-zero", lambda: ParameterSaliency(M).input_saliency(X, Y, k=2, calibrated=False, noise_iters=0), ValueError, "noise_iters"),
        ("input_saliency-boost-nan", lambda: ParameterSaliency(M).input_saliency(X, Y, k=2, calibrated=False, boost=float("nan")), ValueError, "boost"),
        ("input_saliency-k-zero", lambda: ParameterSaliency(M).input_saliency(X, Y, k=0, calibrated=False), ValueError, "k must"),
        ("input_saliency-noise_percent", lambda: ParameterSaliency(M).input_saliency(X, Y, k=2, calibrated=False, noise_percent=2.0), ValueError, "noise_percent"),
        ("input_saliency-nan", lambda: ParameterSaliency(M).input_saliency(NAN, Y, k=2, calibrated=False), ValueError, "inputs"),
    ],
)  # fmt: skip
for fn in (deletion, insertion, preservation):
    _rows(
        fn.__name__,
        [
            ("empty", lambda f=fn: f(M, X[:0], X[:0], Y[:0]), ValueError, "inputs"),
            ("nan", lambda f=fn: f(M, NAN, X, Y), ValueError, "inputs"),
            ("target-neg", lambda f=fn: f(M, X, X, -1, n_steps=4), ValueError, "target"),
            ("target-big", lambda f=fn: f(M, X, X, [0, 3], n_steps=4), ValueError, "target"),
            ("attr-shape", lambda f=fn: f(M, X, X[:, :, :3], Y), ValueError, "attributions"),
            ("n_steps-zero", lambda f=fn: f(M, X, X, Y, n_steps=0), ValueError, "n_steps"),
            ("pixels-too-many", lambda f=fn: f(M, X, X, Y, pixels_per_step=37), ValueError, "pixels_per_step"),
        ],
    )  # fmt: skip
_rows(
    "localisation",
    [
        ("pg-tolerance-nan", lambda: pointing_game(X, MASK, tolerance=float("nan")), ValueError, "tolerance"),
        ("pg-tolerance-neg", lambda: pointing_game(X, MASK, tolerance=-1.0), ValueError, "tolerance"),
        ("pg-empty", lambda: pointing_game(X[:0], MASK[:0]), ValueError, "attributions"),
        ("pg-mask-shape", lambda: pointing_game(X, MASK[:, :3]), ValueError, "masks"),
        ("energy-mask-values", lambda: energy_pointing_game(X, MASK.float() * 2), ValueError, "masks"),
        ("com-cancelling", lambda: center_of_mass(CANCEL, reduction="sum"), ValueError, "attributions"),
        ("blur-int-image", lambda: blur((X * 255).to(torch.uint8)), TypeError, "inputs"),
        ("blur-wrong-rank", lambda: blur(X[0]), ValueError, "inputs"),
    ],
)  # fmt: skip
_rows(
    "saliency_stability",
    [
        ("nan", lambda: saliency_stability(Saliency(M), M, NAN), ValueError, "inputs"),
        ("eps-nan", lambda: saliency_stability(Saliency(M), M, X, epsilons=(float("nan"),)), ValueError, "epsilons"),
        ("eps-inf", lambda: saliency_stability(Saliency(M), M, X, epsilons=(float("inf"),)), ValueError, "epsilons"),
        ("bounds-inverted", lambda: saliency_stability(Saliency(M), M, X, bounds=(1.0, 0.0)), ValueError, "bounds"),
        ("attack-unknown", lambda: saliency_stability(Saliency(M), M, X, attack="cw"), ValueError, "attack"),
    ],
)  # fmt: skip
_rows(
    "model_randomization",
    [
        ("nan", lambda: model_randomization(M, Saliency, NAN), ValueError, "inputs"),
        ("mode-unknown", lambda: model_randomization(M, Saliency, X, mode="x"), ValueError, "mode"),
        ("layers-unknown", lambda: model_randomization(M, Saliency, X, layers=["nope"]), ValueError, "layers"),
    ],
)  # fmt: skip

# Every registered attribution class (tests/test_captum_contract.py) x the generic bad inputs.
INF = X.clone()
INF[0, 1, 3, 3] = float("inf")
GENERIC: list[tuple[str, dict, type, str]] = [
    ("inf", {"inputs": INF}, ValueError, "inputs"),
    ("empty", {"inputs": X[:0], "target": Y[:0]}, ValueError, "inputs"),
    ("list-inputs", {"inputs": [X]}, TypeError, "inputs"),
    ("numpy-inputs", {"inputs": X.numpy()}, TypeError, "inputs"),
    ("tuple-batch-mismatch", {"inputs": (X, X[:1])}, ValueError, "inputs"),
    ("target-short-list", {"target": [0]}, ValueError, "target"),
    ("target-float-tensor", {"target": torch.tensor([0.0, 1.0])}, ValueError, "target"),
    ("target-2d-tensor", {"target": torch.zeros(2, 1, dtype=torch.long)}, ValueError, "target"),
    ("target-str", {"target": "1"}, ValueError, "target"),
    ("target-negative-tensor", {"target": torch.tensor([0, -1])}, ValueError, "target"),
    ("target-out-of-range-list", {"target": [0, 7]}, ValueError, "target"),
]


def _generic_call(entry_name: str, args: dict) -> Callable[[], Any]:
    def call() -> Any:
        entry = REGISTRY[entry_name]
        kwargs = {**entry.kwargs, "target": args.get("target", Y)}
        return entry.build(M).attribute(args.get("inputs", X), **kwargs)

    return call


for entry_name in sorted(REGISTRY):
    _rows(
        f"registry-{entry_name}",
        [(case, _generic_call(entry_name, args), err, arg) for case, args, err, arg in GENERIC],
    )


@pytest.mark.parametrize("call, error, name", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_input_gives_a_clear_error_naming_the_argument(
    call: Callable[[], Any], error: type, name: str
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error) as info:
            call()
    assert name in str(info.value), f"message does not name {name!r}: {info.value}"


def test_the_table_is_large_and_its_rows_are_distinct() -> None:
    ids = [r[0] for r in ROWS]
    assert len(ids) == len(set(ids)) and len(ids) >= 100 + len(REGISTRY) * len(GENERIC)
