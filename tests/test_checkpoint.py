"""deformgan.checkpoint on its own (the training tests use it end to end): RNG states
restored draw for draw, atomic writes, the CRC check, the architecture and variant
checks word for word, and a generator rebuilt with the saved weights."""
import os
import random
import zipfile

import numpy as np
import pytest
import torch

from deformgan import checkpoint as C
from helpers import saved_as_on_cuda


class Custom:
    pass


def _draws():
    return torch.rand(3).tolist(), random.random(), np.random.rand(2).tolist()


def test_rng_state_restores_every_generator_draw_for_draw():
    torch.manual_seed(1), random.seed(2), np.random.seed(3)
    _draws()
    state = C.rng_state()
    assert sorted(state) == (["cuda", "numpy", "python", "torch"] if torch.cuda.is_available()
                             else ["numpy", "python", "torch"])
    n = state["numpy"]
    assert n[0] == "MT19937" and len(n[1]) == 624 and isinstance(n[1], list) and all(isinstance(v, int) for v in n[1])
    assert isinstance(n[2], int) and isinstance(n[3], int) and isinstance(n[4], float)
    first = _draws()
    np.random.randn(1)  # leaves a cached gaussian (has_gauss = 1)
    state2 = C.rng_state()
    gauss = np.random.randn(3).tolist()
    assert state2["numpy"][3] == 1
    torch.manual_seed(9), random.seed(9), np.random.seed(9)
    C.set_rng_state(state)
    assert _draws() == first
    C.set_rng_state(state2)
    assert np.random.randn(3).tolist() == gauss  # the cached value is part of the state
    # through a weights_only save and load, as the training's checkpoints carry it
    buf = __import__("io").BytesIO()
    torch.save({"rng": state}, buf)
    buf.seek(0)
    C.set_rng_state(torch.load(buf, weights_only=True)["rng"])
    assert _draws() == first


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a CPU-only machine")
def test_a_gpu_run_s_rng_state_resumes_on_a_cpu_only_machine():
    state = C.rng_state()
    first = _draws()
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8)]  # as a GPU machine saves it
    C.set_rng_state(state)  # the CUDA part is skipped: no GPU here
    assert _draws() == first


def test_save_atomic_writes_creates_the_folder_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "new" / "deeper" / "ckpt.pt"
    C.save_atomic({"a": torch.arange(3)}, str(path))
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.arange(3))
    assert os.listdir(path.parent) == ["ckpt.pt"]
    C.save_atomic({"a": torch.arange(4)}, str(path))  # replaces
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.arange(4))


def test_save_atomic_writes_a_hidden_temporary_beside_the_target(tmp_path, monkeypatch):
    """The temporary is in the target's folder (so the rename cannot cross file systems),
    hidden and named .tmp-*.pt, and renamed over the target only when complete."""
    seen = []
    real_save = torch.save

    def spy(obj, fh):
        seen.append(sorted(os.listdir(tmp_path)))
        real_save(obj, fh)

    monkeypatch.setattr(torch, "save", spy)
    C.save_atomic({"a": 1}, str(tmp_path / "ckpt.pt"))
    (tmp,) = seen[0]
    assert tmp.startswith(".tmp-") and tmp.endswith(".pt") and tmp != "ckpt.pt"
    assert os.listdir(tmp_path) == ["ckpt.pt"]


def test_save_atomic_killed_half_way_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    C.save_atomic({"a": 1}, str(path))
    before = path.read_bytes()

    def boom(obj, fh):
        fh.write(b"half a checkpoint")
        raise KeyboardInterrupt  # a BaseException, like a kill

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        C.save_atomic({"a": 2}, str(path))
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["ckpt.pt"]


def test_verify_refuses_truncated_bit_flipped_and_non_zip_files(tmp_path):
    path = tmp_path / "ckpt.pt"
    C.save_atomic({"format": C.FORMAT, "w": torch.arange(1000.0)}, str(path))
    C.verify(str(path))  # intact
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.file_size >= 4000)
    flipped = bytearray(data)
    flipped[info.header_offset + 30 + len(info.filename) + len(info.extra) + 100] ^= 0x10
    (tmp_path / "flip.pt").write_bytes(bytes(flipped))
    with pytest.raises(C.CheckpointError) as err:
        C.verify(str(tmp_path / "flip.pt"))
    assert str(err.value) == (f"checkpoint {tmp_path / 'flip.pt'} is damaged: member {info.filename!r} fails its "
                              "CRC-32 check; it was not loaded")
    for name, content in (("cut.pt", bytes(data[:len(data) // 2])), ("text.pt", b"not a zip"), ("empty.pt", b"")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(C.CheckpointError) as err:
            C.verify(str(tmp_path / name))
        assert str(err.value).startswith(f"checkpoint {tmp_path / name} is damaged (not a readable zip container: ")
        assert str(err.value).endswith("); it was not loaded")
        assert isinstance(err.value.__cause__, zipfile.BadZipFile)


def test_check_architecture_names_each_flag_that_differs():
    saved = {"config": {"variant": "parts", "norm": "instance_all", "width_mult": 1.0, "image_size": [128, 64],
                        "lr": 2e-4}}
    C.check_architecture(saved, "c.pt", {"variant": "parts", "norm": "instance_all", "width_mult": 1.0,
                                         "image_size": (128, 64), "lr": 1.0})  # a tuple equals the saved list
    with pytest.raises(C.CheckpointError) as err:
        C.check_architecture(saved, "c.pt", {"variant": "full", "norm": "instance_all", "width_mult": 0.5,
                                             "image_size": (256, 256)})
    assert str(err.value) == (
        "cannot resume from c.pt: the networks it holds were built with other options: --variant full (the "
        "checkpoint has parts); --width-mult 0.5 (the checkpoint has 1.0); --image-size [256, 256] (the checkpoint "
        "has [128, 64]). Resume with the checkpoint's options, or start a new run in another --out folder")
    with pytest.raises(C.CheckpointError, match=r"^cannot resume from c.pt: .*--norm batch \(the checkpoint has "
                                                r"instance_all\)\. Resume"):
        C.check_architecture(saved, "c.pt", {**saved["config"], "norm": "batch"})
    assert C.ARCHITECTURE == ("variant", "norm", "width_mult", "image_size")
    as_tuple = {"config": dict(saved["config"], image_size=(128, 64))}  # either side may hold a tuple
    C.check_architecture(as_tuple, "c.pt", dict(saved["config"], image_size=[128, 64]))


def _tiny_checkpoint(path, variant="parts"):
    from deformgan.models import Generator
    torch.manual_seed(0)
    cfg = {"variant": variant, "norm": "instance_all", "width_mult": 0.125, "dropout": 0.5,
           "image_size": [64, 32], "sigma": 2.0}
    g = Generator(cfg["variant"], cfg["norm"], cfg["width_mult"], cfg["dropout"], (64, 32), cfg["sigma"])
    C.save_atomic({"format": C.FORMAT, "config": cfg, "generator": g.state_dict()}, str(path))
    return g, cfg


def test_load_and_build_generator(tmp_path):
    path = tmp_path / "ckpt.pt"
    g, cfg = _tiny_checkpoint(path)
    ckpt = C.load(str(path), expect_variant="parts")
    assert ckpt["config"] == cfg and C.load(str(path))["format"] == C.FORMAT
    rebuilt = C.build_generator(ckpt)
    assert not rebuilt.training and all(not m.training for m in rebuilt.modules())
    assert rebuilt.state_dict().keys() == g.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), g.state_dict().values()))
    assert next(rebuilt.parameters()).device == torch.device("cpu")
    assert rebuilt.image_size == (64, 32) and rebuilt.sigma == 2.0 and rebuilt.ops_backend is None
    assert C.build_generator(ckpt, device="cpu", ops_backend="reference").ops_backend == "reference"
    on_meta = C.build_generator(ckpt, device="meta")  # moved where it is asked to go
    assert {p.device.type for p in on_meta.parameters()} == {"meta"} and not on_meta.training
    with pytest.raises(C.CheckpointError) as err:
        C.load(str(path), expect_variant="full")
    assert str(err.value) == (f"checkpoint {path} holds a generator of variant 'parts', but variant 'full' was "
                              "asked for; use --variant parts (or a matching checkpoint)")
    bad = dict(ckpt, config=dict(cfg, width_mult=0.25))
    with pytest.raises(C.CheckpointError) as err:
        C.build_generator(bad)
    assert str(err.value).startswith("the checkpoint's generator does not match its config (variant 'parts', "
                                     "width 0.25): Error(s) in loading state_dict")


def test_a_gpu_run_s_checkpoint_loads_on_a_cpu_only_machine(tmp_path):
    """A checkpoint whose tensors were saved from a GPU is read onto the CPU."""
    path = tmp_path / "ckpt.pt"
    with saved_as_on_cuda():
        g, cfg = _tiny_checkpoint(path)
    rebuilt = C.build_generator(C.load(str(path)))
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), g.state_dict().values()))


def test_load_refusals(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        C.load(str(tmp_path / "none.pt"))
    assert str(err.value) == f"checkpoint not found: {tmp_path / 'none.pt'}"
    os.makedirs(tmp_path / "run")
    with pytest.raises(C.CheckpointError) as err:  # a run's folder given for its checkpoint
        C.load(str(tmp_path / "run"))
    assert str(err.value) == (f"{tmp_path / 'run'} is a folder, not a checkpoint file (a training run's checkpoint "
                              f"is {tmp_path / 'run' / 'checkpoint.pt'})")
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else", "config": {"variant": "parts"}}, other)
    with pytest.raises(C.CheckpointError) as err:
        C.load(str(other))
    assert str(err.value) == f"{other} is not a DeformGAN checkpoint (format 'deformgan-checkpoint-v1' expected)"
    torch.save([1, 2], other)
    with pytest.raises(C.CheckpointError, match="is not a DeformGAN checkpoint"):
        C.load(str(other))

    torch.save({"format": C.FORMAT, "x": Custom()}, other)  # weights_only refuses arbitrary classes
    with pytest.raises(C.CheckpointError) as err:
        C.load(str(other))
    assert str(err.value).startswith(f"cannot read checkpoint {other}: ")
    assert "Weights only load failed" in str(err.value)


def test_load_refuses_incomplete_checkpoints_and_non_finite_weights(tmp_path):
    """A checkpoint without its config or generator, or holding a NaN/inf weight (a run
    that diverged), is refused by every command that loads it, naming what is wrong."""
    good = tmp_path / "good.pt"
    _tiny_checkpoint(str(good))
    state = torch.load(good, weights_only=True)
    for key in ("config", "generator"):
        broken = dict(state)
        del broken[key]
        torch.save(broken, tmp_path / "b.pt")
        with pytest.raises(C.CheckpointError) as err:
            C.load(str(tmp_path / "b.pt"))
        assert str(err.value) == f"checkpoint {tmp_path / 'b.pt'} is incomplete: it has no {key}; it was not loaded"
    name = next(k for k, v in state["generator"].items() if v.is_floating_point())
    for bad in (float("nan"), float("inf")):
        broken = dict(state, generator=dict(state["generator"]))
        broken["generator"][name] = broken["generator"][name].clone()
        broken["generator"][name].view(-1)[0] = bad
        torch.save(broken, tmp_path / "nan.pt")
        with pytest.raises(C.CheckpointError) as err:
            C.load(str(tmp_path / "nan.pt"))
        assert str(err.value) == (f"checkpoint {tmp_path / 'nan.pt'} holds non-finite values (NaN or inf) in generator "
                                  f"weight {name!r}: a run that diverged; it was not loaded")
    assert C.load(str(good))["format"] == C.FORMAT
