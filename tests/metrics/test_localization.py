"""Pointing game and energy-based pointing game on hand-built maps."""

from __future__ import annotations

import pytest
import torch

from captum_ext.metrics import energy_pointing_game, pointing_game


def test_pointing_game_hits_and_misses():
    attr = torch.zeros(3, 2, 5, 5)
    attr[0, 0, 1, 1] = 2.0  # max at (1, 1): inside
    attr[1, 0, 4, 4] = 2.0  # max at (4, 4): outside
    attr[2, 0, 3, 3] = 5.0
    attr[2, 1, 3, 3] = -4.0  # signed sum 1.0 at (3, 3) ...
    attr[2, 0, 0, 0] = 1.5  # ... loses to 1.5 at (0, 0): outside (abs would pick (3, 3))
    mask = torch.zeros(3, 5, 5, dtype=torch.bool)
    mask[:, 1:4, 1:4] = True
    torch.testing.assert_close(pointing_game(attr, mask), torch.tensor([1.0, 0.0, 0.0]))


def test_pointing_game_ties_and_tolerance():
    smap = torch.zeros(1, 4, 4)
    smap[0, 0, 3] = 1.0
    smap[0, 2, 0] = 1.0  # tie: row-major first is (0, 3)
    mask = torch.zeros(1, 1, 4, 4)
    mask[0, 0, 2, 0] = 1
    assert pointing_game(smap, mask).item() == 0.0
    # (0, 3) is sqrt(4 + 9) ~ 3.61 px from (2, 0)
    assert pointing_game(smap, mask, tolerance=3.6).item() == 0.0
    assert pointing_game(smap, mask, tolerance=3.61).item() == 1.0


def test_energy_inside_a_known_mask():
    attr = torch.tensor([[[1.0, 3.0], [-2.0, 0.0]]])
    mask = torch.tensor([[[False, True], [True, True]]])
    torch.testing.assert_close(energy_pointing_game(attr, mask), torch.tensor([0.75]))
    # channels are summed with sign before clipping: 2 - 1 = 1 inside, 4 outside -> 0.2
    attr = torch.zeros(1, 2, 2, 2)
    attr[0, 0, 0, 0], attr[0, 1, 0, 0] = 2.0, -1.0
    attr[0, 0, 1, 1] = 4.0
    mask = torch.tensor([[[True, False], [False, False]]])
    torch.testing.assert_close(energy_pointing_game(attr, mask), torch.tensor([0.2]))


def test_energy_without_positive_mass_is_zero_with_warning():
    with pytest.warns(RuntimeWarning, match="no positive mass"):
        res = energy_pointing_game(-torch.rand(2, 3, 3), torch.ones(2, 3, 3, dtype=torch.bool))
    torch.testing.assert_close(res, torch.zeros(2))


def test_ground_truth_map_scores_perfectly_on_synthetic_shapes(shapes_batch):
    _, _, masks = shapes_batch
    attr = masks.float()[:, None].expand(-1, 3, -1, -1) + 0.0
    torch.testing.assert_close(energy_pointing_game(attr, masks), torch.ones(len(masks)))
    torch.testing.assert_close(pointing_game(attr, masks), torch.ones(len(masks)))
    torch.testing.assert_close(pointing_game(-attr + 1, masks), torch.zeros(len(masks)))


def test_bad_input():
    with pytest.raises(ValueError, match="masks"):
        pointing_game(torch.rand(2, 3, 4, 4), torch.ones(2, 4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="masks"):
        energy_pointing_game(torch.rand(2, 4, 4), torch.full((2, 4, 4), 0.5))
    bad = torch.rand(1, 4, 4)
    bad[0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        energy_pointing_game(bad, torch.ones(1, 4, 4))
    with pytest.raises(ValueError, match="tolerance"):
        pointing_game(torch.rand(1, 4, 4), torch.ones(1, 4, 4), tolerance=-1)


def _slow_pointing_game(smap: torch.Tensor, mask: torch.Tensor, tolerance: float, ties: str):
    """Reference: loop over the maximal positions and the mask pixels (one 2-D map)."""
    h, w = smap.shape
    best = smap.max()
    tops = [(i, j) for i in range(h) for j in range(w) if smap[i, j] == best]
    inside = [(i, j) for i in range(h) for j in range(w) if mask[i, j]]

    def hit(p):
        return any((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2 <= tolerance**2 for q in inside)

    if ties == "first":
        return float(hit(tops[0]))
    return sum(hit(p) for p in tops) / len(tops)


@pytest.mark.parametrize("ties", ["first", "mean"])
@pytest.mark.parametrize("tolerance", [0.0, 1.0, 1.5, 2.9])
def test_pointing_game_matches_a_slow_reference(ties, tolerance):
    gen = torch.Generator().manual_seed(3)
    # block-constant maps (3 x 3 cells of 3 x 3 pixels) so that maxima tie
    smap = torch.randint(0, 4, (6, 3, 3), generator=gen).float()
    smap = smap.repeat_interleave(3, 1).repeat_interleave(3, 2)
    masks = torch.rand(6, 9, 9, generator=gen) < 0.15
    got = pointing_game(smap, masks, tolerance=tolerance, ties=ties)
    want = torch.tensor([_slow_pointing_game(s, m, tolerance, ties) for s, m in zip(smap, masks)])
    torch.testing.assert_close(got, want)


def test_mean_ties_score_the_share_of_tied_maxima_inside():
    smap = torch.zeros(1, 4, 4)
    smap[0, 1:3, 1:3] = 1.0  # a 2 x 2 block of tied maxima
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 2, 2] = True  # holds one of the four
    assert pointing_game(smap, mask, ties="mean").item() == 0.25
    assert pointing_game(smap, mask, ties="first").item() == 0.0  # (1, 1) comes first
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 1, 1] = True
    assert pointing_game(smap, mask, ties="mean").item() == 0.25
    assert pointing_game(smap, mask, ties="first").item() == 1.0


def test_mean_ties_do_not_depend_on_orientation_but_first_does():
    gen = torch.Generator().manual_seed(0)
    smap = torch.randint(0, 3, (40, 4, 4), generator=gen).float()
    smap = smap.repeat_interleave(2, 1).repeat_interleave(2, 2)
    masks = torch.rand(40, 8, 8, generator=gen) < 0.3
    views = [
        lambda t: t,
        lambda t: t.flip(-1),
        lambda t: t.flip(-2),
        lambda t: t.transpose(-1, -2),
    ]
    mean = [pointing_game(v(smap), v(masks), ties="mean") for v in views]
    for other in mean[1:]:
        torch.testing.assert_close(other, mean[0])
    first = [pointing_game(v(smap), v(masks), ties="first") for v in views]
    assert any(not torch.equal(other, first[0]) for other in first[1:])


def test_pointing_game_rejects_an_unknown_tie_rule():
    with pytest.raises(ValueError, match="ties"):
        pointing_game(torch.rand(1, 4, 4), torch.ones(1, 4, 4), ties="random")
