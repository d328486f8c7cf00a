import pytest
import torch

from captum_ext._targets import check_output_target, class_index_targets


def test_int_list_and_tensor_forms_agree():
    expected = torch.tensor([2, 2, 2])
    for target in (2, [2, 2, 2], torch.tensor(2), torch.tensor([2]), torch.tensor([2, 2, 2])):
        out = class_index_targets(target, 3)
        assert out.dtype == torch.long and torch.equal(out, expected)


@pytest.mark.parametrize(
    "target, match",
    [
        ((0, 1), "tuple"),
        (True, "int, a list"),
        ([0, 1], "one class per example"),
        ([0, 1.0, 2], "one class per example"),
        (torch.tensor([0.0, 1.0, 2.0]), "integer dtype"),
        (torch.zeros(3, 1, dtype=torch.long), "shape"),
        ("0", "got str"),
        (5, "out of range"),
        ([0, -1, 1], "out of range"),
    ],
)
def test_bad_targets(target, match):
    with pytest.raises(ValueError, match=match):
        class_index_targets(target, 3, n_classes=4)


@pytest.mark.parametrize(
    "target, shape, match",
    [
        (None, (3, 4), "target=None needs one output value"),
        (1, (3,), "target must be None"),
        (-1, (3, 4), "out of range"),
        (4, (3, 4), "out of range"),
        ([0, 1], (3, 4), "one class per example"),
        (1, (3, 4, 2), "tuple of 2 indices"),
        ((1, 2), (3, 4, 2), "non-negative ints below"),
        ((1, -1), (3, 4, 2), "non-negative ints below"),
        ([(0, 0), (1, 1)], (3, 4, 2), "needs 3 entries"),
    ],
)
def test_bad_output_targets(target, shape, match):
    with pytest.raises(ValueError, match=match):
        check_output_target(target, shape, 3)


def test_good_output_targets_pass():
    for target, shape in [
        (None, (3,)),
        (None, (3, 1)),
        (3, (3, 4)),
        (torch.tensor([0, 3, 1]), (3, 4)),
        ((3, 1), (3, 4, 2)),
        ([(0, 0), (3, 1), (2, 0)], (3, 4, 2)),
    ]:
        check_output_target(target, shape, 3)


@pytest.mark.parametrize("target", [-1, 3, [0, -1]])
def test_leg_and_fidelity_reject_impossible_targets_with_a_value_error(target):
    """Negative or too-large classes are a ValueError naming target, not Captum's
    AssertionError/IndexError or Python's "-1 is the last class"."""
    from small_nets import bn_dropout_net

    from captum_ext.attr import LEG, LEGTV
    from captum_ext.metrics import deletion

    model, x = bn_dropout_net(), torch.rand(2, 2, 6, 6)
    calls = [
        lambda: LEG(model).attribute(x, target=target, n_samples=16, grid=(2, 2)),
        lambda: LEGTV(model).attribute(x, target=target, n_samples=16, grid=(2, 2)),
        lambda: deletion(model, x, x, target, n_steps=4),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="target"):
            call()
