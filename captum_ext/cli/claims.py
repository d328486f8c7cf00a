"""``captum-ext claims``: run each paper's claim experiment and write a page with the verdicts.

``captum-ext claims --out DIR`` runs every experiment of :mod:`captum_ext.claims` at its default
size (minutes each on 2 CPU cores) and writes ``DIR/index.html``, ``DIR/claims.json`` and one
figure per claim. ``--only NAME ...`` runs some of them, ``--quick`` the reduced size of the
tests, ``--full`` a size closer to the papers'. ``captum-ext report --claims DIR`` then shows
the table in the report. The exit status is 1 when an experiment raised (the others still run
and are written).

Examples::

    captum-ext claims --out claims/
    captum-ext claims --out claims/ --only leg_consistency caso_theorem5 --quick
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
import traceback
from pathlib import Path
from typing import Literal

import torch

from captum_ext.cli.launch import check_out_folder

Size = Literal["test", "default", "full"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``claims`` subcommand."""
    cl = sub.add_parser(
        "claims",
        help="run each paper's central claim as an experiment and write the verdicts",
        description=(
            "Run the claim experiments on the embedded benchmark and write DIR/index.html, "
            "DIR/claims.json and one figure per claim."
        ),
    )
    cl.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    cl.add_argument("--only", nargs="+", default=None, help="claim names (default: all)")
    size = cl.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="the reduced size used by the tests")
    size.add_argument("--full", action="store_true", help="closer to the papers (much longer)")
    cl.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    cl.add_argument("--list", action="store_true", help="list the claims and exit")


def run(args: argparse.Namespace, usage_error: type) -> int:
    """Run the ``claims`` subcommand; returns the exit status."""
    from captum_ext.claims import CLAIMS, ClaimSettings, names_or_all, run_claim
    from captum_ext.claims.page import write_page
    from captum_ext.claims.results import save_results

    if args.list:
        for c in CLAIMS.values():
            print(f"{c.name}: {c.paper}. {c.statement}")
        return 0
    try:
        names = names_or_all(args.only)
    except ValueError as err:
        raise usage_error(f"--only: {err}") from None
    check_out_folder(args.out, usage_error)
    args.out.mkdir(parents=True, exist_ok=True)
    size: Size = "test" if args.quick else ("full" if args.full else "default")
    settings = ClaimSettings(size=size, out=args.out, seed=args.seed)
    results, failed = [], []
    start = time.perf_counter()
    for name in names:
        print(f"claim {name} ...", file=sys.stderr, flush=True)
        try:
            result = run_claim(name, settings)
        except Exception:  # report it and go on with the others
            traceback.print_exc()
            failed.append(name)
            continue
        o = result.outcome
        print(f"  {o.verdict}: {o.ours} ({result.seconds:.0f} s)", file=sys.stderr, flush=True)
        results.append(result)
    meta = {
        "date (UTC)": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "size": size,
        "seed": args.seed,
        "torch version": torch.__version__,
        "CPU threads": torch.get_num_threads(),
        "total time (s)": f"{time.perf_counter() - start:.1f}",
        "failed": ", ".join(failed) or "none",
    }
    save_results(results, args.out, meta)
    print(write_page(results, args.out, meta).resolve())
    for name in failed:
        print(f"captum-ext: claim {name} failed (traceback above)", file=sys.stderr)
    return 1 if failed else 0
