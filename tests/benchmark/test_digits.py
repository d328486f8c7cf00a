import torch

from captum_ext.benchmark import Digits


def test_split_sizes_disjoint_and_scaled():
    train, test = Digits("train"), Digits("test")
    assert len(train) + len(test) == 1797
    assert len(test) == 359
    x, y = test[0]
    assert x.shape == (1, 28, 28) and 0 <= x.min() and x.max() <= 1
    assert set(test.labels.tolist()) == set(range(10))
    # no image appears in both splits
    flat_train = {tuple(v.tolist()) for v in train.images.flatten(1)[:, ::7]}
    assert not any(tuple(v.tolist()) in flat_train for v in test.images.flatten(1)[:, ::7])


def test_upsampling_preserves_the_mean_intensity():
    from sklearn.datasets import load_digits

    raw = torch.tensor(load_digits().images, dtype=torch.float32) / 16
    ds = Digits("train", size=32)  # 8 -> 32 is an integer factor: bilinear keeps the mean
    assert abs(ds.images.mean().item() - raw.mean().item()) < 0.01
