"""The ``captum-ext`` command: its parser, the ``report`` subcommand and :func:`main`.

``captum-ext calibrate --out FILE`` fits a ParameterSaliency calibration, also under ``torchrun``
(see :mod:`captum_ext.cli.calibrate`); ``captum-ext attribute --method NAME --out DIR`` runs one
method over a benchmark split into resumable shards (:mod:`captum_ext.cli.attribute`);
``captum-ext claims --out DIR`` runs each paper's claim experiment (:mod:`captum_ext.cli.claims`).

``captum-ext report --out DIR`` explains images with every method of the report and writes
``DIR/index.html``, ``DIR/results.json`` and the figures they show: the user's model and images
(``--model torchvision:resnet18 --weights w.pt --images imgs/ [--labels l.csv --masks m/]``), or,
without ``--images``, a model of the embedded benchmark (trained once and cached) on a few of
its test images, some of them misclassified. ``--claims DIR`` adds the table written by
``captum-ext claims --out DIR``.

Bad arguments end with a one-line ``captum-ext: error: ...`` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from captum_ext.benchmark.models import MODELS
from captum_ext.benchmark.training import DATASETS
from captum_ext.cli.attribute import add_parser as add_attribute_parser
from captum_ext.cli.attribute import run as run_attribute
from captum_ext.cli.calibrate import add_parser as add_calibrate_parser
from captum_ext.cli.calibrate import run as run_calibrate
from captum_ext.cli.claims import add_parser as add_claims_parser
from captum_ext.cli.claims import run as run_claims
from captum_ext.cli.launch import check_out_folder
from captum_ext.report.method_spec import PRESETS

if TYPE_CHECKING:
    from captum_ext.report.runner import ReportInputs


class UsageError(ValueError):
    """A bad command-line argument (reported in one line, exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, no usage dump
        raise UsageError(message)


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="captum-ext", description="captum-ext command-line tools.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    rep = sub.add_parser(
        "report",
        help="explain images with every method and write an HTML report",
        description=(
            "Explain a model's predictions with every registered method, score the maps and "
            "write DIR/index.html, DIR/results.json and the figures. Without --images it runs "
            "on the embedded benchmark."
        ),
    )
    rep.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    rep.add_argument(
        "--model",
        default="small_cnn",
        help=f"a benchmark model ({', '.join(MODELS)}), torchvision:NAME, pkg.module:factory, "
        "or a file saved with torch.jit.save or torch.export.save",
    )
    rep.add_argument("--weights", type=Path, help="state_dict for torchvision: / factory models")
    rep.add_argument("--num-classes", type=int, help="number of classes of the model")
    rep.add_argument("--images", type=Path, help="folder of PNG/JPEG images (or class folders)")
    rep.add_argument("--labels", type=Path, help="CSV of filename,label (class index)")
    rep.add_argument("--masks", type=Path, help="folder of binary object masks, same names")
    rep.add_argument("--size", type=int, default=224, help="resize/centre-crop side (224)")
    rep.add_argument(
        "--normalize",
        default=None,
        help="imagenet | none | MEAN,STD (default: imagenet for torchvision: models, else none)",
    )
    rep.add_argument("--dataset", default="shapes", help=f"benchmark: one of {', '.join(DATASETS)}")
    rep.add_argument(
        "--methods", nargs="+", default=None, help="registered method names (default: all)"
    )
    rep.add_argument(
        "--preset",
        default=PRESETS[0],
        choices=PRESETS,
        help="fast: sized for 224x224 on a CPU (the defaults on images of 64x64 pixels or "
        "fewer); paper: the papers' settings",
    )
    rep.add_argument(
        "--n-images",
        type=int,
        default=None,
        help="images to explain (default 8; 4 with --quick); with --images, the first N by name",
    )
    rep.add_argument("--seed", type=int, default=0, help="seed of the randomised methods")
    rep.add_argument("--quick", action="store_true", help="lighter settings for tests and demos")
    rep.add_argument(
        "--claims",
        type=Path,
        default=None,
        help="a folder written by 'captum-ext claims': adds its table to the report",
    )
    rep.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_calibrate_parser(sub)
    add_attribute_parser(sub)
    add_claims_parser(sub)
    return parser


_USER_ONLY = ("weights", "num_classes", "labels", "masks", "normalize")


def _inputs(args: argparse.Namespace, log) -> ReportInputs:
    from captum_ext.report.runner import benchmark_inputs

    benchmark = args.model in MODELS
    n_images = args.n_images if args.n_images is not None else (4 if args.quick else 8)
    if args.images is None:
        if not benchmark:
            raise UsageError(f"--model {args.model!r} needs --images DIR (your images)")
        given = [f"--{k.replace('_', '-')}" for k in _USER_ONLY if getattr(args, k) is not None]
        if given:
            raise UsageError(f"{', '.join(given)} need --images DIR")
        if args.dataset not in DATASETS:
            raise UsageError(
                f"unknown --dataset {args.dataset!r}; choose from {', '.join(DATASETS)}"
            )
        return benchmark_inputs(args.dataset, args.model, n_images, log)
    if benchmark:
        raise UsageError(
            f"--images needs a model of your own (torchvision:NAME, pkg.module:factory or a "
            f"saved file), not the benchmark model {args.model!r}"
        )
    from captum_ext.report.user_inputs import user_inputs

    normalize = args.normalize
    if normalize is None:
        normalize = "imagenet" if args.model.startswith("torchvision:") else "none"
    try:
        return user_inputs(
            args.model,
            args.images,
            weights=args.weights,
            num_classes=args.num_classes,
            labels=args.labels,
            masks=args.masks,
            size=args.size,
            normalize=normalize,
            n_images=n_images,
            log=log,
        )
    except ValueError as err:
        raise UsageError(str(err)) from err


def _report(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from captum_ext.report.methods import available_methods

    available = available_methods()
    names = args.methods or list(available)
    unknown = [m for m in names if m not in available]
    if unknown:
        raise UsageError(
            f"unknown --methods {', '.join(map(repr, unknown))}; choose from {', '.join(available)}"
        )
    if args.n_images is not None and args.n_images < 1:
        raise UsageError(f"--n-images must be at least 1, got {args.n_images}")
    if args.model not in MODELS and ":" not in args.model and not Path(args.model).exists():
        raise UsageError(
            f"unknown --model {args.model!r}; choose from {', '.join(MODELS)}, torchvision:NAME, "
            "pkg.module:factory or an existing TorchScript / torch.export file"
        )
    check_out_folder(args.out, UsageError)
    if args.claims is not None:
        from captum_ext.claims.results import load_results

        try:
            load_results(args.claims)
        except ValueError as err:
            raise UsageError(f"--claims: {err}") from None

    from captum_ext.report.runner import build_report_data
    from captum_ext.report.writer import write_report

    def log(msg: str) -> None:
        print(msg, file=sys.stderr)

    inputs = _inputs(args, log)
    for w in inputs.warnings:
        log(f"warning: {w}")
    data = build_report_data(
        inputs,
        [available[name] for name in names],
        preset=args.preset,
        quick=args.quick,
        seed=args.seed,
        show_progress=not args.no_progress,
        log=log,
    )
    data.claims_dir = args.claims
    command = shlex.join(["captum-ext", *argv])
    page = write_report(
        data, args.out, command=command, show_progress=not args.no_progress, log=log
    )
    for r in data.results:
        if r.error:
            log(f"warning: {r.name} failed: {r.error}")
    print(page.resolve())
    return 1 if any(r.error for r in data.results) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``captum-ext`` console script; returns the exit status."""
    try:
        args = _build_parser().parse_args(argv)
        if args.command == "calibrate":
            return run_calibrate(args, UsageError)
        if args.command == "attribute":
            return run_attribute(args, UsageError)
        if args.command == "claims":
            return run_claims(args, UsageError)
        return _report(args, sys.argv[1:] if argv is None else list(argv))
    except UsageError as err:
        print(f"captum-ext: error: {err}", file=sys.stderr)
        return 2
