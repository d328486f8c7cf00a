"""Saving and loading claim results: ``claims.json``, written atomically, validated on load."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

from captum_ext._io import atomic_write_text
from captum_ext.claims._base import VERDICTS, ClaimResult, Outcome

__all__ = ["RESULTS_FILE", "load_results", "save_results"]

#: File name of the results inside a claims folder.
RESULTS_FILE = "claims.json"
#: Format version written into the file; a file of another version is refused on load.
FORMAT = 1
_TEXT = ("name", "paper", "statement", "paper_value", "ours", "verdict", "rule", "why")


def save_results(results: Sequence[ClaimResult], folder: Path, meta: dict | None = None) -> Path:
    """Write ``folder/claims.json`` atomically (with the user's umask); returns its path."""
    body = {
        "format": FORMAT,
        "meta": dict(meta or {}),
        "claims": [r.as_dict() for r in results],
    }
    return atomic_write_text(json.dumps(body, indent=2), folder / RESULTS_FILE)


def _finite_numbers(value: object, where: str) -> dict[str, float | list[float]]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: numbers must be an object")
    out: dict[str, float | list[float]] = {}
    for key, v in value.items():
        values = v if isinstance(v, list) else [v]
        ok = all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
            for x in values
        )
        if not ok:
            raise ValueError(f"{where}: numbers[{key!r}] must be finite numbers")
        out[str(key)] = [float(x) for x in v] if isinstance(v, list) else float(v)
    return out


def _figure_name(value: object, folder: Path, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or os.path.basename(value) != value or value in ("", ".", ".."):
        raise ValueError(f"{where}: figure must be a plain file name, got {value!r}")
    if not (folder / value).is_file():
        raise ValueError(f"{where}: figure {value!r} is missing from {folder}")
    return value


def _result(entry: object, folder: Path, index: int) -> ClaimResult:
    where = f"claims[{index}]"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be an object")
    missing = [k for k in (*_TEXT, "numbers", "figure", "seconds") if k not in entry]
    if missing:
        raise ValueError(f"{where} lacks {', '.join(missing)}")
    if not all(isinstance(entry[k], str) for k in _TEXT):
        raise ValueError(f"{where}: {', '.join(_TEXT)} must be strings")
    if entry["verdict"] not in VERDICTS:
        raise ValueError(f"{where}: verdict must be one of {VERDICTS}, got {entry['verdict']!r}")
    seconds = entry["seconds"]
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{where}: seconds must be a finite number >= 0")
    outcome = Outcome(
        paper_value=entry["paper_value"],
        ours=entry["ours"],
        verdict=entry["verdict"],
        rule=entry["rule"],
        why=entry["why"],
        numbers=_finite_numbers(entry["numbers"], where),
        figure=_figure_name(entry["figure"], folder, where),
    )
    return ClaimResult(entry["name"], entry["paper"], entry["statement"], outcome, float(seconds))


def load_results(folder: Path) -> list[ClaimResult]:
    """Read and validate ``folder/claims.json`` (written by :func:`save_results`).

    Raises:
        ValueError: The file is missing, is not JSON, has another format version, or an entry
            lacks a field, has a verdict outside :data:`VERDICTS`, a non-finite number, or a
            figure that is not a plain file name present in ``folder``.
    """
    path = folder / RESULTS_FILE
    if not path.is_file():
        raise ValueError(f"no {RESULTS_FILE} in {folder} (run: captum-ext claims --out {folder})")
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise ValueError(f"{path} is not a claims file of format {FORMAT}")
    entries = body.get("claims")
    if not isinstance(entries, list):
        raise ValueError(f"{path}: 'claims' must be a list")
    return [_result(e, folder, i) for i, e in enumerate(entries)]
