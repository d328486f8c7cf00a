import numpy as np
import pytest
import torch

from captum_ext.benchmark import CLASSES, DOMAINS, SyntheticShapes


def test_deterministic_per_seed_and_index_regardless_of_access_order():
    a = SyntheticShapes(n=50, seed=3)
    b = SyntheticShapes(n=50, seed=3)
    for i in (7, 0, 49, 7):  # access order and repetition must not matter
        xa, ya, ma = a[i]
        xb, yb, mb = b[i]
        assert torch.equal(xa, xb) and ya == yb and torch.equal(ma, mb)
    # the item is a function of (seed, index) only, not of the dataset length
    assert torch.equal(SyntheticShapes(n=10, seed=3)[5][0], a[5][0])
    assert not torch.equal(SyntheticShapes(n=50, seed=4)[7][0], a[7][0])
    assert not torch.equal(SyntheticShapes(n=50, seed=3, split="test")[7][0], a[7][0])


def test_global_rng_is_neither_used_nor_changed():
    state = torch.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    x1 = SyntheticShapes(n=5)[2][0]
    torch.manual_seed(99)
    np.random.seed(99)
    x2 = SyntheticShapes(n=5)[2][0]
    assert torch.equal(x1, x2)
    torch.set_rng_state(state)
    np.random.set_state(("MT19937", np_state, 624, 0, 0.0))


def test_item_format_and_balanced_labels():
    ds = SyntheticShapes(n=60, size=40)
    image, label, mask = ds[0]
    assert image.shape == (3, 40, 40) and image.dtype == torch.float32
    assert mask.shape == (40, 40) and mask.dtype == torch.bool
    assert 0.0 <= image.min() and image.max() <= 1.0
    labels = [ds[i][1] for i in range(60)]
    assert np.bincount(labels).tolist() == [10] * len(CLASSES)


@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.parametrize("size", [32, 64])
def test_mask_is_exact(domain, size):
    """The image differs from the same scene without the object only inside the mask."""
    ds = SyntheticShapes(n=24, size=size, domain=domain)
    for i in range(24):
        with_obj, mask = ds.render(i)
        without, mask2 = ds.render(i, draw_object=False)
        assert np.array_equal(mask, mask2)
        changed = np.abs(with_obj - without).max(0) > 0
        assert not changed[~mask].any(), "pixels outside the mask changed"
        # and the object is visible: most mask pixels changed
        assert changed[mask].mean() > 0.9
        # objects are fully inside the image and neither tiny nor huge
        assert 0.02 < mask.mean() < 0.5
        assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def test_domain_switch_changes_background_not_labels_or_masks():
    a = SyntheticShapes(n=12, domain="blobs")
    b = SyntheticShapes(n=12, domain="stripes")
    for i in range(12):
        xa, ya, ma = a[i]
        xb, yb, mb = b[i]
        assert ya == yb and torch.equal(ma, mb)
        outside = ~ma
        assert (xa[:, outside] - xb[:, outside]).abs().mean() > 0.05
        # the object itself (colour, shading, pixel noise) is drawn from the scene stream
        assert torch.allclose(xa[:, ma], xb[:, ma])


def test_shapes_are_distinct_classes():
    """Masks of the six classes at identical pose differ: the label is in the shape."""
    ds = SyntheticShapes(n=6, size=64)
    masks = [torch.from_numpy(ds.render(i)[1]) for i in range(6)]
    areas = [int(m.sum()) for m in masks]
    assert len(set(areas)) == 6


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": 0},
        {"size": 4},
        {"size": 300},
        {"split": "val"},
        {"domain": "forest"},
        {"n_clutter": -1},
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        SyntheticShapes(**kwargs)


def test_index_out_of_range():
    with pytest.raises(IndexError):
        SyntheticShapes(n=3).render(3)
