"""``captum-ext attribute``: one method over a benchmark split, resumable, on 1 or 2 processes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from captum_ext.benchmark.training import load_data
from captum_ext.cli import main
from captum_ext.dataset_attribution import AttributionShards
from captum_ext.report.methods import available_methods

N = 40


def _batch(trained) -> tuple[torch.Tensor, torch.Tensor]:
    ds = load_data(trained.config, "test")
    return torch.stack([ds[i][0] for i in range(N)]), torch.tensor([ds[i][1] for i in range(N)])


def _cli(out, method, *extra) -> list[str]:
    return [
        "attribute", "--method", method, "--out", str(out), "--n-images", str(N),
        "--chunk-size", "16", "--batch-size", "8", "--no-progress", *extra,
    ]  # fmt: skip


def test_attribute_equals_the_registry_method_and_resumes(shapes_model, tmp_path, capsys):
    out = tmp_path / "sal"
    assert main(_cli(out, "Saliency")) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["n"] == N and info["world_size"] == 1
    x, y = _batch(shapes_model)
    direct = available_methods()["Saliency"].run(shapes_model.model, x, y, quick=False)
    shards = AttributionShards(out)
    torch.testing.assert_close(shards.load(), direct)
    assert torch.equal(shards.targets(), y)
    # lose a chunk and the index (a crash): the same command recomputes exactly that chunk
    first = torch.load(out / "chunk-000000.pt", weights_only=True)["attributions"]
    (out / "chunk-000001.pt").unlink()
    (out / "index.json").unlink()
    assert main(_cli(out, "Saliency")) == 0
    again = AttributionShards(out)
    torch.testing.assert_close(again.load(), direct)
    kept = torch.load(out / "chunk-000000.pt", weights_only=True)["attributions"]
    assert all(torch.equal(a, b) for a, b in zip(first, kept))
    assert sorted(again.ids.tolist()) == list(range(N))


def test_attribute_under_torchrun_equals_one_process(shapes_model, tmp_path):
    """SmoothGrad draws noise: two processes give one process's maps only because every batch
    draws from (seed, chunk, first id), not from a stream shared across chunks (issue 15, 9)."""
    one, two, other = tmp_path / "one", tmp_path / "two", tmp_path / "other"
    assert main(_cli(one, "SmoothGrad", "--quick")) == 0
    assert main(_cli(other, "SmoothGrad", "--quick", "--seed", "1")) == 0
    maps = AttributionShards(one).load()
    assert (maps - AttributionShards(other).load()).abs().max() > 1e-3  # the seed matters
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "captum_ext", *_cli(two, "SmoothGrad", "--quick"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(s) for s in proc.stdout.splitlines() if s.startswith("{")]
    assert len(lines) == 1 and lines[0]["world_size"] == 2
    index = json.loads((two / "index.json").read_text())
    assert index["world_size"] == 2
    assert torch.equal(AttributionShards(two).load(), maps)


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--method", "Nope"], "--method"),
        (["--method", "Saliency", "--n-images", "0"], "--n-images"),
        (["--method", "Saliency", "--chunk-size", "0"], "--chunk-size"),
        (["--method", "Saliency", "--batch-size", "0"], "--batch-size"),
        (["--method", "Saliency", "--split", "val"], "--split"),
        (["--method", "Saliency", "--device", "tpu"], "--device"),
        (["--method", "Saliency", "--seed", "-1"], "--seed"),
    ],
)
def test_attribute_bad_arguments(extra, needle, tmp_path, capsys):
    assert main(["attribute", "--out", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("captum-ext: error:") and needle in err and "\n" not in err


def test_attribute_out_must_be_a_folder(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["attribute", "--method", "Saliency", "--out", str(f)]) == 2
    assert "is a file" in capsys.readouterr().err


def test_attribute_setting_conflicts_are_one_line_exit_2(shapes_model, tmp_path, capsys):
    out = tmp_path / "o"
    base = ["attribute", "--method", "Saliency", "--out", str(out), "--n-images", "4"]
    assert main([*base, "--no-progress"]) == 0
    capsys.readouterr()
    # resuming with other settings is refused by attribute_dataset (a ValueError): one line
    assert main([*base, "--no-progress", "--chunk-size", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("captum-ext: error: out:") and err.count("\n") == 1, err
    assert "other settings" in err and "Traceback" not in err
