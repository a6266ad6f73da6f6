import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from deformgan import checkpoint as C
from deformgan import train as T
from deformgan.data.synthetic import make_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(width_mult=0.0625, dropout=0.0, batch_size=2, log_every=1, sample_every=1000, save_every=1000,
            deterministic=True, seed=3, l1=100.0, variant="parts")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    make_dataset(str(root), ids=5, images_per_id=3, seed=11, progress=False)
    return str(root)


def cfg(data, out, **kw):
    values = dict(TINY, data=data, out=str(out), preset="dsc")
    values.update(kw)
    return T.TrainConfig(**values)


def test_a_short_run_writes_checkpoint_log_samples_and_losses_decrease(data, tmp_path):
    c = cfg(data, tmp_path / "run", steps=40, lr=1e-3, sample_every=40, save_every=20)
    result = T.train(c, progress=False)
    hist = result["history"]
    assert len(hist) == 40 and all(torch.isfinite(torch.tensor(list(r.values()))).all() for r in hist)
    first = sum(r["loss_l1"] for r in hist[:10]) / 10
    last = sum(r["loss_l1"] for r in hist[-10:]) / 10
    assert last < first, (first, last)
    out = tmp_path / "run"
    assert (out / "checkpoint.pt").exists() and (out / "samples" / "step_000040.png").exists()
    lines = (out / "log.csv").read_text().splitlines()
    assert lines[0].startswith("step,loss_d,loss_g") and len(lines) == 41
    saved = json.loads((out / "config.json").read_text())
    assert saved["variant"] == "parts" and saved["steps"] == 40
    ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)  # loadable weights-only
    assert ckpt["step"] == 40 and ckpt["format"] == C.FORMAT


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(data, tmp_path):
    straight = T.train(cfg(data, tmp_path / "a", steps=6), progress=False)["history"]
    T.train(cfg(data, tmp_path / "b", steps=6), max_steps_this_run=3, progress=False)
    resumed = T.train(cfg(data, tmp_path / "b", steps=6), resume="auto", progress=False)["history"]
    assert [r["step"] for r in resumed] == [4, 5, 6]
    for a, b in zip(straight[3:], resumed):
        for k in ("loss_d", "loss_g", "loss_l1", "loss_adv"):
            assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-7), (a["step"], k)


def test_a_killed_checkpoint_write_leaves_the_previous_one_loadable(data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    T.train(cfg(data, out, steps=2), progress=False)
    before = (out / "checkpoint.pt").read_bytes()
    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        f.write(b"partial garbage")
        raise KeyboardInterrupt("killed during the write")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        T.train(cfg(data, out, steps=4), resume="auto", progress=False)
    monkeypatch.setattr(torch, "save", real_save)
    assert (out / "checkpoint.pt").read_bytes() == before
    assert C.load(str(out / "checkpoint.pt"))["step"] == 2
    assert not [f for f in os.listdir(out) if f.startswith(".tmp-")]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(data, tmp_path):
    out = tmp_path / "run"
    T.train(cfg(data, out, steps=2), progress=False)
    with pytest.raises(T.NonFiniteLoss, match="non-finite loss at step 3.*last good checkpoint"):
        T.train(cfg(data, out, steps=4, l1=float("nan")), resume="auto", progress=False)
    assert C.load(str(out / "checkpoint.pt"))["step"] == 2


def test_checkpoint_of_another_variant_fails_clearly(data, tmp_path):
    out = tmp_path / "run"
    T.train(cfg(data, out, steps=1), progress=False)
    with pytest.raises(C.CheckpointError, match="variant 'parts', but variant 'none' was asked for"):
        T.train(cfg(data, out, steps=2, variant="none"), resume="auto", progress=False)
    g = C.build_generator(C.load(str(out / "checkpoint.pt")))
    assert g.variant == "parts" and not g.training


def test_cli_config_file_and_flags(data, tmp_path):
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps({"steps": 7, "width_mult": 0.5, "variant": "global"}))
    c, _ = T.build_config(["--config", str(conf), "--data", data, "--width-mult", "0.0625", "--preset", "full"])
    assert c.preset == "full" and c.nn == 0.01 and c.steps == 7 and c.width_mult == 0.0625 and c.variant == "global"
    c, _ = T.build_config([])
    assert c.preset == "demo" and c.data is None and c.width_mult == 0.25


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_gloo_processes_match_one_process_on_the_same_global_batch(data, tmp_path):
    common = ["--data", data, "--width-mult", "0.0625", "--dropout", "0", "--steps", "2", "--l1", "100",
              "--seed", "5", "--deterministic", "--log-every", "1", "--sample-every", "1000", "--save-every", "1000",
              "--preset", "dsc", "--no-cpu-amp"]  # float32: bf16 rounds a batch of 4 and two of 2 apart
    env = dict(os.environ, OMP_NUM_THREADS="1")
    single = subprocess.run([sys.executable, "-m", "deformgan.train", *common, "--batch-size", "4",
                             "--out", str(tmp_path / "one")], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                            f"--master_port={_free_port()}", "-m", "deformgan.train", *common, "--batch-size", "2",
                            "--out", str(tmp_path / "two")], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=600)
    assert multi.returncode == 0, multi.stderr[-3000:]
    a = C.load(str(tmp_path / "one" / "checkpoint.pt"))
    b = C.load(str(tmp_path / "two" / "checkpoint.pt"))
    for k, v in a["generator"].items():
        torch.testing.assert_close(b["generator"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    for k, v in a["discriminator"].items():
        torch.testing.assert_close(b["discriminator"][k], v, rtol=1e-4, atol=1e-5, msg=k)


def test_resume_from_an_explicit_checkpoint_path_into_a_new_folder(data, tmp_path):
    """--resume PATH: the run continues from that checkpoint's step (with its weights)
    in another output folder, and gives the uninterrupted run's losses."""
    straight = T.train(cfg(data, tmp_path / "a", steps=5), progress=False)["history"]
    T.train(cfg(data, tmp_path / "b", steps=5), max_steps_this_run=3, progress=False)
    resumed = T.train(cfg(data, tmp_path / "c", steps=5), resume=str(tmp_path / "b" / "checkpoint.pt"),
                      progress=False)["history"]
    assert [r["step"] for r in resumed] == [4, 5]
    for a, b in zip(straight[3:], resumed):
        for k in ("loss_d", "loss_g", "loss_l1"):
            assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-7), (a["step"], k)
    assert (tmp_path / "c" / "checkpoint.pt").exists()


def test_log_jsonl_csv_and_tensorboard_hold_the_same_rows(data, tmp_path, monkeypatch):
    """log.jsonl and log.csv carry every logged step with the history's values; the
    TensorBoard writer gets every numeric column at its step (a recording stand-in for
    torch.utils.tensorboard, which needs the optional tensorboard package); a resumed
    run appends instead of starting the files again."""
    import csv
    import types

    scalars = []

    class Writer:
        def __init__(self, log_dir):
            self.log_dir = log_dir

        def add_scalar(self, tag, value, step):
            scalars.append((tag, value, step))

        def close(self):
            scalars.append(("closed", None, None))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    out = tmp_path / "run"
    hist = T.train(cfg(data, out, steps=4, log_every=2), progress=False)["history"]
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    for r in rows:
        h = hist[r["step"] - 1]
        assert all(r[k] == h[k] for k in ("loss_d", "loss_g", "loss_l1", "loss_adv")) and r["it_per_s"] > 0
    with open(out / "log.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in table] == [2, 4]
    assert all(float(t["loss_g"]) == pytest.approx(r["loss_g"], rel=1e-12) for t, r in zip(table, rows))
    numeric = [k for k in rows[0] if k != "step"]
    assert sorted((tag, step) for tag, _, step in scalars if tag != "closed") == \
        sorted((k, r["step"]) for r in rows for k in numeric)
    assert all(value == rows[step // 2 - 1][tag] for tag, value, step in scalars if tag != "closed")
    assert scalars[-1][0] == "closed"
    T.train(cfg(data, out, steps=6, log_every=2), resume="auto", progress=False)
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]


def test_channels_last_runs_the_warp_in_channels_last_with_the_same_losses(data, tmp_path, monkeypatch):
    """--channels-last: the networks and images in channels-last memory, so every feature
    map part_affine_warp receives is channels-last (and its output is); the losses equal
    the contiguous run's up to the convolutions' summation order."""
    import deformgan_ops
    layouts, real = [], deformgan_ops.part_affine_warp

    def spy(features, *args, **kwargs):
        out = real(features, *args, **kwargs)
        layouts.append((features.is_contiguous(memory_format=torch.channels_last) and not features.is_contiguous(),
                        out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()))
        return out

    monkeypatch.setattr(deformgan_ops, "part_affine_warp", spy)
    plain = T.train(cfg(data, tmp_path / "a", steps=3), progress=False)["history"]
    assert layouts and not any(f or o for f, o in layouts)
    layouts.clear()
    cl = T.train(cfg(data, tmp_path / "b", steps=3, channels_last=True), progress=False)["history"]
    assert layouts and all(f and o for f, o in layouts), layouts
    for a, b in zip(plain, cl):
        for k in ("loss_d", "loss_g", "loss_l1", "loss_adv"):
            assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-6), (a["step"], k)
    assert T.build_config(["--data", data, "--out", str(tmp_path / "c"), "--channels-last"])[0].channels_last is True
