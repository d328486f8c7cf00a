"""evaluate_attributions: the report's per-example metrics equal the individual metric calls."""

from __future__ import annotations

import torch
from captum.attr import Saliency
from captum.metrics import infidelity

from captum_ext.metrics import (
    deletion,
    energy_pointing_game,
    gaussian_perturbation,
    insertion,
    pointing_game,
)
from captum_ext.metrics.summary import METRIC_NAMES, evaluate_attributions


def test_summary_equals_individual_metrics(shapes_model, shapes_batch):
    model = shapes_model.model.eval()
    images, labels, masks = (t[:4] for t in shapes_batch)
    sal = Saliency(model)
    attr = sal.attribute(images, target=labels)
    scores = evaluate_attributions(
        model, images, attr, labels, masks,
        explain=lambda x, t: sal.attribute(x, target=t),
        generator=torch.Generator().manual_seed(0), n_sensitivity_samples=3, n_steps=32,
    )  # fmt: skip
    assert list(scores) == list(METRIC_NAMES)
    assert all(v.shape == (4,) and torch.isfinite(v).all() for v in scores.values())
    torch.testing.assert_close(scores["deletion"], deletion(model, images, attr, labels,
                                                             n_steps=32).auc)  # fmt: skip
    torch.testing.assert_close(scores["insertion"], insertion(model, images, attr, labels,
                                                               n_steps=32).auc)  # fmt: skip
    pf = gaussian_perturbation(0.2, noisy_baseline=True, generator=torch.Generator().manual_seed(0))
    expected = infidelity(model, pf, images, attr, target=labels, normalize=True)
    torch.testing.assert_close(scores["infidelity"], expected)
    torch.testing.assert_close(scores["pointing_game"], pointing_game(attr, masks, ties="mean"))
    torch.testing.assert_close(scores["energy"], energy_pointing_game(attr, masks))
    assert (scores["max_sensitivity"] > 0).all()


def test_max_sensitivity_of_a_constant_gradient_is_zero():
    w = torch.randn(2, 3, 8, 8)

    def model(x):
        return (x.unsqueeze(1) * w).flatten(2).sum(2)

    x = torch.rand(3, 3, 8, 8)
    sal = Saliency(model)
    attr = sal.attribute(x, target=1, abs=False)
    scores = evaluate_attributions(
        model, x, attr, 1, explain=lambda inp, t: sal.attribute(inp, target=t, abs=False),
        n_steps=16,
    )  # fmt: skip
    assert set(scores) == {"deletion", "insertion", "infidelity", "max_sensitivity"}
    torch.testing.assert_close(scores["max_sensitivity"], torch.zeros(3))
    # the exact gradient of a linear model is perfectly faithful
    assert scores["infidelity"].abs().max() < 1e-6
