"""Load the user's model for ``captum-ext report --model SPEC [--weights FILE]``.

``SPEC`` is ``torchvision:NAME``, ``pkg.module:factory`` (an entry point, as with uvicorn) or a
TorchScript / torch.export file. Nothing is downloaded and no arbitrary object is unpickled.
Every failure is a one-line :class:`ValueError` naming the flag.
"""

from __future__ import annotations

import difflib
import importlib
import io
import json
import os
import re
import sys
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from captum_ext._io import safe_torch_load

FORMS = (
    "torchvision:NAME (e.g. torchvision:resnet18), pkg.module:factory (a function or class "
    "returning an nn.Module) or a TorchScript / torch.export file"
)
_ENTRY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for the report: eval mode, on the CPU, returns ``(N, n_classes)`` logits.

    Attributes:
        model: The module.
        name: ``torchvision:resnet18``, ``mypkg.models:make_net``, ``model.pt (TorchScript)``...
        kind: ``"torchvision"``, ``"factory"``, ``"torchscript"`` or ``"export"``.
        n_parameters: Number of parameter elements.
        n_classes: Number of logits the probe forward pass returned.
        warnings: Lines for the user (e.g. that the weights are random).
    """

    model: nn.Module
    name: str
    kind: str
    n_parameters: int
    n_classes: int
    warnings: tuple[str, ...] = ()


def load_model(
    spec: str | os.PathLike,
    *,
    weights: str | os.PathLike | None = None,
    num_classes: int | None = None,
    probe_size: int = 224,
) -> LoadedModel:
    """Build or load the model ``spec`` names, load ``weights`` and probe it with one forward.

    Args:
        spec: ``torchvision:NAME`` (random init unless ``weights``), ``pkg.module:attr`` (a
            callable, called with no arguments or ``num_classes=``; a module instance is used as
            is; the current folder is searched first) or the path of a TorchScript
            (``torch.jit.save``) or torch.export (``torch.export.save``) file.
        weights: A ``state_dict`` file (``torch.save``) for ``torchvision:`` and factory models;
            ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers and ``module.`` prefixes are
            accepted. Read with ``weights_only=True``.
        num_classes: Passed to the builder (``torchvision:``, factory) and checked against the
            model's output.
        probe_size: Side of the ``1 x 3 x S x S`` zero image of the probe forward pass.

    Returns:
        The model in eval mode (nothing else changed); the caller's RNG state is untouched.

    Raises:
        ValueError: A flag is invalid; the message names it (``--model``, ``--weights``...).
    """
    spec = os.fspath(spec)
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ValueError(f"--num-classes must be a positive integer, got {num_classes!r}")
    if isinstance(probe_size, bool) or not isinstance(probe_size, int) or probe_size < 1:
        raise ValueError(f"--size must be a positive integer, got {probe_size!r}")
    path = Path(spec)
    with torch.random.fork_rng(devices=[]):
        if spec.startswith("torchvision:"):
            model, kind, name = _torchvision(spec, num_classes), "torchvision", spec
        elif path.is_file():
            if weights is not None:
                raise ValueError("--weights applies to torchvision: and factory models")
            model, kind = _load_file(path)
            name = f"{path.name} ({'TorchScript' if kind == 'torchscript' else 'torch.export'})"
        elif path.is_dir():
            raise ValueError(f"--model {spec} is a folder; expected {FORMS}")
        elif _ENTRY.fullmatch(spec):
            model, kind, name = _factory(spec, num_classes), "factory", spec
        elif ":" not in spec:
            tv = spec.lower() in _classifiers()
            hint = f" (did you mean torchvision:{spec}?)" if tv else ""
            raise ValueError(f"--model {spec}: the file does not exist{hint}; expected {FORMS}")
        else:
            raise ValueError(f"--model {spec!r} is not a model: expected {FORMS}")
        if weights is not None:
            _load_weights(model, Path(weights), name)
        if any(t.device.type != "cpu" for t in [*model.parameters(), *model.buffers()]):
            model.cpu()
        try:
            model.eval()
        except NotImplementedError:  # torch.export modules: the mode is fixed at export time
            pass
        n_classes = _probe(model, name, kind, probe_size, num_classes)
    notes: tuple[str, ...] = ()
    if kind == "torchvision" and weights is None:
        notes = (
            f"{name} has random weights (nothing is downloaded); pass --weights FILE with a "
            "state_dict to explain a trained model",
        )
    n_parameters = sum(p.numel() for p in model.parameters())
    return LoadedModel(model, name, kind, n_parameters, n_classes, notes)


def _classifiers() -> list[str]:
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def _torchvision(spec: str, num_classes: int | None) -> nn.Module:
    import torchvision

    name = spec.split(":", 1)[1].lower()
    if name not in _classifiers():
        every = torchvision.models.list_models()
        if name in every:
            raise ValueError(f"--model {spec} is not an image classification model")
        close = difflib.get_close_matches(name, every, n=4)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ValueError(
            f"--model {spec}: unknown torchvision model ({hint}see "
            "torchvision.models.list_models())"
        )
    kwargs = {"num_classes": num_classes} if num_classes else {}
    try:
        return torchvision.models.get_model(name, weights=None, **kwargs)
    except Exception as e:  # any builder failure is the user's flags
        raise ValueError(f"--model {spec} cannot be built ({_short(e)})") from None


def _factory(spec: str, num_classes: int | None) -> nn.Module:
    module_name, attr = spec.split(":", 1)
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as e:  # not found, or the user's module raised while importing
        name = getattr(e, "name", None) if isinstance(e, ModuleNotFoundError) else None
        why = f"importing {module_name} failed ({_short(e)})"
        if name and (module_name + ".").startswith(name + "."):
            why = f"no module named {name!r} (searched the current folder and sys.path)"
        raise ValueError(f"--model {spec}: {why}") from None
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)
    parts = attr.split(".")
    for i, part in enumerate(parts):
        if not hasattr(obj, part):
            where = f"{module_name}:{'.'.join(parts[:i])}" if i else f"module {module_name}"
            raise ValueError(f"--model {spec}: {where} has no attribute {part!r}")
        obj = getattr(obj, part)
    if not isinstance(obj, nn.Module):
        if not callable(obj):
            raise ValueError(f"--model {spec} is a {type(obj).__name__}, not a callable")
        kwargs = {"num_classes": num_classes} if num_classes else {}
        call = f"{spec}({', '.join(f'{k}={v}' for k, v in kwargs.items())})"
        try:
            obj = obj(**kwargs)
        except Exception as e:  # the user's factory raised
            raise ValueError(f"--model: {call} failed ({_short(e)})") from None
        if not isinstance(obj, nn.Module):
            raise ValueError(
                f"--model: {call} returned a {type(obj).__name__}, not a torch.nn.Module"
            )
    return obj


def _load_file(path: Path) -> tuple[nn.Module, str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in 2.9+
            return torch.jit.load(str(path), map_location="cpu"), "torchscript"
    except Exception:  # not TorchScript: try torch.export below
        pass
    if _is_export_archive(path):
        try:
            return torch.export.load(str(path)).module(), "export"
        except Exception as e:
            raise ValueError(f"--model {path}: torch.export.load failed ({_short(e)})") from None
    raise ValueError(
        f"--model {path} is neither a TorchScript (torch.jit.save) nor a torch.export "
        "(torch.export.save) archive; for a state_dict use torchvision:NAME or "
        "pkg.module:factory with --weights FILE"
    )


def _is_export_archive(path: Path) -> bool:
    """Whether ``path`` is a torch.export archive (raises if it holds more than tensors).

    ``torch.export.load`` unpickles tensor subclasses and opaque constants, and retries the
    sample inputs with full pickle: such archives are refused before it runs.
    """
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        return False
    with zf:
        names = zf.namelist()
        if not any(n.rsplit("/", 1)[-1] == "archive_format" for n in names):
            return False
        try:
            for n in names:
                if n.endswith(("weights_config.json", "constants_config.json")):
                    for entry in json.loads(zf.read(n))["config"].values():
                        if entry["use_pickle"] or not entry["path_name"].startswith(
                            ("weight_", "tensor_")
                        ):
                            raise TypeError(entry["path_name"])
                elif n.endswith(".pt"):
                    torch.load(io.BytesIO(zf.read(n)), map_location="cpu", weights_only=True)
        except Exception:  # a pickled object, or a corrupt archive
            raise ValueError(
                f"--model {path} is a torch.export archive holding pickled Python objects (or "
                "a corrupt one); only tensors are loaded"
            ) from None
    return True


def _load_weights(model: nn.Module, path: Path, name: str) -> None:
    if not path.is_file():
        raise ValueError(f"--weights {path} does not exist")
    try:
        obj = safe_torch_load(path)
    except Exception as e:  # corrupt file or refused pickle
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)(\. |\n|$)", str(e))
        why = detail.group(1) if detail else _short(e)
        raise ValueError(
            f"--weights {path} cannot be read by torch.load(weights_only=True): {why}"
        ) from None
    state = _state_dict_in(obj)
    if state is None:
        what = (
            f"a dict with keys {', '.join(map(repr, list(obj)[:4]))}"
            if isinstance(obj, Mapping)
            else f"a {type(obj).__name__}"
        )
        raise ValueError(
            f"--weights {path} does not hold a state_dict (tensors by name, or one under "
            f"'state_dict' or 'model'); it holds {what}"
        )
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    sizes = [k for k in own if k in state and own[k].shape != state[k].shape]
    parts = []
    for keys, what in ((missing, "missing"), (unexpected, "unexpected")):
        if keys:
            more = ", ..." if len(keys) > 3 else ""
            parts.append(f"{_n(len(keys), what + ' key')} ({', '.join(keys[:3])}{more})")
    if sizes:
        items = [f"{k}: file {_shape(state[k])}, model {_shape(own[k])}" for k in sizes[:3]]
        more = f"; and {len(sizes) - 3} more" if len(sizes) > 3 else ""
        parts.append(f"size mismatch for {'; '.join(items)}{more}")
    if parts:
        raise ValueError(f"--weights {path} does not match {name}: {', '.join(parts)}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"--weights {path} does not match {name}: {_short(e)}") from None


def _state_dict_in(obj: Any) -> dict[str, torch.Tensor] | None:
    """``obj`` if it is a state_dict, else the one under ``"state_dict"`` or ``"model"``."""
    if not isinstance(obj, Mapping):
        return None
    if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        return dict(obj)
    inner = [_state_dict_in(obj[k]) for k in ("state_dict", "model") if k in obj]
    inner = [x for x in inner if x is not None]
    return inner[0] if len(inner) == 1 else None


def _probe(model: nn.Module, name: str, kind: str, size: int, num_classes: int | None) -> int:
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, 3, size, size))
    except Exception as e:  # any failure of the user's forward
        hint = (
            " (export it at this size, with a dynamic batch dimension)" if kind == "export" else ""
        )
        raise ValueError(
            f"--model {name} fails on a 1x3x{size}x{size} input: {_short(e)}{hint}"
        ) from None
    ok = isinstance(out, torch.Tensor) and out.is_floating_point() and out.ndim == 2
    if not (ok and out.shape[0] == 1 and out.shape[1] >= 2):
        got = f"a {type(out).__name__}"
        if isinstance(out, torch.Tensor):
            got = f"a {str(out.dtype)[6:]} tensor of shape {_shape(out)}"
        raise ValueError(
            f"--model {name} must return logits of shape (N, classes) with at least 2 classes, "
            f"got {got} for a 1x3x{size}x{size} input"
        )
    if num_classes is not None and out.shape[1] != num_classes:
        raise ValueError(
            f"--num-classes is {num_classes} but --model {name} returns {out.shape[1]} classes"
        )
    return int(out.shape[1])


def _shape(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape)) or "scalar"


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _short(e: BaseException) -> str:
    """``Type: first line of the message`` (at most 200 characters)."""
    line = (str(e).strip().splitlines() or [""])[0]
    line = line if len(line) <= 200 else line[:197] + "..."
    return f"{type(e).__name__}: {line}" if line else type(e).__name__
