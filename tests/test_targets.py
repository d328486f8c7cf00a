import pytest
import torch

from captum_ext._targets import class_index_targets


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
