"""The training engine's parts against hand-worked answers: the pair order (epochs,
ranks, flips, resuming), flipped items, the loader, the logs (JSONL, CSV with a widened
header, TensorBoard scalars), the sample grid, the device and distributed set-up,
seeding, bf16 autocast's choice, optional outputs, the sample batch and the data
folder. The loop itself is tested end to end in test_train.py."""
import csv
import json
import os
import random
import sys
import types
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from deformgan import engine as E
from deformgan.engine import cpu_has_native_bf16 as real_cpu_has_native_bf16  # before conftest patches it
from deformgan import pose as P
from deformgan.config import TrainConfig
from deformgan.data.market import write_annotations, write_pairs
from deformgan.viz import grid, pose_image, to_hwc

from helpers import warned_at


# ---------------------------------------------------------------- PairOrder
def take(order, k):
    it = iter(order)
    return [next(it) for _ in range(k)]


def test_pair_order_refuses_a_set_smaller_than_the_global_batch():
    with pytest.raises(ValueError) as err:
        E.PairOrder(5, 3, 0, 0.0, rank=0, world=2)
    assert str(err.value) == "5 pairs cannot fill a global batch of 6"
    E.PairOrder(6, 3, 0, 0.0, rank=1, world=2)  # exactly one global batch is enough


def test_pair_order_follows_the_documented_seeded_permutation_per_epoch():
    """Epoch e's order is torch.randperm(n) drawn from a generator seeded
    seed * 1000003 + e, then one uniform per pair for the flips (the order checkpoints
    from earlier versions resume into)."""
    n, b, seed, flip = 7, 2, 4, 0.5
    batches = take(E.PairOrder(n, b, seed, flip), 9)
    for epoch in (0, 1, 2):
        g = torch.Generator().manual_seed(seed * 1000003 + epoch)
        perm = torch.randperm(n, generator=g).tolist()
        flips = (torch.rand(n, generator=g) < flip).tolist()
        expected = [[(perm[i], flips[i]) for i in range(s, s + b)] for s in (0, 2, 4)]  # the 7th is left out
        assert batches[3 * epoch:3 * epoch + 3] == expected
    assert batches[:3] != batches[3:6] != batches[6:]


def test_pair_order_epochs_cover_distinct_pairs_and_flip_as_asked():
    n, b = 10, 3
    for flip, want in ((0.0, {False}), (1.0, {True})):
        order = E.PairOrder(n, b, 1, flip)
        batches = take(order, 9)  # three epochs of three batches (one pair left out each)
        for e in range(3):
            idx = [i for batch in batches[3 * e:3 * e + 3] for i, _ in batch]
            assert len(idx) == 9 and len(set(idx)) == 9 and set(idx) <= set(range(n))
        assert {f for batch in batches for _, f in batch} == want
        assert all(len(batch) == b for batch in batches)
    flips = [f for batch in take(E.PairOrder(1000, 10, 2, 0.3), 100) for _, f in batch]
    assert 0.25 < sum(flips) / len(flips) < 0.35
    other = [i for batch in take(E.PairOrder(10, 3, 2, 0.0), 3) for i, _ in batch]
    assert other != [i for batch in take(E.PairOrder(10, 3, 1, 0.0), 3) for i, _ in batch]


def test_pair_order_ranks_split_the_global_batch_of_one_process():
    n, b, world = 11, 2, 3
    one = take(E.PairOrder(n, b * world, 5, 0.5), 4)
    ranks = [take(E.PairOrder(n, b, 5, 0.5, rank=r, world=world), 4) for r in range(world)]
    for k in range(4):
        assert one[k] == [item for r in range(world) for item in ranks[r][k]]


def test_pair_order_state_and_resuming_continue_the_same_sequence():
    order = E.PairOrder(7, 2, 3, 0.5)
    it = iter(order)
    assert order.state() == {"epoch": 0, "position": 0}
    next(it)
    assert order.state() == {"epoch": 0, "position": 2}
    next(it), next(it)
    assert order.state() == {"epoch": 0, "position": 6}
    next(it)  # the first batch of epoch 1
    assert order.state() == {"epoch": 1, "position": 2}
    rest = [next(it) for _ in range(4)]
    resumed = take(E.PairOrder(7, 2, 3, 0.5, epoch=1, position=2), 4)
    assert resumed == rest
    world = E.PairOrder(12, 2, 3, 0.0, rank=1, world=2)
    take(world, 3)  # 12 pairs: three global batches of 4, none left out
    assert world.state() == {"epoch": 0, "position": 12}


# ---------------------------------------------------------------- PairDataset, loader
class FakeBase:
    """Two items of a 2x5 image set: source pixel values 0..9, target 10..19; only
    the right knee (source) / left wrist (target) present."""
    width = 5

    def __len__(self):
        return 2

    def __getitem__(self, index):
        src = torch.arange(30, dtype=torch.float32).view(3, 2, 5) + 100 * index
        kp_a = torch.full((18, 2), -1.0)
        kp_a[P.J["r_knee"]] = torch.tensor([1.0, 0.0])
        kp_b = torch.full((18, 2), -1.0)
        kp_b[P.J["l_wrist"]] = torch.tensor([4.0, 1.0])
        return dict(source_image=src, target_image=src + 1000, source_keypoints=kp_a, target_keypoints=kp_b,
                    source_name=f"s{index}", target_name=f"t{index}")


def test_pair_dataset_flips_images_and_poses_of_the_item_asked_for():
    ds = E.PairDataset(FakeBase())
    assert len(ds) == 2
    plain = ds[(1, False)]
    assert torch.equal(plain["source_image"], FakeBase()[1]["source_image"])
    assert plain["source_keypoints"][P.J["r_knee"]].tolist() == [1.0, 0.0]
    flipped = ds[(1, True)]
    src = np.arange(30, dtype=np.float32).reshape(3, 2, 5)[..., ::-1] + 100
    assert np.array_equal(flipped["source_image"].numpy(), src)
    assert np.array_equal(flipped["target_image"].numpy(), src + 1000)
    kp_a, kp_b = flipped["source_keypoints"], flipped["target_keypoints"]
    assert kp_a[P.J["l_knee"]].tolist() == [3.0, 0.0] and kp_b[P.J["r_wrist"]].tolist() == [0.0, 1.0]
    assert int(P.present(kp_a).sum()) == 1 and int(P.present(kp_b).sum()) == 1
    assert flipped["source_name"] == "s1" and flipped["target_name"] == "t1"


def test_make_loader_batches_in_the_orders_order_and_pins_memory_for_cuda_only():
    ds = E.PairDataset(FakeBase())
    order = E.PairOrder(2, 1, 0, 1.0)
    loader = E.make_loader(ds, order, 0, torch.device("cpu"))
    assert loader.num_workers == 0 and loader.pin_memory is False and loader.batch_sampler is order
    it = iter(loader)
    for (index, flip), in take(E.PairOrder(2, 1, 0, 1.0), 3):
        batch = next(it)
        assert batch["source_image"].shape == (1, 3, 2, 5) and flip
        assert torch.equal(batch["source_image"][0], ds[(index, True)]["source_image"])
        assert batch["source_name"] == [f"s{index}"]
    assert E.make_loader(ds, order, 2, torch.device("cuda", 0)).pin_memory is True
    assert E.make_loader(ds, order, 2, torch.device("cpu")).num_workers == 2


# ---------------------------------------------------------------- Logger
class FakeWriter:
    made = []

    def __init__(self, folder):
        self.folder, self.scalars, self.closed = folder, [], False
        FakeWriter.made.append(self)

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def close(self):
        self.closed = True


@pytest.fixture
def fake_tensorboard(monkeypatch):
    """torch.utils.tensorboard needs the optional tensorboard package: a stand-in."""
    FakeWriter.made = []
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    return FakeWriter.made


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def test_logger_writes_jsonl_csv_and_scalars(tmp_path, fake_tensorboard):
    log = E.Logger(str(tmp_path), enabled=True, resume=False)
    assert fake_tensorboard[0].folder == os.path.join(str(tmp_path), "tensorboard")
    log.log({"step": 1, "loss_d": 0.5, "loss_g": 2.0, "note": "x"})
    log.log({"step": 2, "loss_d": 0.25, "loss_g": 1.5, "note": "y"})
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"step": 1, "loss_d": 0.5, "loss_g": 2.0, "note": "x"},
                                                   {"step": 2, "loss_d": 0.25, "loss_g": 1.5, "note": "y"}]
    assert read_csv(tmp_path / "log.csv") == [["step", "loss_d", "loss_g", "note"], ["1", "0.5", "2.0", "x"],
                                              ["2", "0.25", "1.5", "y"]]
    assert fake_tensorboard[0].scalars == [("loss_d", 0.5, 1), ("loss_g", 2.0, 1), ("loss_d", 0.25, 2),
                                           ("loss_g", 1.5, 2)]
    log.close()
    assert fake_tensorboard[0].closed


def test_logger_widens_the_csv_header_keeping_old_rows_blank_there(tmp_path, fake_tensorboard):
    log = E.Logger(str(tmp_path), enabled=True, resume=False)
    log.log({"step": 1, "loss_a": 1.0})
    log.log({"step": 2, "loss_a": 2.0, "loss_b": 3.0})
    log.log({"step": 3, "loss_b": 4.0})
    assert read_csv(tmp_path / "log.csv") == [["step", "loss_a", "loss_b"], ["1", "1.0", ""], ["2", "2.0", "3.0"],
                                              ["3", "", "4.0"]]
    assert not (tmp_path / "log.csv.tmp").exists()
    # a resumed run reads the header of the file it appends to, and widens it too
    again = E.Logger(str(tmp_path), enabled=True, resume=True)
    again.log({"step": 4, "loss_b": 5.0, "loss_c": 6.0})
    assert read_csv(tmp_path / "log.csv") == [["step", "loss_a", "loss_b", "loss_c"], ["1", "1.0", "", ""],
                                              ["2", "2.0", "3.0", ""], ["3", "", "4.0", ""], ["4", "", "5.0", "6.0"]]
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 4


def test_logger_resuming_into_an_empty_csv_writes_its_header(tmp_path, fake_tensorboard):
    """A run stopped after creating log.csv but before its first row: the resumed run
    writes the header, then its rows."""
    (tmp_path / "log.csv").write_text("")
    log = E.Logger(str(tmp_path), enabled=True, resume=True)
    log.log({"step": 5, "loss": 0.5})
    log.log({"step": 6, "loss": 0.25})
    assert read_csv(tmp_path / "log.csv") == [["step", "loss"], ["5", "0.5"], ["6", "0.25"]]


def test_logger_starts_afresh_unless_resuming_and_writes_nothing_when_disabled(tmp_path, fake_tensorboard):
    for name in ("log.csv", "log.jsonl"):
        (tmp_path / name).write_text("old\n")
    E.Logger(str(tmp_path), enabled=True, resume=True)
    assert (tmp_path / "log.csv").read_text() == "old\n" and (tmp_path / "log.jsonl").read_text() == "old\n"
    off = E.Logger(str(tmp_path), enabled=False, resume=False)
    off.log({"step": 1, "loss": 1.0})
    off.close()
    assert (tmp_path / "log.csv").read_text() == "old\n" and (tmp_path / "log.jsonl").read_text() == "old\n"
    assert len(fake_tensorboard) == 1 and off.tb is None
    E.Logger(str(tmp_path), enabled=True, resume=False)
    assert not (tmp_path / "log.csv").exists() and not (tmp_path / "log.jsonl").exists()


def test_logger_goes_on_without_tensorboard(tmp_path, monkeypatch):
    def broken(folder):
        raise ImportError("no tensorboard")
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=broken))
    log = E.Logger(str(tmp_path), enabled=True, resume=False)
    assert log.tb is None
    log.log({"step": 1, "loss": 1.0})
    log.close()
    assert read_csv(tmp_path / "log.csv") == [["step", "loss"], ["1", "1.0"]]


# ---------------------------------------------------------------- sample grid
class RecordingGenerator(torch.nn.Module):
    """Returns minus the source image; records its mode and grad mode."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, image, kp_a, kp_b):
        self.calls.append((self.training, torch.is_grad_enabled(), image.device, kp_a.clone(), kp_b.clone()))
        return -image


def test_save_samples_draws_source_pose_generated_target_and_restores_the_mode(tmp_path):
    g = torch.Generator().manual_seed(0)
    batch = dict(source_image=torch.rand(2, 3, 8, 6, generator=g) * 2 - 1,
                 target_image=torch.rand(2, 3, 8, 6, generator=g) * 2 - 1,
                 source_keypoints=torch.rand(2, 18, 2, generator=g) * 5,
                 target_keypoints=torch.rand(2, 18, 2, generator=g) * 5)
    gen = RecordingGenerator()
    path = tmp_path / "samples" / "step_000003.png"
    E.save_samples(str(path), gen, batch, torch.device("cpu"))
    (training, grad, device, kp_a, kp_b), = gen.calls
    assert training is False and grad is False and device == torch.device("cpu")
    assert torch.equal(kp_a, batch["source_keypoints"]) and torch.equal(kp_b, batch["target_keypoints"])
    assert gen.training is True
    rows = [[Image.fromarray(to_hwc(batch["source_image"][i])), pose_image(batch["target_keypoints"][i], 8, 6),
             Image.fromarray(to_hwc(-batch["source_image"][i])), Image.fromarray(to_hwc(batch["target_image"][i]))]
            for i in range(2)]
    want = np.asarray(grid(rows, titles=["source", "target pose", "generated", "target"]))
    assert np.array_equal(np.asarray(Image.open(path)), want)
    gen.eval()
    E.save_samples(str(path), gen, batch, torch.device("cpu"))
    assert gen.training is False


# ---------------------------------------------------------------- device, distributed, seeds
def test_device_choice(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert E._device(TrainConfig(device="cpu")) == torch.device("cpu")
    assert E._device(TrainConfig(device="cuda:1")) == torch.device("cuda", 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert E._device(TrainConfig(device="auto")) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert E._device(TrainConfig(device="auto")) == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert E._device(TrainConfig(device="auto")) == torch.device("cuda", 3)


def test_setup_distributed_starts_a_group_only_for_several_processes(monkeypatch):
    calls = []
    state = {"on": False}
    monkeypatch.setattr(E.dist, "is_initialized", lambda: state["on"])

    def init(backend):
        calls.append(backend)
        state["on"] = True
    monkeypatch.setattr(E.dist, "init_process_group", init)
    monkeypatch.setattr(E.dist, "get_rank", lambda: 2)
    monkeypatch.setattr(E.dist, "get_world_size", lambda: 4)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert E._setup_distributed() == (0, 1) and calls == []
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert E._setup_distributed() == (0, 1) and calls == []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert E._setup_distributed() == (2, 4) and calls == ["gloo"]
    assert E._setup_distributed() == (2, 4) and calls == ["gloo"]  # already started: not again
    state["on"] = False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert E._setup_distributed() == (2, 4) and calls == ["gloo", "nccl"]


def test_seed_all_seeds_python_numpy_and_torch():
    for seed, np_seed in ((7, 7), (2**32 + 5, 5)):
        E._seed_all(seed)
        got = (random.random(), float(np.random.rand()), float(torch.rand(1)))
        random.seed(seed)
        np.random.seed(np_seed)
        torch.manual_seed(seed)
        assert got == (random.random(), float(np.random.rand()), float(torch.rand(1)))


# ---------------------------------------------------------------- autocast, optional outputs
def test_autocast_choice_for_each_device_and_flag(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    monkeypatch.setattr(E, "cpu_has_native_bf16", lambda: True)
    assert E.autocast_enabled(TrainConfig(amp=True), cuda) is True
    assert E.autocast_enabled(TrainConfig(amp=False), cuda) is False
    assert E.autocast_enabled(TrainConfig(amp=True), cpu) is True  # the default, on a CPU with native bf16
    assert E.autocast_enabled(TrainConfig(amp=True, cpu_amp=False), cpu) is False
    assert E.autocast_enabled(TrainConfig(amp=False), cpu) is False
    assert E.autocast_enabled(TrainConfig(amp=True, cpu_amp=True), cpu) is True
    assert E.autocast_enabled(TrainConfig(amp=False, cpu_amp=True), cpu) is False
    assert E.autocast_enabled(TrainConfig(amp=True, cpu_amp=True), torch.device("meta")) is False
    monkeypatch.setattr(E, "cpu_has_native_bf16", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert E.autocast_enabled(TrainConfig(amp=True), cpu) is False  # the default: float32 here, no warning
    with pytest.warns(RuntimeWarning) as rec:
        assert E.autocast_enabled(TrainConfig(amp=True, cpu_amp=True), cpu) is False
    assert len(rec) == 1 and str(rec[0].message) == (
        "--cpu-amp: this CPU has no native bfloat16 (AVX512-BF16/AMX); training in float32")
    assert warned_at(rec[0], __file__)  # reported at the caller


def test_use_fused_adam_sets_this_runs_flags_and_float32_step_counts():
    """What a resumed run does to the optimiser load_state_dict brought back: this run's
    implementation (fused and for-each are refused together), float32 step counts."""
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([p], lr=0.1, foreach=True)
    p.grad = torch.ones(3)
    opt.step()
    opt.state[p]["step"] = torch.tensor(1.0, dtype=torch.float64)  # as another writer may have saved it
    E.use_fused_adam(opt, True)
    assert opt.param_groups[0]["fused"] is True and opt.param_groups[0]["foreach"] is None
    step = opt.state[p]["step"]
    assert step.dtype == torch.float32 and step.device == p.device and float(step) == 1
    opt.step()  # the fused kernel
    assert float(opt.state[p]["step"]) == 2
    E.use_fused_adam(opt, False)
    assert opt.param_groups[0]["fused"] is None and opt.param_groups[0]["foreach"] is None
    opt.step()
    assert float(opt.state[p]["step"]) == 3


def test_cpu_has_native_bf16_needs_onednn_and_avx512_bf16_or_amx(monkeypatch):
    """The real probe (tests/conftest.py patches the engine's name for training tests):
    oneDNN's bf16 support alone is not enough (it emulates bf16 on plain AVX512), and a
    torch that cannot tell means no."""
    import torch.backends.mkldnn  # noqa: F401

    class NoProbe:
        def __getattr__(self, name):
            raise AttributeError(name)

    class BrokenProbe:
        def _is_mkldnn_bf16_supported(self):
            raise RuntimeError("no oneDNN")

    class Probe:
        def __init__(self, answer):
            self.answer = answer

        def _is_mkldnn_bf16_supported(self):
            return self.answer
    for onednn, avx512_bf16, amx, want in ((NoProbe(), True, True, False), (BrokenProbe(), True, True, False),
                                           (Probe(1), True, False, True), (Probe(True), False, True, True),
                                           (Probe(True), False, False, False), (Probe(0), True, True, False)):
        monkeypatch.setattr(torch.ops, "mkldnn", onednn)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        assert real_cpu_has_native_bf16() is want
    monkeypatch.setattr(torch.ops, "mkldnn", Probe(True))
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")  # a torch without the name
    assert real_cpu_has_native_bf16() is False


def test_optional_outputs_report_each_kind_of_failure_once_and_go_on(monkeypatch, capsys):
    monkeypatch.setattr(E, "_optional_failures", {})
    seen = []
    E._optional("writing x", lambda a, b: seen.append((a, b)), 1, 2)
    assert seen == [(1, 2)] and capsys.readouterr().err == ""

    def fail(msg):
        raise OSError(msg)
    E._optional("writing the logs", fail, "disk full")
    E._optional("writing the logs", fail, "disk still full")
    E._optional("writing the grid", fail, "no space")
    assert capsys.readouterr().err.splitlines() == [
        "[deformgan.train] WARNING: writing the logs failed (OSError: disk full); training goes on and "
        "checkpoints are still written",
        "[deformgan.train] WARNING: writing the grid failed (OSError: no space); training goes on and "
        "checkpoints are still written"]
    assert E._optional_failures == {"writing the logs": 2, "writing the grid": 1}


def test_jsonable_turns_tuples_into_lists_only():
    assert E._jsonable({"a": (1, 2), "b": [3], "c": "x", "d": None}) == {"a": [1, 2], "b": [3], "c": "x", "d": None}


def test_phase_is_a_profiler_label():
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with E._phase("step/test-label"):
            torch.ones(2) + 1
    assert "step/test-label" in {e.key for e in prof.key_averages()}


# ---------------------------------------------------------------- sample batch, data folder
def tiny_folder(root, test_images=True):
    """Four train images (two ids) and three test images (one id), solid colours: image
    k has red value 10 * k; keypoints with the right shoulder at (k, k)."""
    names = {"train": [f"000{p}_c1s1_00000{k}_00.jpg" for p in (1, 2) for k in (1, 2)],
             "test": [f"0003_c1s1_00000{k}_00.jpg" for k in (1, 2, 3)]}
    value = 0
    for split in ("train", "test"):
        if split == "test" and not test_images:
            value += 3
            continue
        os.makedirs(os.path.join(root, f"bounding_box_{split}"), exist_ok=True)
        for name in names[split]:
            value += 1
            Image.new("RGB", (64, 128), (10 * value, 0, 0)).save(os.path.join(root, f"bounding_box_{split}", name),
                                                                 quality=100)
    value = 0
    for split in ("train", "test"):
        ann = {}
        for name in names[split]:
            value += 1
            kp = torch.full((18, 2), -1.0)
            for j in range(14):
                kp[j] = torch.tensor([float(value + j), float(value + 2 * j)])
            ann[name] = kp
        write_annotations(os.path.join(root, f"annotations-{split}.csv"), ann)
    write_pairs(os.path.join(root, "pairs-test.csv"),
                [(names["test"][a], names["test"][b]) for a, b in ((0, 1), (1, 2), (2, 0), (1, 0))])
    return names


def red(batch, key):
    return [round((float(v) + 1) * 127.5 / 10) for v in batch[key][:, 0, 64, 32]]


def test_sample_batch_takes_evenly_spaced_test_pairs_or_the_first_train_pairs(tmp_path):
    from deformgan.data.market import MarketPoseDataset
    root = str(tmp_path)
    names = tiny_folder(root)
    train_pairs = [(names["train"][0], names["train"][1]), (names["train"][1], names["train"][0]),
                   (names["train"][2], names["train"][3])]
    train = MarketPoseDataset(root, os.path.join(root, "annotations-train.csv"), train_pairs, heatmaps=False)
    cfg = TrainConfig()
    test_ann, test_pairs = os.path.join(root, "annotations-test.csv"), os.path.join(root, "pairs-test.csv")
    two = E._sample_batch(cfg, root, test_ann, test_pairs, train, count=2)  # 4 test pairs: the 1st and 3rd
    assert red(two, "source_image") == [5, 7] and red(two, "target_image") == [6, 5]
    assert two["source_keypoints"][:, 1].tolist() == [[6.0, 7.0], [8.0, 9.0]]
    assert two["target_keypoints"][:, 1].tolist() == [[7.0, 8.0], [6.0, 7.0]]
    assert set(two) == {"source_image", "target_image", "source_keypoints", "target_keypoints"}
    six = E._sample_batch(cfg, root, test_ann, test_pairs, train)  # fewer pairs than 6: every one
    assert red(six, "source_image") == [5, 6, 7, 6] and red(six, "target_image") == [6, 7, 5, 5]
    three = E._sample_batch(cfg, root, test_ann, test_pairs, train, count=3)  # step 4 // 3 = 1
    assert red(three, "source_image") == [5, 6, 7]
    for ann, pairs in ((None, test_pairs), (test_ann, None)):
        first = E._sample_batch(cfg, root, ann, pairs, train)
        assert red(first, "source_image") == [1, 2, 3] and red(first, "target_image") == [2, 1, 4]


def test_sample_batch_uses_the_train_pairs_when_the_test_images_are_missing(tmp_path):
    from deformgan.data.market import MarketPoseDataset
    root = str(tmp_path)
    names = tiny_folder(root, test_images=False)
    train = MarketPoseDataset(root, os.path.join(root, "annotations-train.csv"),
                              [(names["train"][0], names["train"][2])], heatmaps=False)
    got = E._sample_batch(TrainConfig(), root, os.path.join(root, "annotations-test.csv"),
                          os.path.join(root, "pairs-test.csv"), train)
    assert red(got, "source_image") == [1] and red(got, "target_image") == [3]


def test_sample_batch_reads_test_images_at_the_configured_size(tmp_path, monkeypatch):
    from deformgan.data.market import MarketPoseDataset
    root = str(tmp_path)
    names = tiny_folder(root)
    for f in os.listdir(os.path.join(root, "bounding_box_test")):  # the test images at 64x32
        p = os.path.join(root, "bounding_box_test", f)
        Image.open(p).resize((32, 64)).save(p, quality=100)
    train = MarketPoseDataset(root, os.path.join(root, "annotations-train.csv"),
                              [(names["train"][0], names["train"][2])], heatmaps=False, height=64, width=32)
    made = []

    class Recording(MarketPoseDataset):
        def __init__(self, *args, **kwargs):
            made.append(kwargs)
            super().__init__(*args, **kwargs)
    monkeypatch.setattr(E, "MarketPoseDataset", Recording)
    got = E._sample_batch(TrainConfig(image_size=(64, 32)), root, os.path.join(root, "annotations-test.csv"),
                          os.path.join(root, "pairs-test.csv"), train, count=1)
    assert got["source_image"].shape == (1, 3, 64, 32)
    assert made == [dict(split="test", heatmaps=False, height=64, width=32)]  # no heatmaps: not drawn


def test_sample_batch_takes_six_evenly_spaced_pairs_by_default(tmp_path):
    from deformgan.data.market import MarketPoseDataset
    root = str(tmp_path)
    names = tiny_folder(root, test_images=False)
    pairs = [(names["train"][k % 4], names["train"][(k + 1) % 4]) for k in range(13)]
    train = MarketPoseDataset(root, os.path.join(root, "annotations-train.csv"), pairs, heatmaps=False)
    got = E._sample_batch(TrainConfig(), root, None, None, train)  # 13 // 6 = 2: pairs 0, 2, ..., 10
    assert red(got, "source_image") == [1, 3, 1, 3, 1, 3] and red(got, "target_image") == [2, 4, 2, 4, 2, 4]
    assert got["source_keypoints"][:, 0, 0].tolist() == [1.0, 3.0, 1.0, 3.0, 1.0, 3.0]


def test_prepare_data_reads_the_folder_or_makes_the_synthetic_set(tmp_path, monkeypatch):
    root = str(tmp_path / "set")
    tiny_folder(root)
    a = os.path.join
    assert E.prepare_data(TrainConfig(data=root)) == (
        root, a(root, "annotations-train.csv"), None, a(root, "annotations-test.csv"), a(root, "pairs-test.csv"))
    write_pairs(a(root, "pairs-train.csv"), [])
    own = TrainConfig(data=root, annotations="mine.csv", pairs="my-pairs.csv")
    assert E.prepare_data(own)[1:3] == ("mine.csv", "my-pairs.csv")
    assert E.prepare_data(TrainConfig(data=root))[2] == a(root, "pairs-train.csv")
    calls = []

    def maker(kind):
        def make(ids, per_id, make):
            calls.append((kind, ids, per_id, make))
            return root
        return make
    monkeypatch.setattr(E, "ensure_synthetic", maker("market"))
    monkeypatch.setattr(E, "ensure_synthetic_fashion", maker("fashion"))
    assert E.prepare_data(TrainConfig(synthetic_ids=7, synthetic_images_per_id=3))[0] == root
    assert E.prepare_data(TrainConfig(synthetic="fashion", synthetic_ids=4, synthetic_images_per_id=2),
                          rank=1)[0] == root
    assert calls == [("market", 7, 3, True), ("fashion", 4, 2, False)]
    monkeypatch.setattr(E.dist, "is_initialized", lambda: True)  # every rank waits for the maker
    monkeypatch.setattr(E.dist, "barrier", lambda: calls.append("barrier"))
    E.prepare_data(TrainConfig(synthetic_ids=7, synthetic_images_per_id=3), rank=1)
    assert calls[2:] == [("market", 7, 3, False), "barrier"]
    E.prepare_data(TrainConfig(data=root))
    assert len(calls) == 4  # a folder given: no maker, no barrier
    os.remove(a(root, "annotations-train.csv"))
    with pytest.raises(FileNotFoundError, match="annotations-train.csv"):
        E.prepare_data(TrainConfig(data=root))
