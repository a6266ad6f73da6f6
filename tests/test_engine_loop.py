"""The training loop's contract with its parts and its outputs: every setting reaches
the part that uses it (recorded by stand-ins that wrap the real classes), the
deterministic mode, the pairs file or the standard pairs, and which steps write the
checkpoint, the logs and the sample grids. Tiny runs (width 1/16), a second or two
each."""
import collections
import inspect
import json
import os
import re
import types

import pytest
import torch

from deformgan import checkpoint as C
from deformgan import engine as E
from deformgan.data.market import read_annotations, standard_pairs

from test_train import cfg, data  # noqa: F401 - the shared tiny config and data fixture (24 standard pairs)


def recorder(monkeypatch, name, **run_with):
    """Replace ``engine.<name>`` (a class or function) with one that records the
    arguments of each call by parameter name, defaults filled in, and runs the real one
    (a class: with the arguments ``run_with`` replaced, after recording)."""
    real = getattr(E, name)
    seen = []
    sig = inspect.signature(real)

    if inspect.isclass(real):
        class Recording(real):
            def __init__(self, *args, **kwargs):
                bound = sig.bind(*args, **kwargs)
                bound.apply_defaults()
                seen.append(dict(bound.arguments))
                super().__init__(**dict(bound.arguments, **run_with))
        monkeypatch.setattr(E, name, Recording)
    else:
        def Recording(*args, **kwargs):
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            seen.append(dict(bound.arguments))
            return real(*args, **kwargs)
        monkeypatch.setattr(E, name, Recording)
    return seen


def test_outputs_are_written_at_their_intervals_and_at_the_end(data, tmp_path, monkeypatch, capsys):
    saved, logged = [], []
    real_save = E.ckpt_io.save_atomic
    monkeypatch.setattr(E.ckpt_io, "save_atomic", lambda obj, path: (saved.append(obj["step"]), real_save(obj, path)))
    real_log = E.Logger.log
    monkeypatch.setattr(E.Logger, "log", lambda self, row: (logged.append(dict(row)), real_log(self, row)))
    ticks = iter(range(0, 200, 2))  # a clock that moves two seconds per reading
    monkeypatch.setattr(E, "time", types.SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    out = tmp_path / "run"
    result = E.train(cfg(data, out, steps=5, save_every=2, log_every=2, sample_every=3), progress=False)
    assert saved == [2, 4, 5] and [r["step"] for r in logged] == [2, 4, 5]
    assert sorted(os.listdir(out / "samples")) == ["step_000003.png", "step_000005.png"]
    assert result["step"] == 5 and result["checkpoint"] == str(out / "checkpoint.pt")
    assert [r["step"] for r in result["history"]] == [1, 2, 3, 4, 5]
    for r in result["history"]:
        assert set(r) >= {"step", "loss_d", "loss_g", "loss_l1", "loss_adv"}
        assert r["loss_g"] == pytest.approx(r["loss_adv"] + 100.0 * r["loss_l1"], rel=1e-5)
    assert [r["it_per_s"] for r in logged] == [1.0, 1.0, 0.5]  # steps since the last log per second
    for r in logged:
        assert r == result["history"][r["step"] - 1]
    assert capsys.readouterr().err == ""  # no progress bar asked for
    # interrupted after two steps of a run of 9: checkpoint and log at the stop, no sample
    # grid (grids come at sample_every and at the run's last step)
    saved.clear(), logged.clear()
    out2 = tmp_path / "stopped"
    E.train(cfg(data, out2, steps=9, save_every=4, log_every=4, sample_every=4), max_steps_this_run=2,
            progress=True)
    assert saved == [2] and [r["step"] for r in logged] == [2] and not (out2 / "samples").exists()
    assert "train:" in capsys.readouterr().err  # the progress bar
    E.train(cfg(data, out2, steps=9, save_every=4, log_every=4, sample_every=4), resume="auto",
            max_steps_this_run=20, progress=False)
    assert saved == [2, 4, 8, 9] and [r["step"] for r in logged] == [2, 4, 8, 9]
    assert sorted(os.listdir(out2 / "samples")) == ["step_000004.png", "step_000008.png", "step_000009.png"]


def test_each_phase_of_a_step_carries_its_profiler_label(data, tmp_path):
    """benchmarks/profile_step.py splits a step's time by these labels."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        E.train(cfg(data, tmp_path / "run", steps=1, save_every=1, log_every=1, sample_every=1), progress=False)
    names = collections.Counter(e.name for e in prof.events() if "step" in e.name.lower() and "#" not in e.name)
    assert names == dict({"step": 1, "step/data": 1, "step/geometry": 1, "step/forward G, D": 1, "step/backward D": 1,
                          "step/optimiser": 2, "step/losses G": 1, "step/backward G": 1, "step/checkpoint": 1,
                          "step/logging": 1, "step/samples": 1})  # both optimiser steps under one label


def test_a_non_finite_loss_names_the_step_and_the_terms(data, tmp_path, monkeypatch):
    real = E.GeneratorLoss.forward
    calls = []

    def poisoned(self, *args, **kwargs):
        calls.append(1)
        loss, terms = real(self, *args, **kwargs)
        if len(calls) == 2:
            return loss * float("nan"), terms
        return loss, terms
    monkeypatch.setattr(E.GeneratorLoss, "forward", poisoned)
    out = tmp_path / "run"
    with pytest.raises(E.NonFiniteLoss) as err:
        E.train(cfg(data, out, steps=4), progress=False)
    msg = str(err.value)
    assert msg.startswith("non-finite loss at step 2: loss_g=nan, loss_d=") and "terms={'adv': " in msg
    assert msg.endswith("; stopping without saving") and not (out / "checkpoint.pt").exists()
    calls.clear()
    with pytest.raises(E.NonFiniteLoss) as err:
        E.train(cfg(data, out, steps=4, save_every=1), progress=False)
    assert str(err.value).endswith(f"; stopping without saving; the last good checkpoint is {out / 'checkpoint.pt'}")
    assert C.load(str(out / "checkpoint.pt"))["step"] == 1


def test_every_setting_reaches_the_part_that_uses_it(data, tmp_path, monkeypatch, capsys):
    rec = {n: recorder(monkeypatch, n) for n in ("Discriminator", "PairOrder", "make_loader", "Logger",
                                                 "prepare_data")}
    # The run asks for 64x128 (a size the networks take); the data set and the generator
    # are recorded with it and built at the 128x64 of the folder's images. The loss is
    # recorded as asked for and built without its VGG terms (seconds saved).
    rec["_sample_batch"] = recorder(monkeypatch, "_sample_batch")
    rec["MarketPoseDataset"] = recorder(monkeypatch, "MarketPoseDataset", height=128, width=64)
    rec["Generator"] = recorder(monkeypatch, "Generator", image_size=(128, 64))
    rec["GeneratorLoss"] = recorder(monkeypatch, "GeneratorLoss", nn_weight=0.0, perceptual=0.0, vgg_weights=None)
    c = cfg(data, tmp_path / "run", steps=2, norm="instance", width_mult=0.125, dropout=0.25, sigma=4.5, adv=0.5,
            l1=50.0, nn=0.1, nn_kernel=5, perceptual=0.2, smooth=0.01, vgg_weights="imagenet", allow_random_vgg=True,
            ops_backend="reference", lr=1e-4, beta1=0.4, beta2=0.99, flip=0.5, seed=9, variant="parts+offsets",
            image_size=(64, 128))
    result = E.train(c)  # progress bar by default: "train: 100%|...| 2/2 [00:01<00:00, 1.6it/s, d=1.39, ...]"
    bar = capsys.readouterr().err
    assert "train: 100%" in bar and " 2/2 " in bar and re.search(r"[0-9.]+(it/s|s/it), d=[0-9.e+-]+, g=", bar)
    assert re.search(r", smooth=[0-9.e+-]+\]", bar) and "loss_" not in bar
    assert {"loss_adv", "loss_l1", "loss_smooth"} <= set(result["history"][0])  # the offsets reach the loss
    (grid,) = rec["_sample_batch"]  # the sample grid shows the folder's test pairs
    assert (grid["cfg"], grid["root"], grid["count"]) == (c, data, 6)
    assert (grid["test_ann"], grid["test_pairs"]) == (os.path.join(data, "annotations-test.csv"),
                                                      os.path.join(data, "pairs-test.csv"))
    (prep,) = rec["prepare_data"]
    assert prep == {"cfg": c, "rank": 0}
    ds = rec["MarketPoseDataset"][0]  # the train set (the second is the sample grid's test set)
    assert ds["root"] == data and ds["pairs"] == os.path.join(data, "pairs-train.csv")
    want = read_annotations(os.path.join(data, "annotations-train.csv"))
    assert list(ds["annotations"]) == list(want)
    assert all(torch.equal(ds["annotations"][n], want[n]) for n in want)
    assert (ds["split"], ds["heatmaps"], ds["sigma"], ds["height"], ds["width"]) == ("train", False, 4.5, 64, 128)
    (g,) = rec["Generator"]
    assert {k: g[k] for k in ("variant", "norm", "width_mult", "dropout", "image_size", "sigma", "ops_backend")} == \
        dict(variant="parts+offsets", norm="instance", width_mult=0.125, dropout=0.25, image_size=(64, 128), sigma=4.5,
             ops_backend="reference")
    (d,) = rec["Discriminator"]
    assert (d["norm"], d["width_mult"]) == ("instance", 0.125)
    (loss,) = rec["GeneratorLoss"]
    assert {k: loss[k] for k in ("adv", "l1", "nn_weight", "perceptual", "smooth", "nn_kernel", "vgg_weights",
                                 "allow_random_vgg", "ops_backend")} == \
        dict(adv=0.5, l1=50.0, nn_weight=0.1, perceptual=0.2, smooth=0.01, nn_kernel=5, vgg_weights="imagenet",
             allow_random_vgg=True, ops_backend="reference")
    (order,) = rec["PairOrder"]
    assert order == dict(n=24, batch_size=2, seed=9, flip=0.5, rank=0, world=1, epoch=0, position=0)
    (loader,) = rec["make_loader"]
    assert loader["num_workers"] == 0 and loader["device"] == torch.device("cpu")
    assert isinstance(loader["dataset"], E.PairDataset) and len(loader["dataset"]) == 24
    assert rec["Logger"] == [dict(out=str(tmp_path / "run"), enabled=True, resume=False, resumed_step=0)]
    state = C.load(str(tmp_path / "run" / "checkpoint.pt"))
    for opt in ("opt_g", "opt_d"):
        group = state[opt]["param_groups"][0]
        assert group["lr"] == 1e-4 and tuple(group["betas"]) == (0.4, 0.99)
    assert state["config"] == {k: list(v) if isinstance(v, tuple) else v for k, v in vars(c).items()}
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == state["config"]
    # a resumed run: the logger appends, the order continues where the checkpoint says
    E.train(cfg(data, tmp_path / "run", steps=3, norm="instance", width_mult=0.125, dropout=0.25, sigma=4.5,
                variant="parts+offsets", seed=9, flip=0.5, image_size=(64, 128)), resume="auto")
    path = tmp_path / "run" / "checkpoint.pt"
    err = capsys.readouterr().err
    assert err.startswith(f"[deformgan.train] resumed from {path} at step 2\n") and " 3/3 " in err
    assert rec["Logger"][-1]["resume"] is True
    assert (rec["PairOrder"][-1]["epoch"], rec["PairOrder"][-1]["position"]) == (0, 4)


def test_the_pairs_file_or_the_standard_pairs(data, tmp_path, monkeypatch):
    """With a pairs file the run walks its pairs; without one, the standard pairs of the
    annotations (every ordered pair of one identity's images): the order's epoch after
    three steps of two says how many pairs there were."""
    seen = recorder(monkeypatch, "MarketPoseDataset")
    two = tmp_path / "two-pairs.csv"
    names = sorted(read_annotations(os.path.join(data, "annotations-train.csv")))
    two.write_text(f"from,to\n{names[0]},{names[1]}\n{names[1]},{names[0]}\n")
    E.train(cfg(data, tmp_path / "a", steps=3, pairs=str(two)), progress=False)
    assert C.load(str(tmp_path / "a" / "checkpoint.pt"))["data"] == {"epoch": 2, "position": 2}
    no_pairs = tmp_path / "nopairs"
    no_pairs.mkdir()
    for entry in os.listdir(data):
        if not entry.startswith("pairs-"):
            os.symlink(os.path.join(data, entry), no_pairs / entry)
    E.train(cfg(str(no_pairs), tmp_path / "b", steps=3), progress=False)
    annotations = read_annotations(os.path.join(data, "annotations-train.csv"))
    train_sets = [s for s in seen if s["split"] == "train"]
    assert train_sets[0]["pairs"] == str(two)
    assert train_sets[1]["pairs"] == standard_pairs(annotations) and len(train_sets[1]["pairs"]) == 24
    assert C.load(str(tmp_path / "b" / "checkpoint.pt"))["data"] == {"epoch": 0, "position": 6}


def test_deterministic_mode_sets_torch_and_keeps_a_users_cublas_setting(data, tmp_path, monkeypatch):
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark)
    try:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = True
        monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
        E.train(cfg(data, tmp_path / "a", steps=1, deterministic=False), progress=False)
        assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark is True
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
        E.train(cfg(data, tmp_path / "b", steps=1, deterministic=True), progress=False)
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.benchmark is False and os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
        E.train(cfg(data, tmp_path / "c", steps=1, deterministic=True), progress=False)
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark = before[2]


def test_geometry_is_rendered_once_per_step_and_bf16_autocast_where_the_cpu_has_it(data, tmp_path, monkeypatch,
                                                                                    capsys):
    rendered, autocast = [], []
    real_render, real_d = E.Generator.render_geometry, E.Discriminator.forward

    def render(self, *args, **kwargs):
        rendered.append(1)
        return real_render(self, *args, **kwargs)

    def scored(self, *args):
        autocast.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return real_d(self, *args)
    monkeypatch.setattr(E.Generator, "render_geometry", render)
    monkeypatch.setattr(E.Discriminator, "forward", scored)
    E.train(cfg(data, tmp_path / "a", steps=2), progress=False)  # the default, on a CPU without native bf16
    assert len(rendered) == 3  # one per step, one for the final sample grid
    assert len(autocast) == 6 and not any(on for on, _ in autocast)
    assert "bfloat16" not in capsys.readouterr().err
    monkeypatch.setattr(E, "cpu_has_native_bf16", lambda: True)
    for options, on in (({}, True), ({"cpu_amp": True}, True), ({"cpu_amp": False}, False)):
        autocast.clear()
        E.train(cfg(data, tmp_path / f"b{len(options)}{on}", steps=1, **options), progress=False)
        assert autocast == [(on, torch.bfloat16)] * 3, options
        notice = ("[deformgan.train] bfloat16 autocast on the CPU (it has native bfloat16); --no-cpu-amp trains in "
                  "float32\n")
        assert (notice in capsys.readouterr().err) is (options == {})  # the default says what it chose


def test_the_discriminator_sees_source_heatmaps_then_target_heatmaps_in_both_steps(data, tmp_path, monkeypatch):
    """A recording discriminator: in every step it scores (source, H_a, real target, H_b)
    and (source, H_a, generated, H_b) for its own step (the generated image detached),
    then (source, H_a, generated, H_b) for the generator's step with the gradient flowing,
    H_a and H_b being the heatmaps the generator was given for the source and target
    poses (which differ, so a swap shows)."""
    calls, made = [], []
    real_d, real_g = E.Discriminator.forward, E.Generator.forward

    def scored(self, *args):
        calls.append([a.detach().clone() for a in args] + [args[2].requires_grad])
        return real_d(self, *args)

    def generated(self, image, *args, **kwargs):
        out = real_g(self, image, *args, **kwargs)
        if "geometry" in kwargs:  # a training step (the sample grid's call has none)
            fake = out[0] if isinstance(out, tuple) else out
            geo = kwargs["geometry"]
            made.append((image.detach().clone(), geo.source_heatmaps.clone(), geo.target_heatmaps.clone(),
                         fake.detach().clone()))
        return out
    monkeypatch.setattr(E.Discriminator, "forward", scored)
    monkeypatch.setattr(E.Generator, "forward", generated)
    E.train(cfg(data, tmp_path / "run", steps=2), progress=False)
    assert len(made) == 2 and len(calls) == 6
    for step, (src, h_a, h_b, fake) in enumerate(made):
        assert not torch.equal(h_a, h_b)
        real, fake_d, fake_g = calls[3 * step:3 * step + 3]
        for c in (real, fake_d, fake_g):
            assert torch.equal(c[0], src) and torch.equal(c[1], h_a) and torch.equal(c[3], h_b), step
        assert not torch.equal(real[2], fake) and not torch.equal(real[2], src)  # the real target
        assert torch.equal(fake_d[2], fake) and not fake_d[4]  # D's step: detached
        assert torch.equal(fake_g[2], fake) and fake_g[4]  # G's step: the gradient reaches G


def test_a_failing_log_is_reported_once_naming_the_folder_and_the_run_goes_on(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(E, "_optional_failures", {})

    def full(self, row):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(E.Logger, "log", full)
    out = tmp_path / "run"
    assert E.train(cfg(data, out, steps=2), progress=False)["step"] == 2
    err = capsys.readouterr().err
    assert err == (f"[deformgan.train] WARNING: writing the logs in {out} failed (OSError: [Errno 28] No space left on "
                   "device); training goes on and checkpoints are still written\n")
    assert C.load(str(out / "checkpoint.pt"))["step"] == 2


def test_channels_last_puts_both_networks_and_the_step_images_in_channels_last(data, tmp_path, monkeypatch):
    seen = []
    real_d, real_g = E.Discriminator.forward, E.Generator.forward

    def cl(t):
        return t.is_contiguous(memory_format=torch.channels_last)

    def scored(self, *args):
        seen.append(("D", cl(self.net[0].weight), cl(args[0]), cl(args[2])))
        return real_d(self, *args)

    def generated(self, image, *args, **kwargs):
        if "geometry" in kwargs:  # a training step (the sample grid's call has none)
            seen.append(("G", cl([p for p in self.parameters() if p.dim() == 4][0]), cl(image)))
        return real_g(self, image, *args, **kwargs)
    monkeypatch.setattr(E.Discriminator, "forward", scored)
    monkeypatch.setattr(E.Generator, "forward", generated)
    for on in (True, False):
        seen.clear()
        E.train(cfg(data, tmp_path / str(on), steps=1, channels_last=on), progress=False)
        assert [s[0] for s in seen] == ["G", "D", "D", "D"]
        assert all(flag is on for s in seen for flag in s[1:]), seen
