"""Batched pruning / one-step fine-tuning curves equal a naive copy-edit-forward loop."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from captum_ext.attr._utils.filters import FilterTable
from captum_ext.evaluation import finetuning_curves, pruning_curves


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),  # with bias: pruning keeps it
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 5, 3, stride=2, groups=1, bias=False),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 4),
    ).eval()


def _naive(model, table, x, y, ranking, k_max, lr):
    with torch.no_grad():
        p0 = model(x).softmax(1).double()
    wrong = int(p0.argmax())
    rows = []
    if lr is not None:
        m = copy.deepcopy(model)
        loss = nn.functional.cross_entropy(m(x), y)
        mods = dict(m.named_modules())
        grads = torch.autograd.grad(loss, [mods[n].weight for n in table.layer_names])
    for k in range(k_max + 1):
        m = copy.deepcopy(model)
        layers = [dict(m.named_modules())[n] for n in table.layer_names]
        with torch.no_grad():
            for f in ranking[:k].tolist():
                mod, _, _, idx, _ = table.lookup(f)
                li = table.layer_names.index(mod)
                if lr is None:
                    layers[li].weight[idx] = 0
                else:
                    layers[li].weight[idx] -= lr * grads[li][idx]
            p = m(x).softmax(1).double()
        rows.append([p[0, wrong] - p0[0, wrong], p[0, y] - p0[0, y], float(p.argmax() == y)])
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize(("lr", "per_batch"), [(None, 1), (None, 2), (0.5, 8), (0.5, 2)])
def test_batched_curves_equal_naive_loop(lr, per_batch) -> None:
    model = _model()
    table = FilterTable(model, [model[0], model[3], model[7]])
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(3, 3, 8, 8, generator=g), torch.tensor([0, 1, 3])
    ranks = [torch.randperm(15, generator=g) for _ in range(3)]
    ranks[2] = ranks[2][:4]  # shorter ranking: stops at k = 4
    if lr is None:
        curves = pruning_curves(model, table, x, y, ranks, max_k=6, examples_per_batch=per_batch)
    else:
        curves = finetuning_curves(
            model, table, x, y, ranks, max_k=6, lr=lr, examples_per_batch=per_batch
        )
    assert curves.counts.tolist() == [3, 3, 3, 3, 3, 2, 2]
    for i in range(3):
        k_i = min(6, len(ranks[i]))
        ref = _naive(model, table, x[i : i + 1], y[i : i + 1], ranks[i], k_i, lr)
        torch.testing.assert_close(curves.per_example[i, : k_i + 1], ref, rtol=1e-5, atol=1e-7)
    mean_last = curves.per_example[:2, 6].mean(0)
    torch.testing.assert_close(curves.wrong_prob_delta[6], mean_last[0])


def test_model_bit_identical_even_when_forward_raises() -> None:
    model = _model()
    model.train()
    table = FilterTable(model, [model[0], model[3]])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([0, 1])
    ranks = torch.arange(11).repeat(2, 1)
    finetuning_curves(model, table, x, y, ranks, max_k=5, lr=1.0)

    def boom(*_):
        raise RuntimeError("boom")

    h = model[5].register_forward_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        pruning_curves(model, table, x, y, ranks, max_k=5)
    h.remove()
    assert all(not m._forward_hooks for m in model.modules())
    assert [m.training for m in model.modules()] == flags
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_bad_arguments() -> None:
    model = _model()
    table = FilterTable(model, [model[0]])
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="one row per example"):
        pruning_curves(model, table, x, torch.tensor([0, 1]), [torch.arange(3)])
    with pytest.raises(ValueError, match="lr"):
        finetuning_curves(model, table, x, torch.tensor([0, 1]), torch.zeros(2, 3).long(), lr=0)


def test_compare_calibrations_matches_direct_calls() -> None:
    from captum_ext.attr import ParameterSaliency
    from captum_ext.calibration import ZScoreCalibration
    from captum_ext.evaluation import compare_calibrations

    model = _model()
    g = torch.Generator().manual_seed(3)
    rx, ry = torch.randn(40, 3, 8, 8, generator=g), torch.randint(0, 4, (40,), generator=g)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(rx, ry), batch_size=16)
    x, y = torch.randn(12, 3, 8, 8, generator=g), torch.randint(0, 4, (12,), generator=g)
    out = compare_calibrations(model, loader, x, y, k=4, level=0.8, lr=0.5)
    with torch.no_grad():
        wrong = (model(x).argmax(1) != y).nonzero().flatten()
    assert out["n_misclassified"] == len(wrong) > 0 and out["n_reference"] == 40
    ps = ParameterSaliency(model)
    ps.fit(loader, ZScoreCalibration())
    r = ps.rank(x[wrong], target=y[wrong], k=4)
    assert out["groups"]["z-score"] == ps.group_summary(r, k=4)
    assert sum(out["groups"]["POT"].values()) == pytest.approx(100.0)
    c = pruning_curves(model, ps.filters, x[wrong], y[wrong], r, max_k=4)
    assert out["pruning"]["z-score"]["corrected"] == pytest.approx(float(c.corrected[4]))
