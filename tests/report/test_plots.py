import warnings

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from captum_ext.report import plots
from captum_ext.report.plots import display_map


def test_display_map_scales_by_99th_percentile_and_keeps_sparse_maps_visible():
    attr = torch.zeros(3, 10, 10)
    attr[0, 2, 3] = -4.0  # one pixel out of 100: the 99th percentile is 0
    m = display_map(attr)
    assert m[2, 3] == 1.0 and m.sum() == 1.0
    dense = torch.arange(100.0).reshape(1, 10, 10)
    m = display_map(dense)
    p99 = torch.quantile(dense.flatten(), 0.99)
    assert torch.allclose(m, (dense[0] / p99).clamp(0, 1))
    assert display_map(torch.zeros(2, 4, 4)).eq(0).all()


def _tile_pixels(path):
    return mpimg.imread(path)[..., :3]


def _first_run(idx):
    """The first block of consecutive indices."""
    stop = np.flatnonzero(np.diff(idx) > 1)
    return idx[: stop[0] + 1] if len(stop) else idx


def _overlay_centre(px):
    """Row and column of the centre of the leftmost non-white block (the overlay)."""
    h, w = px.shape[:2]
    cols = _first_run(np.flatnonzero(px[h // 2].min(-1) < 0.95))
    cx = int(cols.mean())
    rows = _first_run(np.flatnonzero(px[:, cx].min(-1) < 0.95))
    return int(rows.mean()), cx


def _blob(size=64, sigma=8.0):
    yy, xx = torch.meshgrid(torch.arange(size * 1.0), torch.arange(size * 1.0), indexing="ij")
    c = (size - 1) / 2
    return torch.exp(-((yy - c) ** 2 + (xx - c) ** 2) / (2 * sigma**2))


def test_display_map_warns_nothing_for_an_all_zero_map():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert display_map(torch.zeros(3, 4, 4)).eq(0).all()


def test_method_tile_overlay_and_raw_map_readable_size(tmp_path):
    image = torch.full((3, 64, 64), 0.5)  # gray: only the heat map adds colour
    mask = torch.zeros(64, 64)
    mask[20:44, 20:44] = 1
    n_figs = len(plt.get_fignums())
    blob = plots.method_tile(image, _blob().expand(3, 64, 64), mask, "Saliency", tmp_path / "b.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an all-zero attribution does not warn in the report
        zero = plots.method_tile(image, torch.zeros(3, 64, 64), None, "Zero", tmp_path / "z.png")
    assert len(plt.get_fignums()) == n_figs
    px = _tile_pixels(blob)
    h, w = px.shape[:2]
    assert 250 <= w <= 500 and 120 <= h <= 260
    assert np.abs(px[:, : w // 2] - px[:, w // 2 :]).mean() > 0.05  # overlay vs raw map
    assert px.std(axis=-1).max() > 0.2  # coloured
    # the overlay's centre follows the attribution: red on the blob, blue for zero
    pz = _tile_pixels(zero)
    assert pz.shape == px.shape
    cy, cx = _overlay_centre(pz)
    assert abs(cy - h / 2) < 25 and cx < w / 3
    centre, centre_zero = px[cy - 3 : cy + 3, cx - 3 : cx + 3], pz[cy - 3 : cy + 3, cx - 3 : cx + 3]
    assert np.abs(centre - centre_zero).mean() > 0.1
    assert centre[..., 0].mean() > centre[..., 2].mean()  # jet: high is red
    assert centre_zero[..., 2].mean() > centre_zero[..., 0].mean()  # jet: zero is blue


def test_failed_method_tile_has_no_heat_map(tmp_path):
    image = torch.rand(1, 32, 32)  # gray image
    error = "RuntimeError: " + "x" * 200
    path = plots.method_tile(image, None, None, "CASO", tmp_path / "f.png", error=error)
    px = _tile_pixels(path)
    h, w = px.shape[:2]
    assert 250 <= w <= 500 and 120 <= h <= 260
    left = px[:, : w // 2]
    assert np.abs(left - left.mean(axis=-1, keepdims=True)).max() < 0.02  # gray: no heat map
    assert px[:, w // 2 :].std() > 0.01  # the "failed" text
    coloured = (px.max(-1) - px.min(-1)) > 0.1
    assert 0 < coloured.sum() < 0.02 * h * w  # only the red "failed": no heat map, no colour bar


def test_image_tile_is_as_tall_as_method_tiles(tmp_path):
    image, mask = torch.rand(3, 48, 48), torch.zeros(48, 48)
    mask[10:30, 10:30] = 1
    title = "dog.png: label cat, predicted dog (wrong)"
    n_figs = len(plt.get_fignums())
    a = _tile_pixels(plots.image_tile(image, mask, title, tmp_path / "i.png"))
    b = _tile_pixels(plots.method_tile(image, torch.rand(3, 48, 48), mask, "M", tmp_path / "m.png"))
    assert a.shape[0] == b.shape[0] and 100 <= a.shape[1] <= b.shape[1]
    assert len(plt.get_fignums()) == n_figs


def test_save_figure_closes_pyplot_figures_only(tmp_path):
    fig = plt.figure()
    n_figs = len(plt.get_fignums())
    plots.save_figure(fig, tmp_path / "p.png")
    assert len(plt.get_fignums()) == n_figs - 1
    plain = Figure(figsize=(2, 1))
    plain.subplots().plot([0, 1])
    plots.save_figure(plain, tmp_path / "q.png", tight=False)
    assert _tile_pixels(tmp_path / "q.png").shape[:2] == (80, 160)
