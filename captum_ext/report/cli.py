"""The ``captum-ext`` command.

``captum-ext calibrate --out FILE`` fits a ParameterSaliency calibration, also under ``torchrun``
(see :mod:`captum_ext.report.calibrate`); ``captum-ext attribute --method NAME --out DIR`` runs one
method over a benchmark split into resumable shards (:mod:`captum_ext.report.attribute_cmd`).

``captum-ext report --out DIR`` trains (or loads from the cache) a model of the embedded
benchmark, explains a few test images (some of them misclassified) with every registered
method, and writes ``DIR/index.html``, ``DIR/results.json`` and the PNG figures they show.

Bad arguments end with a one-line ``captum-ext: error: ...`` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from captum_ext.benchmark.models import MODELS
from captum_ext.benchmark.training import DATASETS
from captum_ext.report.attribute_cmd import add_parser as add_attribute_parser
from captum_ext.report.attribute_cmd import run as run_attribute
from captum_ext.report.calibrate import add_parser as add_calibrate_parser
from captum_ext.report.calibrate import run as run_calibrate


class UsageError(ValueError):
    """A bad command-line argument (reported in one line, exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise UsageError(message)


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="captum-ext", description="captum-ext command-line tools.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    rep = sub.add_parser("report", help="run every method on the embedded benchmark, write HTML")
    rep.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    rep.add_argument("--dataset", default="shapes", help=f"one of {', '.join(DATASETS)}")
    rep.add_argument("--model", default="small_cnn", help=f"one of {', '.join(MODELS)}")
    rep.add_argument(
        "--methods", nargs="+", default=None, help="registered method names (default: all)"
    )
    rep.add_argument(
        "--n-images",
        type=int,
        default=None,
        help="test images to explain (default 8; 4 with --quick)",
    )
    rep.add_argument("--quick", action="store_true", help="lighter method settings, 4 images")
    rep.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_calibrate_parser(sub)
    add_attribute_parser(sub)
    return parser


def _check_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UsageError(f"--out {str(out)!r} is not a writable folder ({err.strerror})") from err


def _report(args: argparse.Namespace) -> int:
    from captum_ext.report.registry import available_methods

    available = available_methods()
    if args.dataset not in DATASETS:
        raise UsageError(f"unknown --dataset {args.dataset!r}; choose from {', '.join(DATASETS)}")
    if args.model not in MODELS:
        raise UsageError(f"unknown --model {args.model!r}; choose from {', '.join(MODELS)}")
    names = args.methods or list(available)
    unknown = [m for m in names if m not in available]
    if unknown:
        raise UsageError(
            f"unknown --methods {', '.join(map(repr, unknown))}; choose from {', '.join(available)}"
        )
    n_images = args.n_images if args.n_images is not None else (4 if args.quick else 8)
    if n_images < 1:
        raise UsageError(f"--n-images must be at least 1, got {n_images}")
    _check_out(args.out)

    from captum_ext.report.runner import build_report_data
    from captum_ext.report.writer import write_report

    def log(msg: str) -> None:
        print(msg, file=sys.stderr)

    data = build_report_data(
        args.dataset, args.model, names, n_images, args.quick, not args.no_progress, log
    )
    page = write_report(data, args.out)
    failed = [r.name for r in data.results if r.error]
    for r in data.results:
        if r.error:
            log(f"warning: {r.name} failed: {r.error}")
    print(page.resolve())
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``captum-ext`` console script; returns the exit status."""
    try:
        args = _build_parser().parse_args(argv)
        if args.command == "calibrate":
            return run_calibrate(args, UsageError)
        if args.command == "attribute":
            return run_attribute(args, UsageError)
        return _report(args)
    except UsageError as err:
        print(f"captum-ext: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
