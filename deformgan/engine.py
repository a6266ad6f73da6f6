"""The training engine: the pair order, the data loader, the logs and sample grids,
and the loop (:func:`train`). :mod:`deformgan.train` is its command line."""
import csv
import dataclasses
import hashlib
import json
import os
import random
import shutil
import sys
import time
import warnings
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from . import checkpoint as ckpt_io
from . import pose as P
from .config import TrainConfig
from .data.layout import discover, ensure_synthetic, ensure_synthetic_fashion
from .data.market import MarketPoseDataset, read_annotations, standard_pairs
from .losses import GeneratorLoss, discriminator_loss
from .outputs import OutputExists, OutputLock
from .models import Discriminator, Generator


class NonFiniteLoss(RuntimeError):
    pass


# ---------------------------------------------------------------- data
def prepare_data(cfg: TrainConfig, rank: int = 0) -> Tuple[str, str, str, Optional[str], Optional[str]]:
    """(root, train annotations, train pairs, test annotations, test pairs); the
    synthetic demo set is made on first use when no --data is given."""
    if cfg.data is None:
        make = ensure_synthetic_fashion if cfg.synthetic == "fashion" else ensure_synthetic
        root = make(cfg.synthetic_ids, cfg.synthetic_images_per_id, make=rank == 0)
        if dist.is_initialized():
            dist.barrier()
    else:
        root = cfg.data
    layout = discover(root)
    ann = cfg.annotations or layout.require_annotations("train")
    pairs = cfg.pairs or layout.pairs("train")
    return root, ann, pairs, layout.annotations("test"), layout.pairs("test")


class PairOrder:
    """Deterministic, resumable order of (pair index, flip) items: one seeded
    permutation per epoch; a global batch of ``batch_size * world`` is split between
    ranks, so N processes see what one process with the global batch would."""

    def __init__(self, n: int, batch_size: int, seed: int, flip: float, rank: int = 0, world: int = 1,
                 epoch: int = 0, position: int = 0):
        if n < batch_size * world:
            raise ValueError(f"{n} pairs cannot fill a global batch of {batch_size * world}")
        self.n, self.batch_size, self.seed, self.flip = n, batch_size, seed, flip
        self.rank, self.world = rank, world
        self.epoch, self.position = epoch, position

    def _epoch_order(self, epoch: int):
        g = torch.Generator().manual_seed(self.seed * 1000003 + epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        flips = (torch.rand(self.n, generator=g) < self.flip).tolist()
        return perm, flips

    def __iter__(self) -> Iterator[List[Tuple[int, bool]]]:
        gb = self.batch_size * self.world
        while True:
            perm, flips = self._epoch_order(self.epoch)
            while self.position + gb <= self.n:
                start = self.position + self.rank * self.batch_size
                batch = [(perm[i], flips[i]) for i in range(start, start + self.batch_size)]
                self.position += gb
                yield batch
            self.epoch += 1
            self.position = 0

    def state(self) -> Dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}


class PairDataset(torch.utils.data.Dataset):
    """MarketPoseDataset items addressed by (index, flip) with images and keypoints only
    (the geometry is rendered in batch on the training device)."""

    def __init__(self, base: MarketPoseDataset):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, key):
        index, flip = key
        item = self.base[index]
        if flip:
            W = self.base.width
            for k in ("source_image", "target_image"):
                item[k] = item[k].flip(-1)
            for k in ("source_keypoints", "target_keypoints"):
                item[k] = P.flip_keypoints(item[k], W)
        return item


def make_loader(dataset, order: PairOrder, num_workers: int, device: torch.device):
    return torch.utils.data.DataLoader(dataset, batch_sampler=order, num_workers=num_workers,
                                       pin_memory=device.type == "cuda", persistent_workers=False)


# ---------------------------------------------------------------- outputs
class Logger:
    """log.csv and log.jsonl (and TensorBoard). A resumed run first drops the rows past
    its checkpoint's step (logged by the interrupted run after its last checkpoint), so
    that no step is logged twice."""

    def __init__(self, out: str, enabled: bool, resume: bool, resumed_step: Optional[int] = None):
        self.enabled = enabled
        self.csv_path = os.path.join(out, "log.csv")
        self.jsonl_path = os.path.join(out, "log.jsonl")
        self.fields: Optional[List[str]] = None
        self.tb = None
        if not enabled:
            return
        if not resume:
            for p in (self.csv_path, self.jsonl_path):
                if os.path.exists(p):
                    os.remove(p)
        elif resumed_step is not None:
            self._drop_rows_after(resumed_step)
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(os.path.join(out, "tensorboard"))
        except Exception:  # tensorboard is optional
            self.tb = None

    def log(self, row: Dict):
        if not self.enabled:
            return
        with open(self.jsonl_path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        new = not os.path.exists(self.csv_path)
        if self.fields is None:
            self.fields = list(row) if new else self._header()
        missing = [k for k in row if k not in self.fields]
        if missing:
            # A column this file lacks (a resumed run with other loss terms): widen
            # the header, rewriting the file with the old rows blank there.
            self.fields = self.fields + missing
            if not new:
                self._rewrite()
        with open(self.csv_path, "a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=self.fields, restval="")
            if new:
                w.writeheader()
            w.writerow(row)
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(k, v, row["step"])

    def _drop_rows_after(self, step: int) -> None:
        if os.path.exists(self.jsonl_path):
            with open(self.jsonl_path) as fh:
                lines = fh.readlines()
            keep = []
            for line in lines:
                try:
                    if json.loads(line)["step"] <= step:
                        keep.append(line if line.endswith("\n") else line + "\n")
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by the kill
            if keep != lines:
                _replace_text(self.jsonl_path, "".join(keep))
        if os.path.exists(self.csv_path):
            with open(self.csv_path, newline="") as fh:
                rows = list(csv.reader(fh))
            if rows:
                header, body = rows[0], rows[1:]
                at = header.index("step") if "step" in header else None
                kept = [r for r in body if at is not None and len(r) == len(header) and r[at].isdigit()
                        and int(r[at]) <= step]
                if len(kept) != len(body):
                    tmp = self.csv_path + ".tmp"
                    with open(tmp, "w", newline="") as fh:
                        w = csv.writer(fh)
                        w.writerow(header)
                        w.writerows(kept)
                    os.replace(tmp, self.csv_path)

    def _header(self) -> List[str]:
        with open(self.csv_path, newline="") as fh:
            return next(csv.reader(fh), [])

    def _rewrite(self) -> None:
        with open(self.csv_path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        tmp = self.csv_path + ".tmp"
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=self.fields, restval="")
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, self.csv_path)

    def close(self):
        if self.tb is not None:
            self.tb.close()


def _replace_text(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _check_training_images(base: MarketPoseDataset, rank: int, progress: bool) -> None:
    """Every image the training pairs use is read once before the first step: a missing
    or corrupt one is reported (named) and its pairs dropped, never a crash at the step
    that reads it (and at every resume after). No pair left is an error."""
    before = len(base.pairs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bad = base.check_images(on_error="skip", progress=progress and rank == 0)
    if bad and rank == 0:
        print(f"[deformgan.train] WARNING: {len(base.unreadable)} missing or unreadable training image(s), their "
              f"{bad} of {before} pairs left out: " + "; ".join(base.unreadable[:5])
              + (" ..." if len(base.unreadable) > 5 else ""), file=sys.stderr)
    if not base.pairs:
        raise FileNotFoundError(f"no training pair left: every pair uses a missing or unreadable image "
                                f"({'; '.join(base.unreadable[:3])})")


def save_samples(path: str, generator, batch: Dict, device) -> None:
    from PIL import Image

    from .viz import grid, pose_image, to_hwc

    was_training = generator.training
    generator.eval()
    with torch.no_grad():
        out = generator(batch["source_image"].to(device), batch["source_keypoints"], batch["target_keypoints"])
    generator.train(was_training)
    rows = []
    for i in range(out.shape[0]):
        rows.append([Image.fromarray(to_hwc(batch["source_image"][i])),
                     pose_image(batch["target_keypoints"][i], *out.shape[-2:]),
                     Image.fromarray(to_hwc(out[i])),
                     Image.fromarray(to_hwc(batch["target_image"][i]))])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    grid(rows, titles=["source", "target pose", "generated", "target"]).save(path)


# ---------------------------------------------------------------- training
def _setup_distributed():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    rank = dist.get_rank() if dist.is_initialized() else 0
    return rank, (dist.get_world_size() if dist.is_initialized() else 1)


def _device(cfg: TrainConfig) -> torch.device:
    if cfg.device != "auto":
        return torch.device(cfg.device)
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        return torch.device(f"cuda:{local}")
    return torch.device("cpu")


def _seed_all(seed: int):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(cfg: TrainConfig, resume: Optional[str] = None, max_steps_this_run: Optional[int] = None,
          progress: bool = True, overwrite: bool = False) -> Dict:
    """Run (or continue) a training; returns {"step", "history", "checkpoint"}.
    ``max_steps_this_run`` stops early (as an interruption would), for tests. The run
    holds ``cfg.out`` (:class:`deformgan.outputs.OutputLock`) while it works; a fresh run
    into a folder that holds a checkpoint is refused unless ``overwrite``."""
    rank = int(os.environ.get("RANK", "0"))
    lock = OutputLock(cfg.out, "train") if rank == 0 else None
    if lock is not None:
        lock.acquire()
    try:
        return _train(cfg, resume, max_steps_this_run, progress, overwrite)
    finally:
        if lock is not None:
            lock.release()


def _train(cfg: TrainConfig, resume: Optional[str], max_steps_this_run: Optional[int], progress: bool,
           overwrite: bool) -> Dict:
    from tqdm import tqdm

    rank, world = _setup_distributed()
    device = _device(cfg)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    _seed_all(cfg.seed)
    os.makedirs(cfg.out, exist_ok=True)
    ckpt_path = os.path.join(cfg.out, "checkpoint.pt")
    if rank == 0:
        if not resume and os.path.exists(ckpt_path):
            if not overwrite:
                raise OutputExists(f"{cfg.out} holds the checkpoint of an earlier run ({ckpt_path}): --resume to "
                                   "continue it, --overwrite to start afresh there (it is replaced), or another --out")
            for old in (ckpt_path, os.path.join(cfg.out, "samples")):
                if os.path.isdir(old):
                    shutil.rmtree(old)
                elif os.path.exists(old):
                    os.remove(old)
        ckpt_io.remove_stale_temporaries(cfg.out)  # of a write killed half-way

    root, ann, pairs_path, test_ann, test_pairs = prepare_data(cfg, rank)
    annotations = read_annotations(ann)
    pairs = pairs_path if pairs_path else standard_pairs(annotations)
    base = MarketPoseDataset(root, annotations, pairs, split="train", heatmaps=False, sigma=cfg.sigma,
                             height=cfg.image_size[0], width=cfg.image_size[1])
    _check_training_images(base, rank, progress)
    dataset = PairDataset(base)
    # what a resumed run must continue: the same pairs in the same order
    pairs_digest = hashlib.sha256("".join(f"{a},{b}\n" for a, b in base.pairs).encode()).hexdigest()

    G = Generator(cfg.variant, cfg.norm, cfg.width_mult, cfg.dropout, cfg.image_size, cfg.sigma,
                  ops_backend=cfg.ops_backend).to(device)
    D = Discriminator(cfg.norm, cfg.width_mult).to(device)
    loss_fn = GeneratorLoss(cfg.adv, cfg.l1, cfg.nn, cfg.perceptual, cfg.smooth, cfg.nn_kernel,
                            vgg_weights=cfg.vgg_weights, allow_random_vgg=cfg.allow_random_vgg,
                            ops_backend=cfg.ops_backend).to(device)
    if cfg.channels_last:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    opt_g, opt_d = make_adam(G.parameters(), cfg), make_adam(D.parameters(), cfg)
    step, data_state = 0, {"epoch": 0, "position": 0}
    if resume:
        path = ckpt_path if resume == "auto" else resume
        state = ckpt_io.load(path, expect_variant=cfg.variant)
        ckpt_io.check_architecture(state, path, dataclasses.asdict(cfg))
        if state.get("pairs_sha256") not in (None, pairs_digest):  # older checkpoints hold none
            raise ckpt_io.CheckpointError(
                f"cannot resume from {path}: it was trained on other training pairs than {root} gives now (another "
                "dataset, pairs file or split, or images that became unreadable); resume with the same data, or "
                "start a fresh run in another --out")
        G.load_state_dict(state["generator"])
        D.load_state_dict(state["discriminator"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        # The optimiser state carries the old run's hyperparameters and Adam
        # implementation: the config in force (the one written to config.json below) is
        # this run's.
        for opt in (opt_g, opt_d):
            for group in opt.param_groups:
                group["lr"] = cfg.lr
                group["betas"] = (cfg.beta1, cfg.beta2)
            use_fused_adam(opt, cfg.fused_adam)
        step, data_state = state["step"], state["data"]
        ckpt_io.set_rng_state(state["rng"])
        if rank == 0:
            print(f"[deformgan.train] resumed from {path} at step {step}", file=sys.stderr)
    if rank == 0:
        with open(os.path.join(cfg.out, "config.json"), "w") as fh:
            json.dump(dataclasses.asdict(cfg), fh, indent=1)
    Gm, Dm = G, D
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        G, D = DDP(Gm, device_ids=ids), DDP(Dm, device_ids=ids)

    order = PairOrder(len(dataset), cfg.batch_size, cfg.seed, cfg.flip, rank, world, **data_state)
    loader = iter(make_loader(dataset, order, cfg.num_workers, device))
    sample_batch = _sample_batch(cfg, root, test_ann, test_pairs, base)
    logger = Logger(cfg.out, rank == 0, resume is not None, resumed_step=step)
    amp = autocast_enabled(cfg, device)
    if amp and device.type == "cpu" and cfg.cpu_amp is None and rank == 0:
        print("[deformgan.train] bfloat16 autocast on the CPU (it has native bfloat16); --no-cpu-amp trains in "
              "float32", file=sys.stderr)
    history = []
    target_step = cfg.steps if max_steps_this_run is None else min(cfg.steps, step + max_steps_this_run)
    bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="it", disable=not (progress and rank == 0),
               dynamic_ncols=True)
    t_last, n_last = time.perf_counter(), step

    def save():
        if rank != 0:
            return
        ckpt_io.save_atomic({
            "format": ckpt_io.FORMAT, "config": _jsonable(dataclasses.asdict(cfg)), "step": step,
            "generator": Gm.state_dict(), "discriminator": Dm.state_dict(),
            "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
            "rng": ckpt_io.rng_state(), "data": order_state, "pairs_sha256": pairs_digest}, ckpt_path)

    while step < target_step:
        # The phases are labelled for the profiler (benchmarks/profile_step.py); a label
        # costs about a microsecond when no profiler runs.
        step_label = _phase("step")
        step_label.__enter__()
        with _phase("step/data"):
            batch = next(loader)
            src = batch["source_image"].to(device, non_blocking=True)
            tgt = batch["target_image"].to(device, non_blocking=True)
            if cfg.channels_last:
                src = src.contiguous(memory_format=torch.channels_last)
                tgt = tgt.contiguous(memory_format=torch.channels_last)
        with _phase("step/geometry"), torch.no_grad():
            geo = Gm.render_geometry(batch["source_keypoints"], batch["target_keypoints"])
        h_a, h_b = geo.source_heatmaps, geo.target_heatmaps
        with _phase("step/forward G, D"), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            fake, offsets = G(src, batch["source_keypoints"], batch["target_keypoints"], geometry=geo,
                              return_offsets=True)
            # discriminator step
            d_real = D(src, h_a, tgt, h_b)
            d_fake = D(src, h_a, fake.detach(), h_b)
            loss_d = discriminator_loss(d_real.float(), d_fake.float())
        with _phase("step/backward D"):
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
        with _phase("step/optimiser"):
            opt_d.step()
        with _phase("step/losses G"), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            d_fake_g = D(src, h_a, fake, h_b)
            loss_g, terms = loss_fn(fake.float(), tgt, d_fake_g.float(), offsets=offsets)
        finite = torch.isfinite(loss_g.detach()) & torch.isfinite(loss_d.detach())
        if world > 1:  # every rank stops at the same step, or none does
            flag = finite.to(torch.int32).reshape(1)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            finite = flag[0].bool()
        if not bool(finite):
            step_label.__exit__(None, None, None)
            bar.close()
            where = f"; the last good checkpoint is {ckpt_path}" if os.path.exists(ckpt_path) else ""
            raise NonFiniteLoss(f"non-finite loss at step {step + 1}: loss_g={loss_g.item()}, loss_d={loss_d.item()}, "
                                f"terms={ {k: float(v) for k, v in terms.items()} }; stopping without saving{where}")
        with _phase("step/backward G"):
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
        with _phase("step/optimiser"):
            opt_g.step()
        step += 1
        order_state = {"epoch": order.epoch, "position": order.position}
        row = {"step": step, "loss_d": loss_d.item(), "loss_g": loss_g.item()}
        row.update({f"loss_{k}": float(v) for k, v in terms.items()})
        history.append(row)
        bar.update(1)
        # The log row before the checkpoint: a run killed between the two leaves the log
        # ahead of the checkpoint, and the resumed run drops the rows past it (the other
        # order would lose the row of the checkpoint's step). A failing log is reported
        # and skipped (_optional): it cannot cost the run its checkpoint.
        if step % cfg.log_every == 0 or step == target_step:
            with _phase("step/logging"):
                now = time.perf_counter()
                row["it_per_s"] = (step - n_last) / max(now - t_last, 1e-9)
                t_last, n_last = now, step
                _optional(f"writing the logs in {cfg.out}", logger.log, row)
                bar.set_postfix({k.replace("loss_", ""): f"{v:.3g}" for k, v in row.items() if k.startswith("loss_")})
        if step % cfg.save_every == 0 or step == target_step:
            with _phase("step/checkpoint"):
                save()
        if rank == 0 and (step % cfg.sample_every == 0 or step == cfg.steps):
            with _phase("step/samples"):
                _optional("writing the sample grid", save_samples,
                          os.path.join(cfg.out, "samples", f"step_{step:06d}.png"), Gm, sample_batch, device)
        step_label.__exit__(None, None, None)
    bar.close()
    logger.close()
    if dist.is_initialized():
        dist.barrier()
    return {"step": step, "history": history, "checkpoint": ckpt_path}


def _phase(name: str):
    """A profiler label for one phase of a training step."""
    return torch.profiler.record_function(name)


def make_adam(params, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam with the run's learning rate and betas: the fused kernel unless --no-fused-adam
    (then torch's default implementation, as before the fused one was the default)."""
    if cfg.fused_adam:
        return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)
    return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def use_fused_adam(opt: torch.optim.Adam, fused: bool) -> None:
    """After load_state_dict, which brings back the saved run's implementation flags:
    this run's choice instead. The fused kernel wants each step count as a float32
    tensor on its parameter's device (the for-loop one keeps it on the CPU)."""
    for group in opt.param_groups:
        group["fused"] = True if fused else None
        group["foreach"] = None
    if fused:
        for p, state in opt.state.items():
            if torch.is_tensor(state.get("step")):
                state["step"] = state["step"].to(device=p.device, dtype=torch.float32)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX) and oneDNN
    takes it, where bf16 convolutions are faster than float32 ones. oneDNN also
    emulates bf16 on plain AVX512, which it reports as support; that is not counted."""
    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        native = bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False
    return onednn and native


def autocast_enabled(cfg: TrainConfig, device: torch.device) -> bool:
    """bfloat16 autocast for the step, with --amp (the default): on CUDA; on the CPU
    where it has native bf16, unless --no-cpu-amp (--cpu-amp on a CPU without it: a
    warning, and float32)."""
    if not cfg.amp:
        return False
    if device.type == "cuda":
        return True
    if device.type != "cpu" or cfg.cpu_amp is False:
        return False
    if cpu_has_native_bf16():
        return True
    if cfg.cpu_amp:
        warnings.warn("--cpu-amp: this CPU has no native bfloat16 (AVX512-BF16/AMX); training in float32",
                      RuntimeWarning, stacklevel=2)
    return False


_optional_failures: Dict[str, int] = {}


def _optional(what: str, fn, *args) -> None:
    """Run an optional output; a failure is reported (once per kind) and the run goes on."""
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 - any failure of an optional output
        n = _optional_failures.get(what, 0)
        _optional_failures[what] = n + 1
        if n == 0:
            print(f"[deformgan.train] WARNING: {what} failed ({type(exc).__name__}: {exc}); training goes on "
                  "and checkpoints are still written", file=sys.stderr)


def _jsonable(d: Dict) -> Dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _sample_batch(cfg: TrainConfig, root: str, test_ann: Optional[str], test_pairs: Optional[str],
                  train_base: MarketPoseDataset, count: int = 6) -> Dict:
    """A fixed batch for the sample grids: test pairs (held-out identities) when the
    folder has them, else the first train pairs."""
    base = train_base
    if test_ann and test_pairs and discover(root).has_images("test"):
        base = MarketPoseDataset(root, test_ann, test_pairs, split="test", heatmaps=False,
                                 height=cfg.image_size[0], width=cfg.image_size[1])
    step = max(1, len(base) // count)
    items = [base[i * step] for i in range(min(count, len(base)))]
    return {k: torch.stack([it[k] for it in items]) for k in ("source_image", "target_image", "source_keypoints",
                                                              "target_keypoints")}


