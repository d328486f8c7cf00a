"""``captum-ext calibrate`` on one process and under torchrun, and its argument errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from captum_ext.attr import ParameterSaliency
from captum_ext.benchmark.training import load_data
from captum_ext.calibration import Calibration, POTCalibration
from captum_ext.cli import main

N_REF = 120


def _reference(trained) -> tuple[torch.Tensor, torch.Tensor]:
    ds = load_data(trained.config, "test")
    x = torch.stack([ds[i][0] for i in range(N_REF)])
    y = torch.tensor([ds[i][1] for i in range(N_REF)])
    return x, y


def test_calibrate_single_process_equals_direct_statistics(shapes_model, tmp_path, capsys):
    out = tmp_path / "z.pt"
    assert main(["calibrate", "--out", str(out), "--n-ref", str(N_REF), "--no-progress"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["world_size"] == 1 and info["n_total"] == N_REF
    cal = Calibration.load(out)
    # an independent two-pass mean / unbiased std of the profiles of the same images
    ps = ParameterSaliency(shapes_model.model)
    prof = ps.profiles(*_reference(shapes_model)).double()
    torch.testing.assert_close(cal.mean, prof.mean(0), rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(cal.std, prof.std(0), rtol=1e-6, atol=1e-12)


def test_calibrate_under_torchrun_equals_one_process(shapes_model, tmp_path):
    out = tmp_path / "pot.pt"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "captum_ext", "calibrate", "--calibration", "pot", "--level", "0.8",
        "--n-ref", str(N_REF), "--batch-size", "16", "--out", str(out), "--no-progress",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(s) for s in proc.stdout.splitlines() if s.startswith("{")]
    assert len(lines) == 1, proc.stdout  # rank 0 reports, once
    assert lines[0]["world_size"] == 2 and lines[0]["n_total"] == N_REF
    assert lines[0]["bytes_sent"] > 0
    dist_cal = Calibration.load(out)
    ps = ParameterSaliency(shapes_model.model)
    x, y = _reference(shapes_model)
    single = ps.fit([(x, y)], POTCalibration(level=0.8))
    # profiles are float32 and batched differently on each rank: equal up to float32 rounding
    torch.testing.assert_close(dist_cal.threshold, single.threshold, rtol=1e-5, atol=1e-9)
    assert torch.equal(dist_cal.n_peaks, single.n_peaks)
    fitted = single.n_peaks >= single.min_peaks
    assert fitted.sum() > 10  # most filters get a GPD fit
    torch.testing.assert_close(dist_cal.xi[fitted], single.xi[fitted], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--calibration", "evt"], "--calibration"),
        (["--level", "1.5"], "--level"),
        (["--n-ref", "1"], "--n-ref"),
        (["--batch-size", "0"], "--batch-size"),
        (["--device", "tpu"], "--device"),
        (["--model", "vgg"], "--model"),
        (["--dataset", "imagenet"], "--dataset"),
    ],
)
def test_calibrate_bad_arguments(args, needle, tmp_path, capsys):
    assert main(["calibrate", "--out", str(tmp_path / "c.pt"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("captum-ext: error:") and needle in err and "\n" not in err


def test_calibrate_out_must_be_a_file(tmp_path, capsys):
    assert main(["calibrate", "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_calibrate_checks_its_output_before_any_work(tmp_path, capsys, monkeypatch):
    import captum_ext.cli.calibrate as calibrate_cmd

    def no_work(*args, **kwargs):
        raise AssertionError("the model was trained or loaded before --out was checked")

    monkeypatch.setattr(calibrate_cmd, "train_once", no_work)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["calibrate", "--out", str(blocker / "cal.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("captum-ext: error: --out") and err.count("\n") == 1, err
    assert "not a writable folder" in err and not (blocker.parent / "cal.pt").exists()


def test_calibrate_says_when_n_ref_is_cut_to_the_split(shapes_model, tmp_path, capsys, monkeypatch):
    from torch.utils.data import Subset

    import captum_ext.cli.calibrate as calibrate_cmd

    real = calibrate_cmd.load_data
    monkeypatch.setattr(
        calibrate_cmd, "load_data", lambda *a, **k: Subset(real(*a, **k), range(40))
    )
    out = tmp_path / "z.pt"
    assert main(["calibrate", "--out", str(out), "--n-ref", "500", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "--n-ref 500 is more than the 40 images of the test split" in captured.err
    assert json.loads(captured.out.strip().splitlines()[-1])["n_total"] == 40
