"""The small command lines, in process, against answers worked out by hand:
`deformgan.pairs`, `deformgan.data.make_pose_bank` (which must regenerate the shipped
pose bank from the public annotation file), `deformgan_ops.info` and the training
command's main around its engine."""
import json
import os

import pytest
import torch

from deformgan import pairs as PA
from deformgan import pose as P
from deformgan.data import make_pose_bank as MPB
from deformgan.data import market as M
from deformgan.data import synthetic as S
from deformgan.outputs import OutputBusy, OutputExists
from helpers import market_file, help_text, usage_error


def _pose(missing=()):
    kp = torch.arange(36, dtype=torch.float32).view(18, 2) + 3
    kp[[P.J[n] for n in missing]] = -1
    return kp


def _pairs_annotations(path):
    """Person 1: three images, one without its left hip (not kept); person 2: two
    images; distractors (0000) and junk (-1): never paired."""
    ann = {"0001_c1s1_000001_00.jpg": _pose(), "0001_c2s1_000002_00.jpg": _pose(("l_hip",)),
           "0001_c3s1_000003_00.jpg": _pose(), "0002_c1s1_000004_00.jpg": _pose(),
           "0002_c4s1_000005_00.jpg": _pose(("nose",)), "0000_c1s1_000006_00.jpg": _pose(),
           "0000_c2s1_000007_00.jpg": _pose(), "-1_c1s1_000008_00.jpg": _pose(), "-1_c2s1_000009_00.jpg": _pose()}
    M.write_annotations(str(path), ann)
    return ann


def test_pairs_cli_writes_the_standard_pairs_and_samples_them(tmp_path, capsys):
    _pairs_annotations(tmp_path / "ann.csv")
    out = tmp_path / "pairs.csv"
    assert PA.main([str(tmp_path / "ann.csv"), "--out", str(out)]) == 0
    every = [("0001_c1s1_000001_00.jpg", "0001_c3s1_000003_00.jpg"), ("0001_c3s1_000003_00.jpg", "0001_c1s1_000001_00.jpg"),
             ("0002_c1s1_000004_00.jpg", "0002_c4s1_000005_00.jpg"), ("0002_c4s1_000005_00.jpg", "0002_c1s1_000004_00.jpg")]
    assert M.read_pairs(str(out)) == every  # in annotation order
    assert capsys.readouterr().err == f"9 annotated images -> 4 pairs written to {out}\n"
    samples = {}
    for extra in ([], ["--seed", "0"], ["--seed", "5"]):
        assert PA.main([str(tmp_path / "ann.csv"), "--out", str(out), "--sample", "3", *extra]) == 0
        samples[tuple(extra)] = M.read_pairs(str(out))
        assert capsys.readouterr().err == f"9 annotated images -> 3 pairs written to {out}\n"
    assert samples[()] == samples[("--seed", "0")]  # the default seed is 0
    for sample in samples.values():
        assert len(sample) == 3 and len(set(sample)) == 3 and set(sample) <= set(every)
    assert samples[("--seed", "0")] != samples[("--seed", "5")]  # the seed reaches the sampling
    assert PA.main([str(tmp_path / "ann.csv"), "--out", str(out), "--sample", "10"]) == 0
    assert M.read_pairs(str(out)) == every  # a sample larger than the set keeps every pair
    capsys.readouterr()


def test_pairs_cli_help_and_refusals(tmp_path, capsys):
    text = help_text(PA.main, capsys)
    assert text.startswith("usage: python -m deformgan.pairs ")
    assert "all ordered pairs\n(a, b), a != b, with the same person id" in text  # the docstring kept as written
    assert " annotation CSV (name:keypoints_y:keypoints_x)\n" in text and " pairs CSV to write (from,to)\n" in text
    assert " keep a random sample of this many pairs\n" in text
    ann = str(tmp_path / "ann.csv")
    assert usage_error(PA.main, [ann], capsys).endswith("the following arguments are required: --out")
    assert usage_error(PA.main, [ann, "--out", "x", "--seed", "-1"], capsys).endswith(
        "argument --seed: must be an int >= 0, got -1")
    assert usage_error(PA.main, [ann, "--out", "x", "--sample", "0"], capsys).endswith(
        "argument --sample: must be an int >= 1, got 0")
    with pytest.raises(FileNotFoundError):
        PA.main([ann, "--out", str(tmp_path / "pairs.csv")])
    assert not (tmp_path / "pairs.csv").exists()


def test_make_pose_bank_regenerates_the_shipped_bank(tmp_path, capsys):
    """The shipped pose_bank.json is this command's output on the public training
    annotations with its defaults (400 poses, seed 0)."""
    source = market_file("market-annotation-train.csv")
    out = tmp_path / "bank.json"
    MPB.main([source, "--out", str(out)])
    assert out.read_bytes() == open(S.BANK_PATH, "rb").read()
    printed = capsys.readouterr().out
    assert printed.endswith(f" complete poses, 400 written to {out}\n")
    assert MPB.DEFAULT_OUT == S.BANK_PATH  # where it writes without --out


def test_make_pose_bank_keeps_poses_with_the_nose_and_every_body_joint(tmp_path, capsys, monkeypatch):
    ann = {"0001_c1s1_000001_00.jpg": _pose(("r_eye", "l_eye", "r_ear", "l_ear")),  # the nose alone: kept
           "0001_c1s1_000002_00.jpg": _pose(("nose",)),  # no nose
           "0002_c1s1_000003_00.jpg": _pose(("l_ankle",)),  # a body joint missing
           "0002_c1s1_000004_00.jpg": _pose(("r_wrist",)),
           "0003_c1s1_000005_00.jpg": _pose(), "0003_c1s1_000006_00.jpg": _pose(("neck",)),
           "0004_c1s1_000007_00.jpg": _pose(("r_eye",)) * 2}
    M.write_annotations(str(tmp_path / "ann.csv"), ann)
    monkeypatch.setattr(MPB, "DEFAULT_OUT", str(tmp_path / "default.json"))
    MPB.main([str(tmp_path / "ann.csv")])
    bank = json.loads((tmp_path / "default.json").read_text())
    assert bank["source"] == "ann.csv" and bank["format"] == "[18][x, y], -1 missing"
    kept = [ann["0001_c1s1_000001_00.jpg"], ann["0003_c1s1_000005_00.jpg"], ann["0004_c1s1_000007_00.jpg"]]
    kept[2] = torch.where(kept[2] < 0, torch.full_like(kept[2], -1.0), kept[2])
    assert sorted(bank["poses"]) == sorted(kp.long().tolist() for kp in kept)
    assert all(type(v) is int for pose in bank["poses"] for xy in pose for v in xy)
    assert (tmp_path / "default.json").read_text().startswith('{"source":"ann.csv","format":')  # compact
    assert capsys.readouterr().out == f"3 complete poses, 3 written to {tmp_path / 'default.json'}\n"
    firsts = set()
    for seed in range(8):  # --count 1: one pose, drawn by the seed
        MPB.main([str(tmp_path / "ann.csv"), "--count", "1", "--seed", str(seed), "--out", str(tmp_path / "one.json")])
        poses = json.loads((tmp_path / "one.json").read_text())["poses"]
        assert len(poses) == 1
        firsts.add(json.dumps(poses[0]))
    assert len(firsts) > 1
    MPB.main([str(tmp_path / "ann.csv"), "--count", "2", "--out", str(tmp_path / "two.json")])
    again = json.loads((tmp_path / "two.json").read_text())["poses"]
    MPB.main([str(tmp_path / "ann.csv"), "--count", "2", "--seed", "0", "--out", str(tmp_path / "two.json")])
    assert json.loads((tmp_path / "two.json").read_text())["poses"] == again  # the default seed is 0
    assert capsys.readouterr().out.splitlines()[-1] == f"3 complete poses, 2 written to {tmp_path / 'two.json'}"


def test_make_pose_bank_help_and_refusals(tmp_path, capsys):
    text = help_text(MPB.main, capsys)
    assert text.startswith("usage: python -m deformgan.data.make_pose_bank ")
    assert "\nRegenerates ``pose_bank.json``: a seeded sample of real Market-1501 poses (from the\n" in text
    for line in (" Market-1501 annotation CSV (name:keypoints_y:keypoints_x)\n", " poses to keep (default 400)\n",
                 " seed of the sample (default 0)\n", " JSON file to write (default: the shipped pose_bank.json)\n"):
        assert line in text
    ann = str(tmp_path / "ann.csv")
    assert usage_error(MPB.main, [ann, "--count", "0"], capsys).endswith("argument --count: must be an int >= 1, got 0")
    assert usage_error(MPB.main, [ann, "--seed", "-2"], capsys).endswith("argument --seed: must be an int >= 0, got -2")


def test_info_prints_what_this_installation_runs(capsys, monkeypatch):
    import deformgan_ops
    from deformgan_ops import _registry, backend, info
    info.main()
    lines = capsys.readouterr().out.splitlines()
    ops = _registry.names()
    assert lines[0] == (f"torch {torch.__version__} (CUDA {torch.version.cuda}), "
                        f"GPU visible: {torch.cuda.is_available()}")
    assert lines[1] == "compiled extension: loaded"
    cpu = [op for op in ops if backend.has_compiled_kernel(op, "cpu")]
    assert set(ops) <= set(deformgan_ops.operators()) and cpu == list(ops)  # every operator has a CPU kernel
    assert lines[2] == f"compiled cpu kernels: {', '.join(ops)}"
    cuda = [op for op in ops if backend.has_compiled_kernel(op, "cuda")]
    assert lines[3] == f"compiled cuda kernels: {', '.join(cuda) if cuda else 'none'}"
    assert lines[4] == (f"triton kernels available: {backend.triton_available()} (operators with Triton kernels: "
                        f"{', '.join(op for op in ops if _registry.get(op).triton)})")
    assert lines[5] == f"backends for CPU tensors: {backend.available_backends('cpu')}" and len(lines) == 6
    monkeypatch.setattr(backend, "extension_loaded", lambda: False)
    monkeypatch.setattr(backend, "_extension_error", "ImportError('no _C')")
    monkeypatch.setattr(backend, "has_compiled_kernel", lambda op, dev: False)
    info.main()
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "compiled extension: NOT loaded (ImportError('no _C'))"
    assert lines[2:4] == ["compiled cpu kernels: none", "compiled cuda kernels: none"]


def test_train_help_shows_the_module_s_description(capsys):
    from deformgan import train as T
    text = help_text(T.main, capsys)
    assert text.startswith("usage: python -m deformgan.train ")
    assert "\nTrains Deformable GAN. With no ``--data`` it trains on the synthetic demo set (made\n" in text
    assert "\nDistributed: ``torchrun --nproc_per_node=N -m deformgan.train ...``" in text


def test_train_main_exit_codes_messages_backend_and_resume(tmp_path, monkeypatch, capsys):
    """`python -m deformgan.train`'s main around the engine (replaced by a recorder):
    0 and the summary line (rank 0 only), 3 for a non-finite loss, 2 for a checkpoint
    or missing-file error; --ops-backend set once for the process, --resume passed on,
    the process group closed whatever happens."""
    import deformgan_ops
    from deformgan import checkpoint as C
    from deformgan import train as T
    calls, backends, closed = [], [], []
    outcome = {}

    def fake_train(cfg, resume=None, overwrite=False):
        calls.append((cfg.steps, cfg.out, resume) + (("overwrite",) if overwrite else ()))
        if "raise" in outcome:
            raise outcome["raise"]
        return {"step": 5, "checkpoint": os.path.join(cfg.out, "checkpoint.pt")}
    monkeypatch.setattr(T, "train", fake_train)
    monkeypatch.setattr(deformgan_ops, "set_backend", backends.append)
    monkeypatch.setattr(T.dist, "is_initialized", lambda: bool(outcome.get("dist")))
    monkeypatch.setattr(T.dist, "destroy_process_group", lambda: closed.append(True))
    monkeypatch.delenv("RANK", raising=False)
    out = str(tmp_path / "run")
    base = ["--steps", "5", "--out", out]
    assert T.main(base) == 0
    assert calls == [(5, out, None)] and backends == [] and closed == []
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"[deformgan.train] done: 5 steps; checkpoint {out}/checkpoint.pt; samples in {out}/samples; log {out}/log.csv")
    assert T.main(base + ["--ops-backend", "reference", "--resume", "ck.pt"]) == 0
    assert calls[-1] == (5, out, "ck.pt") and backends == ["reference"]
    assert T.main(base + ["--overwrite"]) == 0 and calls[-1] == (5, out, None, "overwrite")
    capsys.readouterr()
    monkeypatch.setenv("RANK", "1")  # another rank: no summary
    assert T.main(base) == 0 and "[deformgan.train] done" not in capsys.readouterr().err
    monkeypatch.setenv("RANK", "0")
    for exc, code, line in [(T.NonFiniteLoss("loss is nan at step 3"), 3, "[deformgan.train] STOPPED: loss is nan at step 3"),
                            (C.CheckpointError("bad checkpoint"), 2, "[deformgan.train] error: bad checkpoint"),
                            (FileNotFoundError("no data"), 2, "[deformgan.train] error: no data"),
                            (OutputExists("run holds a checkpoint"), 2, "[deformgan.train] error: run holds a checkpoint"),
                            (OutputBusy("another run"), 2, "[deformgan.train] error: another run")]:
        outcome.update({"raise": exc, "dist": True})
        closed.clear()
        assert T.main(base) == code
        assert capsys.readouterr().err.splitlines()[-1] == line and closed == [True]
    outcome["raise"] = ValueError("a bug")  # anything else is not hidden
    closed.clear()
    with pytest.raises(ValueError, match="a bug"):
        T.main(base)
    assert closed == [True]
    outcome.clear()
    outcome["dist"] = True
    closed.clear()
    assert T.main(base) == 0 and closed == [True]  # closed after a finished run too
