"""Run a test worker in N separate CPU processes joined by a Gloo process group.

Each rank is a fresh ``python`` process (as under ``torchrun``), started with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` in its environment and rendezvousing through a file store in a
temporary folder (no ports to race for). The worker is ``module:function`` (imported with the
``tests`` folder on ``sys.path``); it is called as ``function(rank, world_size, **kwargs)`` after
``init_process_group`` and should write what the test checks into files under a path it is given.

Imported by the tests through the ``tests`` folder that pytest puts on ``sys.path`` for
``conftest.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TESTS_DIR = Path(__file__).resolve().parent

_BOOT = """
import json, os, sys, datetime
sys.path.insert(0, {tests!r})
import torch.distributed as dist
spec = json.loads(os.environ["DIST_TEST_SPEC"])
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
dist.init_process_group(
    "gloo", init_method="file://" + spec["store"], rank=rank, world_size=world,
    timeout=datetime.timedelta(seconds=spec["pg_timeout"]),
)
import importlib
mod, fn = spec["target"].split(":")
try:
    getattr(importlib.import_module(mod), fn)(rank, world, **spec["kwargs"])
finally:
    if dist.is_initialized():
        dist.destroy_process_group()
"""


@dataclass
class RankResult:
    """Exit status and output of one rank."""

    rank: int
    returncode: int
    stdout: str
    stderr: str


def run_ranks(
    target: str,
    world_size: int,
    workdir: Path,
    timeout: float = 180.0,
    pg_timeout: float = 60.0,
    **kwargs: Any,
) -> list[RankResult]:
    """Start ``world_size`` ranks of ``target`` and wait for all of them (or kill them all).

    Args:
        target: ``"module:function"`` of a worker importable from the tests folder.
        world_size: Number of processes.
        workdir: A fresh folder for the file store.
        timeout: Seconds before every rank still running is killed (the test then fails).
        pg_timeout: The process group's collective timeout, in seconds.
        **kwargs: JSON-serialisable keyword arguments of the worker.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    store = workdir / f"store-{time.time_ns()}"
    spec = {
        "store": str(store),
        "target": target,
        "kwargs": kwargs,
        "pg_timeout": pg_timeout,
    }
    procs = []
    for rank in range(world_size):
        env = dict(os.environ)
        env.update(
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(world_size),
            DIST_TEST_SPEC=json.dumps(spec),
            OMP_NUM_THREADS="1",
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _BOOT.format(tests=str(TESTS_DIR))],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    deadline = time.monotonic() + timeout
    results = []
    for rank, p in enumerate(procs):
        try:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            out, err = p.communicate()
            err += f"\n[dist_launch] rank {rank} killed after {timeout} s"
        results.append(RankResult(rank, p.returncode, out, err))
    return results


def describe(results: list[RankResult]) -> str:
    """All ranks' exit codes and the tail of their stderr, for assertion messages."""
    return "\n".join(f"--- rank {r.rank} exit {r.returncode}\n{r.stderr[-3000:]}" for r in results)
