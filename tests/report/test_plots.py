import torch

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
