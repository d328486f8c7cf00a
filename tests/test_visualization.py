import warnings

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from captum_ext.visualization import attribution_to_map, show_on_image


def _blob(size: int = 32, sigma: float = 4.0) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size * 1.0), torch.arange(size * 1.0), indexing="ij")
    c = (size - 1) / 2
    return torch.exp(-((yy - c) ** 2 + (xx - c) ** 2) / (2 * sigma**2))


def test_map_is_scaled_by_the_percentile_and_clips_above_it():
    dense = torch.arange(100.0).reshape(1, 10, 10)
    p99 = float(np.percentile(np.arange(100.0), 99))  # 98.01
    assert p99 == pytest.approx(98.01)
    m = attribution_to_map(dense)
    assert m.shape == (10, 10) and m.dtype == torch.float32
    assert m.flatten()[50].item() == pytest.approx(50 / p99)
    assert m.flatten()[98].item() == pytest.approx(98 / p99)
    assert m.flatten()[99].item() == 1.0  # 99 > 98.01: clipped
    # percentile 50 of |0..99| is 49.5; a (H, W) input works too
    m = attribution_to_map(-dense[0], percentile=50)
    assert m.flatten()[20].item() == pytest.approx(20 / 49.5)
    assert (m.flatten()[50:] == 1).all()


def test_signs_on_a_signed_two_channel_attribution():
    attr = torch.tensor([[[1.0, -3.0], [2.0, 0.0]], [[1.0, 1.0], [-4.0, 0.0]]])

    # channel sums: [[2, -2], [-2, 0]]; sums of |a|: [[2, 4], [6, 0]]
    def unscaled(sign):
        return attribution_to_map(attr, sign, percentile=100)

    assert torch.allclose(unscaled("absolute_value"), torch.tensor([[2, 4], [6, 0]]) / 6.0)
    assert torch.allclose(unscaled("positive"), torch.tensor([[1.0, 0], [0, 0]]))
    assert torch.allclose(unscaled("negative"), torch.tensor([[0, 1.0], [1.0, 0]]))
    assert torch.allclose(unscaled("all"), torch.tensor([[1.0, -1.0], [-1.0, 0]]))
    # "all" is scaled by the percentile of |sum|: |sum| = [2, 2, 2, 0], 50th percentile 2
    assert torch.allclose(attribution_to_map(attr, "all", 50), torch.tensor([[1, -1], [-1, 0.0]]))
    signed = torch.tensor([[4.0, -1.0], [-2.0, 0.5]])
    assert torch.allclose(attribution_to_map(signed, "all", 100), signed / 4)
    # values beyond the percentile clip to -1 and 1
    p = float(np.percentile([4.0, 1.0, 2.0, 0.5], 50))  # 1.5
    expected = (signed / p).clamp(-1, 1)
    assert torch.allclose(attribution_to_map(signed, "all", 50), expected)


def test_sparse_map_is_scaled_by_its_max_and_input_is_unchanged():
    attr = torch.zeros(2, 30, 30)  # 3 non-zero pixels of 900 (0.3 %): the 99th percentile is 0
    attr[0, 1, 1], attr[1, 5, 7], attr[0, 20, 20] = 2.0, -8.0, 4.0
    before = attr.clone()
    m = attribution_to_map(attr)
    assert torch.equal(attr, before)
    assert m[5, 7] == 1.0 and m[1, 1] == 0.25 and m[20, 20] == 0.5
    assert m.sum() == pytest.approx(1.75)


def test_all_zero_map_gives_zeros_and_one_warning():
    with pytest.warns(UserWarning, match="all zero") as record:
        m = attribution_to_map(torch.zeros(3, 5, 5))
    assert len(record) == 1 and m.shape == (5, 5) and (m == 0).all() and not m.isnan().any()
    # an all-negative attribution has an all-zero positive part
    with pytest.warns(UserWarning, match="all zero"):
        assert (attribution_to_map(-torch.ones(1, 4, 4), "positive") == 0).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (attribution_to_map(torch.zeros(4, 4), warn=False) == 0).all()


def test_bad_inputs_raise_value_errors():
    bad = torch.ones(1, 4, 4)
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="attribution"):
        attribution_to_map(bad)
    with pytest.raises(ValueError, match="attribution"):
        attribution_to_map(torch.full((4, 4), float("inf")))
    with pytest.raises(ValueError, match="attribution"):
        attribution_to_map(torch.ones(1, 1, 4, 4))
    with pytest.raises(ValueError, match="'absolute_value', 'positive', 'negative', 'all'"):
        attribution_to_map(torch.ones(4, 4), "abs")
    for p in (0, -1, 100.5, float("nan")):
        with pytest.raises(ValueError, match="percentile"):
            attribution_to_map(torch.ones(4, 4), percentile=p)


def test_show_on_image_overlay_colourbar_and_mask():
    image, attr = torch.rand(3, 32, 32), _blob().expand(3, 32, 32) * 2.0
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[8:24, 8:24] = True
    saved = image.clone(), attr.clone(), mask.clone()
    n_figs = len(plt.get_fignums())
    fig, axes = show_on_image(image, attr, alpha=0.4, mask=mask, title="Saliency")
    assert isinstance(fig, Figure) and len(axes) == 1
    ax = axes[0]
    images = ax.get_images()
    assert len(images) == 2 and images[1].get_alpha() == 0.4
    assert np.allclose(images[0].get_array(), image.permute(1, 2, 0).numpy())
    heat = np.asarray(images[1].get_array())
    assert heat.shape == (32, 32) and heat.max() == 1.0 and heat[0, 0] < 0.01
    assert images[1].get_cmap().name == "jet"
    assert len(fig.axes) == 2  # the colour bar
    assert "attribution" in fig.axes[1].get_ylabel()
    assert len(ax.collections) > 0  # the mask contour
    assert ax.get_title() == "Saliency"
    assert all(torch.equal(a, b) for a, b in zip((image, attr, mask), saved))
    assert len(plt.get_fignums()) == n_figs
    fig.canvas.draw()  # renders without a backend being chosen


def test_show_on_image_raw_signed_and_into_given_axes():
    image, attr = torch.rand(1, 16, 16), torch.randn(16, 16)
    fig, axes = show_on_image(image, attr, sign="all", show_raw=True, title="t")
    assert len(axes) == 2 and len(fig.axes) == 4  # two maps, two colour bars
    over, raw = (a.get_images() for a in axes)
    assert len(over) == 2 and len(raw) == 1
    assert over[1].get_cmap().name == "bwr" and over[1].norm.vmin == -1
    assert np.asarray(raw[0].get_array()).min() < 0
    assert fig.get_suptitle() == "t"
    fig, axes = show_on_image(image, attr.abs(), show_raw=True, colorbar=False)
    assert len(fig.axes) == 2 and axes[1].get_images()[0].get_cmap().name == "inferno"
    for colorbar in (False, True):  # the two panels have the same size
        fig, axes = show_on_image(image, attr.abs(), show_raw=True, colorbar=colorbar)
        fig.canvas.draw()
        w = [a.get_window_extent() for a in axes]
        assert w[0].width == pytest.approx(w[1].width, rel=0.02)
        assert w[0].height == pytest.approx(w[1].height, rel=0.02)
        assert w[0].x1 < w[1].x0  # side by side
    # drawing into a given axes
    target = Figure().subplots(1, 3)[1]
    fig, axes = show_on_image(image, attr, ax=target, colorbar=False)
    assert fig is target.figure and axes == [target] and len(target.get_images()) == 2


def test_show_on_image_rejects_bad_inputs():
    image = torch.rand(3, 8, 8)
    with pytest.raises(ValueError, match="attribution"):
        show_on_image(image, torch.rand(3, 8, 9))
    with pytest.raises(ValueError, match="image"):
        show_on_image(image * 2, torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="image"):
        show_on_image(torch.rand(2, 8, 8), torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="mask"):
        show_on_image(image, torch.rand(3, 8, 8), mask=torch.ones(4, 4))
    with pytest.raises(ValueError, match="show_raw"):
        show_on_image(image, torch.rand(3, 8, 8), ax=Figure().subplots(), show_raw=True)
    with pytest.raises(ValueError, match="alpha"):
        show_on_image(image, torch.rand(3, 8, 8), alpha=1.5)
