"""Top-k intersection, Spearman, centre of mass (hand-computed), and saliency_stability."""

from __future__ import annotations

import warnings

import pytest
import torch
from captum.attr import Saliency
from scipy.stats import spearmanr

from captum_ext.metrics import (
    center_of_mass,
    center_of_mass_shift,
    rank_correlation,
    saliency_stability,
    topk_intersection,
)
from captum_ext.metrics._maps import average_ranks


def test_topk_intersection_of_known_maps():
    a = torch.tensor([[[3.0, 2.0], [1.0, 0.0]]])
    b = torch.tensor([[[3.0, 0.0], [2.0, 1.0]]])
    assert topk_intersection(a, b, k=1).item() == 1.0  # both top-1 = pixel 0
    assert topk_intersection(a, b, k=2).item() == 0.5  # {0, 1} vs {0, 2}
    assert topk_intersection(a, b, k=3).item() == pytest.approx(2 / 3)  # {0,1,2} vs {0,2,3}
    assert topk_intersection(a, b, k=4).item() == 1.0
    # channels are reduced by sum of |.|: -3 counts like 3
    a3 = torch.stack([a[0], -a[0]], 0)[None] / 2
    assert topk_intersection(a3, b, k=2).item() == 0.5


def test_topk_ties_take_lower_flat_index_first():
    flat = torch.ones(1, 3, 3)
    other = torch.zeros(1, 3, 3)
    other[0, 0, :2] = 1.0  # top-2 of other = {0, 1}; ties in flat -> {0, 1} too
    assert topk_intersection(flat, other, k=2).item() == 1.0
    other2 = torch.zeros(1, 3, 3)
    other2[0, 2, 1:] = 1.0  # top-2 = {7, 8}
    assert topk_intersection(flat, other2, k=2).item() == 0.0


def test_default_k_is_two_percent():
    a = torch.rand(2, 3, 20, 25)  # 500 px -> k = 10
    b = a.clone()
    b[0, :, 0, 0] += 100.0  # a new top pixel pushes exactly one pixel out of the top-10
    res = topk_intersection(a, b)
    torch.testing.assert_close(res, torch.tensor([0.9, 1.0]))


def test_spearman_matches_scipy_with_ties():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (4, 1, 6, 7), generator=g).float()
    b = (a + torch.randint(-2, 3, (4, 1, 6, 7), generator=g)).abs()
    ours = rank_correlation(a, b)
    for i in range(4):
        expected = spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy()).statistic
        assert ours[i].item() == pytest.approx(expected, abs=1e-6)
    from scipy.stats import rankdata

    torch.testing.assert_close(
        average_ranks(a.view(4, -1)), torch.from_numpy(rankdata(a.view(4, -1), axis=1))
    )


def test_spearman_constant_map_is_zero_with_warning():
    import captum_ext.metrics._maps as maps

    maps._CONSTANT_WARNED = False
    a = torch.rand(2, 4, 4)
    b = a.clone()
    b[1] = 1.0
    with pytest.warns(RuntimeWarning, match="constant"):
        res = rank_correlation(a, b)
    assert res[0].item() == pytest.approx(1.0)
    assert res[1].item() == 0.0


def test_center_of_mass_of_point_masses():
    m = torch.zeros(2, 3, 5, 6)
    m[0, 1, 4, 1] = -2.0  # abs: sign does not matter
    m[1, 0, 0, 0] = 1.0
    m[1, 2, 2, 4] = 3.0  # (0,0)*1 + (2,4)*3 over 4 -> (1.5, 3)
    torch.testing.assert_close(center_of_mass(m), torch.tensor([[4.0, 1.0], [1.5, 3.0]]))
    shift = center_of_mass_shift(m[:1], m[1:])
    assert shift.item() == pytest.approx(((4 - 1.5) ** 2 + (1 - 3) ** 2) ** 0.5)


def test_center_of_mass_of_empty_map_is_geometric_centre():
    with pytest.warns(RuntimeWarning, match="zero total mass"):
        res = center_of_mass(torch.zeros(1, 4, 7))
    torch.testing.assert_close(res, torch.tensor([[1.5, 3.0]]))


def test_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        topk_intersection(torch.rand(1, 4, 4), torch.rand(1, 4, 5))
    with pytest.raises(ValueError, match="k must"):
        topk_intersection(torch.rand(1, 4, 4), torch.rand(1, 4, 4), k=17)
    bad = torch.rand(1, 4, 4)
    bad[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="finite"):
        rank_correlation(bad, torch.rand(1, 4, 4))
    with pytest.raises(ValueError, match="shape"):
        center_of_mass(torch.rand(4, 4))


def test_saliency_stability_on_trained_model(shapes_model, shapes_batch):
    model = shapes_model.model.eval()
    images = shapes_batch[0][:4]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = saliency_stability(
            Saliency(model), model, images, epsilons=(1e-6, 16 / 255), step_num=3,
            bounds=(0.0, 1.0),
        )  # fmt: skip
    summary = res.summary()
    assert len(summary["topk"]) == 2
    for i in range(2):
        assert res.n_kept[i] == int(res.kept[i].sum()) == res.topk[i].numel()
    # a 1e-6 perturbation cannot change the ReLU pattern much: the maps stay almost equal
    assert res.n_kept[0] == 4
    assert summary["spearman"][0] > 0.99 and summary["topk"][0] > 0.9
    # PGD at 16/255 changes the gradient map much more than at 1e-6
    if res.n_kept[1]:
        assert summary["spearman"][1] < summary["spearman"][0]
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])
    for p, g in zip(model.parameters(), grads):
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)
    with pytest.raises(ValueError, match="attack"):
        saliency_stability(Saliency(model), model, images, attack="cw")
    nan_images = images.clone()
    nan_images[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="inputs must be finite"):
        saliency_stability(Saliency(model), model, nan_images)
    for eps in ((float("nan"),), (float("inf"),), (0.0,)):
        with pytest.raises(ValueError, match="epsilons"):
            saliency_stability(Saliency(model), model, images, epsilons=eps)
    for bounds in ((1.0, 0.0), (0.0, float("nan")), (0.5, 0.5)):
        with pytest.raises(ValueError, match="bounds"):
            saliency_stability(Saliency(model), model, images, bounds=bounds)
