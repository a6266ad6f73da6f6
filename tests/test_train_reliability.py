"""The training command under faults and bad input: validated numbers, the config
in force recorded, resumes that change options, optional outputs that fail, damaged
checkpoints, NaN on one DDP rank (README "Failure behaviour")."""
import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from deformgan import checkpoint as C
from deformgan import engine as E
from deformgan import train as T

from test_train import ROOT, _free_port, cfg, data  # noqa: F401 - the shared tiny config and data fixture


@pytest.mark.parametrize("flags,message", [
    (["--steps", "0"], "--steps must be an int >= 1, got 0"),
    (["--steps", "-5"], "--steps must be an int >= 1, got -5"),
    (["--save-every", "0"], "--save-every must be an int >= 1"),
    (["--batch-size", "0"], "--batch-size must be an int >= 1"),
    (["--sample-every", "-1"], "--sample-every must be an int >= 1"),
    (["--nn-kernel", "4"], "--nn-kernel must be an odd int >= 1"),
    (["--lr", "nan"], "--lr must be a number in (0, 1)"),
    (["--flip", "1.5"], "--flip must be a number in [0, 1]"),
    (["--width-mult", "0"], "--width-mult must be a number in (0, 16]"),
    (["--image-size", "0", "64"], "--image-size must be two ints >= 8"),
])
def test_every_cli_number_is_checked_with_the_flag_and_range_named(flags, message, capsys):
    with pytest.raises(SystemExit) as exc:
        T.build_config(flags)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_config_file_numbers_are_checked_too(tmp_path, capsys):
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps({"steps": "1000"}))  # a string where an int belongs
    with pytest.raises(SystemExit):
        T.build_config(["--config", str(conf)])
    assert f"--config {conf}: option 'steps' must be a whole number, got '1000' (str)" in capsys.readouterr().err
    conf.write_text(json.dumps({"steps": 0}))  # the right type, out of range: the flag's own message
    with pytest.raises(SystemExit):
        T.build_config(["--config", str(conf)])
    assert "--steps must be an int >= 1, got 0" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_cuda_without_a_gpu_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        T.build_config(["--device", "cuda"])
    assert "--device cuda: no CUDA GPU is available" in capsys.readouterr().err


def test_resume_runs_with_the_learning_rate_it_records(data, tmp_path):
    out = tmp_path / "run"
    T.train(cfg(data, out, steps=2, lr=2e-4), progress=False)
    T.train(cfg(data, out, steps=3, lr=1e-3, beta1=0.3), resume="auto", progress=False)
    saved = json.loads((out / "config.json").read_text())
    ckpt = C.load(str(out / "checkpoint.pt"))
    assert saved["lr"] == 1e-3 and saved["beta1"] == 0.3
    for opt in ("opt_g", "opt_d"):
        for group in ckpt[opt]["param_groups"]:
            assert group["lr"] == 1e-3 and tuple(group["betas"]) == (0.3, 0.999)


def test_adam_is_fused_unless_asked_and_a_resumed_run_takes_its_own_choice(data, tmp_path):
    """Adam's fused kernel is the default; --no-fused-adam runs torch's for-loop Adam (the
    one the same-numbers recordings were made with). The same algorithm: two steps agree
    to float32 rounding. A resumed run uses its own choice, whatever the checkpoint's."""
    def groups(ckpt):
        return [g for opt in ("opt_g", "opt_d") for g in ckpt[opt]["param_groups"]]

    T.train(cfg(data, tmp_path / "f", steps=2), progress=False)
    T.train(cfg(data, tmp_path / "p", steps=2, fused_adam=False), progress=False)
    fused, plain = C.load(str(tmp_path / "f" / "checkpoint.pt")), C.load(str(tmp_path / "p" / "checkpoint.pt"))
    assert all(g["fused"] is True and not g["foreach"] for g in groups(fused))
    assert all(not g["fused"] and not g["foreach"] for g in groups(plain))
    for net in ("generator", "discriminator"):
        assert not all(torch.equal(fused[net][k], plain[net][k]) for k in fused[net])  # two implementations
        for k, v in fused[net].items():
            torch.testing.assert_close(plain[net][k], v, rtol=1e-4, atol=1e-6, msg=k)
    T.train(cfg(data, tmp_path / "f", steps=3, fused_adam=False), resume="auto", progress=False)
    T.train(cfg(data, tmp_path / "p", steps=3), resume="auto", progress=False)
    was_fused, was_plain = C.load(str(tmp_path / "f" / "checkpoint.pt")), C.load(str(tmp_path / "p" / "checkpoint.pt"))
    assert was_fused["step"] == was_plain["step"] == 3
    assert all(not g["fused"] for g in groups(was_fused)) and all(g["fused"] is True for g in groups(was_plain))
    for ckpt in (was_fused, was_plain):
        steps = [s["step"] for opt in ("opt_g", "opt_d") for s in ckpt[opt]["state"].values()]
        assert steps and all(s.dtype == torch.float32 and float(s) == 3 for s in steps)


def test_resume_with_another_loss_term_keeps_the_csv_columns_aligned(data, tmp_path):
    out = tmp_path / "run"
    T.train(cfg(data, out, steps=2), progress=False)
    T.train(cfg(data, out, steps=4, nn=0.5, vgg_weights=None, allow_random_vgg=True), resume="auto",
            progress=False)
    with open(out / "log.csv", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    assert "loss_nn" in header and len(rows) == 4
    assert all(len(r) == len(header) for r in rows)
    by_name = [dict(zip(header, r)) for r in rows]
    assert [r["step"] for r in by_name] == ["1", "2", "3", "4"]
    assert by_name[0]["loss_nn"] == "" and float(by_name[3]["loss_nn"]) > 0
    assert all(float(r["loss_l1"]) > 0 for r in by_name)  # the old column did not shift


def test_resume_with_another_width_names_the_flag(data, tmp_path):
    out = tmp_path / "run"
    T.train(cfg(data, out, steps=1), progress=False)
    with pytest.raises(C.CheckpointError, match=r"--width-mult 0.125 \(the checkpoint has 0.0625\)") as err:
        T.train(cfg(data, out, steps=2, width_mult=0.125), resume="auto", progress=False)
    assert str(err.value).startswith(f"cannot resume from {out / 'checkpoint.pt'}: ")
    code = subprocess.run([sys.executable, "-m", "deformgan.train", "--data", data, "--out", str(out),
                           "--preset", "dsc", "--width-mult", "0.125", "--steps", "2", "--resume"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert code.returncode == 2 and "Traceback" not in code.stderr
    assert "--width-mult 0.125 (the checkpoint has 0.0625)" in code.stderr


def test_a_failing_sample_grid_does_not_cost_the_final_checkpoint(data, tmp_path, monkeypatch, capsys):
    def broken(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(E, "save_samples", broken)
    E._optional_failures.clear()
    out = tmp_path / "run"
    result = T.train(cfg(data, out, steps=3, sample_every=1, save_every=1000), progress=False)
    assert result["step"] == 3 and C.load(str(out / "checkpoint.pt"))["step"] == 3
    err = capsys.readouterr().err
    assert err.count("WARNING: writing the sample grid failed") == 1 and "No space left" in err


def test_a_bit_flipped_checkpoint_is_refused_naming_the_file(data, tmp_path):
    out = tmp_path / "run"
    T.train(cfg(data, out, steps=1), progress=False)
    path = out / "checkpoint.pt"
    blob = bytearray(path.read_bytes())
    with torch.serialization._open_zipfile_reader(str(path)) as zf:  # noqa: F841 - only to be sure it is a zip
        pass
    # flip one bit in the middle of the largest tensor's bytes
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(C.CheckpointError, match=f"checkpoint {path} is damaged"):
        C.load(str(path))
    with pytest.raises(C.CheckpointError, match="is damaged"):
        T.train(cfg(data, out, steps=2), resume="auto", progress=False)
    path.write_bytes(bytes(blob[: len(blob) // 3]))  # truncated
    with pytest.raises(C.CheckpointError, match="is damaged"):
        C.load(str(path))


def test_nan_on_one_ddp_rank_stops_every_rank_cleanly(data, tmp_path):
    args = ["--data", data, "--width-mult", "0.0625", "--dropout", "0", "--steps", "4", "--l1", "100",
            "--batch-size", "2", "--log-every", "1", "--sample-every", "1000", "--save-every", "1",
            "--preset", "dsc", "--out", str(tmp_path / "ddp")]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           f"--master_port={_free_port()}", os.path.join(ROOT, "tests", "ddp_nan_probe.py"), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    err = proc.stderr
    assert proc.returncode != 0
    assert "Connection reset" not in err and "connection closed" not in err.lower(), err[-3000:]
    assert err.count("STOPPED: non-finite loss at step 2") == 2, err[-3000:]  # both ranks, same step
    assert C.load(str(tmp_path / "ddp" / "checkpoint.pt"))["step"] == 1
