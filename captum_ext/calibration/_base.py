"""Shared machinery of the calibrations: the filter layout they were fitted on, save and load.

A saved calibration is a ``torch.save`` of a dict holding only tensors, strings and ints (loaded
with ``weights_only=True``), written atomically, with a format version and the layout (layer
names, per-layer filter counts and a layout hash) that is checked on load and on use.

:meth:`Calibration.load` validates the whole file before using it: a damaged file (truncated,
empty, not a calibration, an unknown kind, a missing key, a tensor of the wrong shape, dtype or
with non-finite values) raises ``ValueError`` naming the file and the problem. Each kind checks
its own state in :meth:`Calibration._check_state`, with the helpers :func:`require_keys`,
:func:`state_int`, :func:`state_float` and :func:`state_tensor`.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Any, TypeVar

import torch
from torch import Tensor

from captum_ext._io import atomic_torch_save, safe_torch_load
from captum_ext.calibration._state_checks import (
    bad_file,
    require_keys,
    state_int,
)

FORMAT_VERSION = 1

#: The keys every saved calibration has, besides those of its kind's :meth:`state_dict`.
HEADER_KEYS = ("kind", "n_total", "layer_names", "layer_counts", "layout_hash")


def _check_layout(state: dict[str, Any], path: str | os.PathLike) -> Layout:
    """The layout of a loaded file: names (str), counts (ints >= 0), hash (str), same lengths."""
    names, counts, layout_hash = state["layer_names"], state["layer_counts"], state["layout_hash"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise bad_file(path, "'layer_names' must be a list of str")
    if not isinstance(counts, list) or not all(
        isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts
    ):
        raise bad_file(path, "'layer_counts' must be a list of ints >= 0")
    if len(names) != len(counts):
        raise bad_file(
            path, f"{len(names)} layer_names but {len(counts)} layer_counts (a wrong layout)"
        )
    if not isinstance(layout_hash, str):
        raise bad_file(path, f"'layout_hash' must be a str, got {type(layout_hash).__name__}")
    return Layout(names, counts, layout_hash)


def _read_file(path: str | os.PathLike) -> dict[str, Any]:
    """``safe_torch_load(path)``: a dict of the current format, else ValueError naming ``path``.

    A file that cannot be opened (missing, a folder, no permission) raises the ``OSError`` of
    ``open``, which names it; any error of ``torch.load`` on its bytes (``RuntimeError``,
    ``EOFError``, ``UnpicklingError``, even ``OSError: Invalid argument`` for a cut zip) is a
    damaged file.
    """
    try:
        state = safe_torch_load(path)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as err:  # noqa: BLE001 - truncated, empty, text: torch.load's errors vary
        raise bad_file(
            path,
            f"it cannot be read by torch.load(weights_only=True) ({type(err).__name__}: {err}); "
            "it is truncated, empty or was not written by Calibration.save",
        ) from err
    if not isinstance(state, dict) or "format_version" not in state:
        raise ValueError(
            f"{path} is not a saved captum-ext calibration (not a dict with a format_version)"
        )
    if state["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"{path}: unsupported calibration format version {state['format_version']!r} "
            f"(this captum-ext reads version {FORMAT_VERSION})"
        )
    return state


class Layout:
    """Layer names, per-layer filter counts and a layout hash of a filter selection."""

    def __init__(self, layer_names: list[str], layer_counts: list[int], layout_hash: str) -> None:
        self.layer_names = list(layer_names)
        self.layer_counts = [int(c) for c in layer_counts]
        self.layout_hash = str(layout_hash)

    @property
    def n_filters(self) -> int:
        return sum(self.layer_counts)

    def check(self, other: Layout, what: str = "model") -> None:
        """Raise ValueError if ``other`` differs (names, counts or hash)."""
        if (
            self.layer_names != other.layer_names
            or self.layer_counts != other.layer_counts
            or self.layout_hash != other.layout_hash
        ):
            raise ValueError(
                f"the calibration was fitted on a different {what} or layer selection: "
                f"it has {len(self.layer_names)} layers / {self.n_filters} filters "
                f"(hash {self.layout_hash}), the {what} has {len(other.layer_names)} layers / "
                f"{other.n_filters} filters (hash {other.layout_hash})"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer_names": self.layer_names,
            "layer_counts": self.layer_counts,
            "layout_hash": self.layout_hash,
        }


class Calibration(ABC):
    """Base class: streaming ``begin``/``update``/``finalize``, ``score``, ``rank``, persistence.

    Subclasses implement the streaming hooks (:meth:`update`, :meth:`finalize`,
    :meth:`finalize_distributed`) and the persistence hooks (:meth:`state_dict`,
    :meth:`load_state_dict`).
    """

    kind = "base"

    def __init__(self) -> None:
        self.layout: Layout | None = None
        self.n_total: int | None = None
        self.fitted = False

    def begin(self, layout: Layout, n_total: int | None = None) -> None:
        """Start a streaming fit for ``layout``; ``n_total`` is the reference size if known."""
        self.layout = layout
        self.n_total = n_total
        self.fitted = False

    def config(self) -> dict[str, Any]:
        """The settings that must be equal for two fits to be mergeable (kind and options)."""
        return {"kind": self.kind}

    @abstractmethod
    def update(self, profiles: Tensor) -> None:
        """Add a batch of reference profiles ``(n, n_filters)``."""

    @abstractmethod
    def finalize(self) -> Calibration:
        """Turn the streamed state into the fitted calibration; returns self."""

    @abstractmethod
    def finalize_distributed(self, ctx: Any) -> Calibration:
        """Merge every rank's streamed state (see :mod:`captum_ext.calibration.distributed`)."""

    @abstractmethod
    def score(self, profiles: Tensor) -> Any:
        """Calibrated scores of profiles ``(N, n_filters)`` (each kind returns its own type)."""

    @abstractmethod
    def rank(self, profiles: Tensor, k: int | None = None) -> Tensor | list[Tensor]:
        """Flat filter rankings of profiles ``(N, n_filters)``, most salient first.

        Kinds may take further keyword options (see each kind's ``rank``).
        """

    def _check_profiles(self, profiles: Tensor) -> Tensor:
        if not isinstance(profiles, Tensor) or profiles.dim() != 2:
            raise ValueError(
                "profiles must be a (N, n_filters) tensor, got "
                f"{getattr(profiles, 'shape', profiles)}"
            )
        if self.layout is not None and profiles.shape[1] != self.layout.n_filters:
            raise ValueError(
                f"profiles have {profiles.shape[1]} filters but the calibration was fitted on "
                f"{self.layout.n_filters}: a different model or layer selection"
            )
        if not torch.isfinite(profiles).all():
            bad = (~torch.isfinite(profiles)).nonzero()
            raise ValueError(
                f"profiles contain {len(bad)} non-finite values (first at example "
                f"{int(bad[0, 0])}, filter {int(bad[0, 1])})"
            )
        return profiles

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise ValueError(f"{type(self).__name__} is not fitted: call fit() first (or load())")

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """The fitted state: tensors and plain numbers only."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the fitted state written by :meth:`state_dict`."""

    @classmethod
    @abstractmethod
    def _check_state(
        cls, state: dict[str, Any], n_filters: int, n_total: int, path: str | os.PathLike
    ) -> None:
        """Check a loaded file's :meth:`state_dict` entries before :meth:`load_state_dict`.

        Args:
            state: The loaded file (header checked: format, kind, layout, ``n_total``).
            n_filters: Filters of the file's layout: per-filter tensors need this many entries.
            n_total: The file's reference size.
            path: The file, to name in errors.

        Raises:
            ValueError: A missing key, a wrong type, shape or dtype, or non-finite values where
                the fit never writes them (use :func:`bad_file` and the ``state_*`` helpers).
        """

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted calibration atomically (tensors, strings and ints only)."""
        self._require_fitted()
        assert self.layout is not None  # a fitted calibration has its layout (begin or load)
        state = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "n_total": int(self.n_total or 0),
            **self.layout.to_dict(),
            **self.state_dict(),
        }
        atomic_torch_save(state, path)

    @classmethod
    def load(cls, path: str | os.PathLike, layout: Layout | None = None) -> Calibration:
        """Load a saved calibration (``weights_only=True``); check it against ``layout``.

        The whole file is validated before it is used (see the module docstring).

        Args:
            path: A file written by :meth:`save`.
            layout: If given, the layout the calibration must have been fitted on.

        Returns:
            The calibration, of the kind saved in the file.

        Raises:
            ValueError: The file is damaged (truncated, empty, not a calibration, unknown
                ``kind``, a missing key, a wrong shape, dtype or non-finite state: the message
                names the file and the problem), holds another kind than ``cls``, or was
                fitted on another ``layout``.
            OSError: The file cannot be opened (e.g. it does not exist).
        """
        state = _read_file(path)
        require_keys(state, HEADER_KEYS, path)
        kind = state["kind"]
        if not isinstance(kind, str) or kind not in _KINDS:
            known = ", ".join(repr(k) for k in sorted(_KINDS))
            raise bad_file(path, f"unknown calibration kind {kind!r} (known kinds: {known})")
        if cls.kind != "base" and kind != cls.kind:
            raise ValueError(f"{path} holds a {kind!r} calibration, not {cls.kind!r}")
        target = cls if cls.kind != "base" else _KINDS[kind]
        file_layout = _check_layout(state, path)
        n_total = state_int(state, "n_total", path, minimum=0)
        target._check_state(state, file_layout.n_filters, n_total, path)
        obj = target.__new__(target)
        Calibration.__init__(obj)
        obj.layout = file_layout
        obj.n_total = n_total
        obj.load_state_dict(state)
        obj.fitted = True
        if layout is not None:
            obj.layout.check(layout)
        return obj


_KINDS: dict[str, type[Calibration]] = {}

_CalibrationType = TypeVar("_CalibrationType", bound="type[Calibration]")


def register_kind(cls: _CalibrationType) -> _CalibrationType:
    """Class decorator: make ``Calibration.load`` able to rebuild ``cls`` from its ``kind``."""
    _KINDS[cls.kind] = cls
    return cls
