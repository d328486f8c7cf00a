"""captum_ext.report.model_spec.load_model: the --model / --weights / --num-classes loader."""

from __future__ import annotations

import itertools
import os
import sys
import textwrap

import pytest
import torch
import torchvision
from torch import nn

from captum_ext.report.model_spec import LoadedModel, load_model

S = 32  # probe size: small and fast
_unique = itertools.count()


def _resnet(num_classes: int = 3, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torchvision.models.resnet18(weights=None, num_classes=num_classes).eval()


def _x() -> torch.Tensor:
    return torch.rand(2, 3, S, S, generator=torch.Generator().manual_seed(1))


class TinyNet(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(self.conv(x)).relu().mean(dim=(2, 3)))


def _tiny() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        net = TinyNet()
        net.bn.running_mean.uniform_(-0.5, 0.5)  # eval-mode BN differs from train mode
        return net.eval()


def _module(tmp_path, monkeypatch, source: str) -> str:
    """Write ``source`` as a fresh module in tmp_path (the cwd) and return its name."""
    name = f"user_models_{next(_unique)}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.chdir(tmp_path)
    return name


# --- torchvision: and --weights ---------------------------------------------------------------


def test_torchvision_state_dict_round_trip(tmp_path):
    net = _resnet(3)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    loaded = load_model(
        "torchvision:resnet18", weights=tmp_path / "w.pt", num_classes=3, probe_size=S
    )
    assert isinstance(loaded, LoadedModel)
    assert (loaded.name, loaded.kind, loaded.n_classes) == (
        "torchvision:resnet18",
        "torchvision",
        3,
    )
    assert loaded.n_parameters == sum(p.numel() for p in net.parameters()) == 11_178_051
    assert loaded.warnings == ()
    assert not loaded.model.training
    assert all(p.requires_grad for p in loaded.model.parameters())
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(_x()), net(_x()), rtol=0, atol=1e-6)


@pytest.mark.parametrize("wrap", ["module.", "state_dict", "model"])
def test_wrapped_and_prefixed_checkpoints_load(tmp_path, wrap):
    net = _resnet(3, seed=5)
    sd = net.state_dict()
    if wrap == "module.":
        obj = {f"module.{k}": v for k, v in sd.items()}
    else:
        obj = {wrap: sd, "epoch": 7}
    torch.save(obj, tmp_path / "ckpt.pt")
    loaded = load_model(
        "torchvision:resnet18", weights=tmp_path / "ckpt.pt", num_classes=3, probe_size=S
    )
    fc = loaded.model.state_dict()["fc.weight"]
    assert torch.equal(fc, sd["fc.weight"])


def test_random_weights_warning_and_rng_untouched():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    loaded = load_model("torchvision:resnet18", num_classes=3, probe_size=S)
    assert torch.equal(torch.get_rng_state(), before)
    assert len(loaded.warnings) == 1
    assert "random" in loaded.warnings[0] and "--weights" in loaded.warnings[0]
    assert "nothing is downloaded" in loaded.warnings[0]
    # the random init uses the caller's RNG state without advancing it: same weights twice
    again = load_model("torchvision:resnet18", num_classes=3, probe_size=S)
    assert torch.equal(loaded.model.fc.weight, again.model.fc.weight)
    assert loaded.n_classes == 3


def test_default_num_classes_is_the_builders():
    loaded = load_model("torchvision:squeezenet1_1", probe_size=S)
    assert loaded.n_classes == 1000


# --- pkg.module:factory ------------------------------------------------------------------------

FACTORY = """
    import torch
    from torch import nn

    def make(num_classes=4):
        torch.manual_seed(0)  # must not leak into the caller's RNG
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes))

    class Factory:
        @staticmethod
        def build():
            return make(5)

    net = make(6)

    def fixed(num_classes=None):
        return make(4)

    def not_a_module():
        return [1, 2]

    def broken():
        raise RuntimeError("factory exploded")

    class Image4D(nn.Module):
        def forward(self, x):
            return x

    class Raises(nn.Module):
        def forward(self, x):
            raise RuntimeError("forward exploded")
"""


def test_factory_forms(tmp_path, monkeypatch):
    mod = _module(tmp_path, monkeypatch, FACTORY)
    path_before = list(sys.path)
    rng = torch.get_rng_state()
    a = load_model(f"{mod}:make", probe_size=S)
    assert (a.kind, a.name, a.n_classes, a.n_parameters) == ("factory", f"{mod}:make", 4, 12292)
    assert sys.path == path_before and torch.equal(torch.get_rng_state(), rng)
    assert a.warnings == ()
    assert load_model(f"{mod}:make", num_classes=7, probe_size=S).n_classes == 7
    assert load_model(f"{mod}:Factory.build", probe_size=S).n_classes == 5
    assert load_model(f"{mod}:net", probe_size=S).n_classes == 6  # an instance is used as is


def test_factory_with_weights(tmp_path, monkeypatch):
    mod = _module(tmp_path, monkeypatch, FACTORY)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 2))
    torch.save(net.state_dict(), tmp_path / "w.pt")
    loaded = load_model(f"{mod}:make", weights=tmp_path / "w.pt", num_classes=2, probe_size=S)
    with torch.no_grad():
        assert torch.equal(loaded.model(_x()), net(_x()))


@pytest.mark.parametrize(
    ("attr", "needle"),
    [
        (None, "no module named"),
        ("missing", "has no attribute 'missing'"),
        ("Factory.nope", "has no attribute 'nope'"),
        ("not_a_module", "returned a list, not a torch.nn.Module"),
        ("broken", "RuntimeError: factory exploded"),
        ("Image4D", "must return logits of shape (N, classes)"),
        ("Raises", "fails on a 1x3x32x32 input: RuntimeError: forward exploded"),
    ],
)
def test_factory_errors(tmp_path, monkeypatch, attr, needle):
    mod = _module(tmp_path, monkeypatch, FACTORY)
    spec = "no_such_module_xyz:make" if attr is None else f"{mod}:{attr}"
    with pytest.raises(ValueError, match="--model") as err:
        load_model(spec, probe_size=S)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


# --- TorchScript and torch.export files ---------------------------------------------------------


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torchscript_file(tmp_path):
    net = _tiny()
    torch.jit.save(torch.jit.trace(net, _x()), tmp_path / "net.pt")
    loaded = load_model(tmp_path / "net.pt", probe_size=S)
    assert (loaded.kind, loaded.name, loaded.n_classes) == (
        "torchscript",
        "net.pt (TorchScript)",
        3,
    )
    assert loaded.n_parameters == sum(p.numel() for p in net.parameters()) == 135
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(_x()), net(_x()), rtol=0, atol=1e-6)


def test_export_file(tmp_path):
    net = _tiny()
    batch = torch.export.Dim("batch")
    ep = torch.export.export(net, (_x(),), dynamic_shapes=({0: batch},))
    torch.export.save(ep, tmp_path / "net.pt2")
    loaded = load_model(str(tmp_path / "net.pt2"), probe_size=S)
    assert (loaded.kind, loaded.name, loaded.n_classes) == ("export", "net.pt2 (torch.export)", 3)
    assert loaded.n_parameters == 135
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(_x()), net(_x()), rtol=0, atol=1e-6)
    # exported with a fixed batch of 2: the probe (batch 1) fails, with a hint
    torch.export.save(torch.export.export(net, (_x(),)), tmp_path / "fixed.pt2")
    with pytest.raises(ValueError, match=r"fails on a 1x3x32x32 input: .*dynamic batch"):
        load_model(tmp_path / "fixed.pt2", probe_size=S)


def test_export_file_with_a_pickled_payload_is_refused(tmp_path):
    import builtins
    import zipfile

    torch.export.save(torch.export.export(_tiny(), (_x(),)), tmp_path / "net.pt2")
    with (
        zipfile.ZipFile(tmp_path / "net.pt2") as src,
        zipfile.ZipFile(tmp_path / "evil.pt2", "w") as dst,
    ):
        for item in src.infolist():
            data = src.read(item)
            if "sample_inputs" in item.filename:  # torch.export.load retries it with full pickle
                torch.save({"x": _Payload()}, tmp_path / "payload.pt")
                data = (tmp_path / "payload.pt").read_bytes()
            dst.writestr(item, data)
    with pytest.raises(
        ValueError, match=r"^--model .*evil\.pt2 is a torch.export archive holding pickled"
    ):
        load_model(tmp_path / "evil.pt2", probe_size=S)
    assert not hasattr(builtins, "CAPTUM_EXT_PWNED")


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_file_options(tmp_path):
    torch.jit.save(torch.jit.script(_tiny()), tmp_path / "net.pt")
    with pytest.raises(ValueError, match="--weights applies to torchvision: and factory"):
        load_model(tmp_path / "net.pt", weights=tmp_path / "net.pt", probe_size=S)
    with pytest.raises(ValueError, match="--num-classes is 5 but --model net.pt .* returns 3"):
        load_model(tmp_path / "net.pt", num_classes=5, probe_size=S)
    assert load_model(tmp_path / "net.pt", num_classes=3, probe_size=S).n_classes == 3


# --- bad inputs -------------------------------------------------------------------------------


def test_bad_specs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"^--model 'a:b:c' is not a model: expected torchvision"):
        load_model("a:b:c")
    with pytest.raises(ValueError, match=r"^--model torchvision:resnet81: unknown .*resnet18"):
        load_model("torchvision:resnet81")
    with pytest.raises(ValueError, match="not an image classification model"):
        load_model("torchvision:fasterrcnn_resnet50_fpn")  # would download a backbone
    with pytest.raises(ValueError, match=r"^--model nope\.pt: the file does not exist"):
        load_model("nope.pt")
    with pytest.raises(ValueError, match=r"did you mean torchvision:resnet18\?"):
        load_model("resnet18")
    with pytest.raises(ValueError, match="is a folder"):
        load_model(tmp_path)
    with pytest.raises(ValueError, match="^--num-classes must be a positive integer"):
        load_model("torchvision:resnet18", num_classes=0)


def test_state_dict_given_as_model(tmp_path):
    torch.save(_tiny().state_dict(), tmp_path / "sd.pt")
    with pytest.raises(ValueError) as err:
        load_model(tmp_path / "sd.pt", probe_size=S)
    msg = str(err.value)
    assert msg.startswith(f"--model {tmp_path / 'sd.pt'} is neither a TorchScript")
    assert "--weights FILE" in msg


def test_weights_of_another_architecture(tmp_path):
    torch.save(_resnet(10).state_dict(), tmp_path / "w10.pt")
    with pytest.raises(ValueError) as err:
        load_model("torchvision:resnet18", weights=tmp_path / "w10.pt", num_classes=3, probe_size=S)
    msg = str(err.value)
    assert msg.startswith(f"--weights {tmp_path / 'w10.pt'} does not match torchvision:resnet18: ")
    assert "size mismatch for fc.weight: file 10x512, model 3x512; fc.bias: file 10, model 3" in msg
    assert "missing" not in msg and "\n" not in msg


def test_weights_missing_and_unexpected_keys(tmp_path):
    sd = _resnet(3).state_dict()
    sd["extra.weight"] = torch.zeros(1)
    del sd["fc.bias"], sd["fc.weight"]
    torch.save(sd, tmp_path / "w.pt")
    with pytest.raises(ValueError, match=r"2 missing keys \(fc\.weight, fc\.bias\), 1 unexpected"):
        load_model("torchvision:resnet18", weights=tmp_path / "w.pt", num_classes=3, probe_size=S)


def test_bad_weights_files(tmp_path):
    (tmp_path / "junk.pt").write_bytes(os.urandom(64) + b"\x80\x9f" * 20)
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    torch.save({"a": 1}, tmp_path / "dict.pt")
    cases = {
        tmp_path / "missing.pt": "does not exist",
        tmp_path / "junk.pt": "cannot be read by torch.load(weights_only=True)",
        tmp_path / "list.pt": "does not hold a state_dict (tensors by name, or one under "
        "'state_dict' or 'model'); it holds a list",
        tmp_path / "dict.pt": "it holds a dict with keys 'a'",
    }
    for path, needle in cases.items():
        with pytest.raises(ValueError) as err:
            load_model("torchvision:resnet18", weights=path, num_classes=3, probe_size=S)
        assert str(err.value).startswith(f"--weights {path}"), str(err.value)
        assert needle in str(err.value)


class _Payload:
    def __reduce__(self):
        return (exec, ("import builtins; builtins.CAPTUM_EXT_PWNED = 1",))


def test_pickled_object_weights_are_not_unpickled(tmp_path):
    import builtins

    torch.save({"state_dict": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match=r"--weights .* cannot be read .*Unsupported global"):
        load_model("torchvision:resnet18", weights=tmp_path / "evil.pt", probe_size=S)
    assert not hasattr(builtins, "CAPTUM_EXT_PWNED")


def test_num_classes_mismatch(tmp_path, monkeypatch):
    mod = _module(tmp_path, monkeypatch, FACTORY)
    with pytest.raises(ValueError, match=rf"^--num-classes is 5 but --model {mod}:fixed returns 4"):
        load_model(f"{mod}:fixed", num_classes=5, probe_size=S)


def test_probe_uses_probe_size():
    with pytest.raises(ValueError, match=r"^--model torchvision:alexnet fails on a 1x3x8x8 input"):
        load_model("torchvision:alexnet", num_classes=3, probe_size=8)
