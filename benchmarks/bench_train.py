"""One training iteration of the full-size Deformable GAN, fused operators vs reference.

    python benchmarks/bench_train.py [--batch 4] [--iters 3] [--threads 2] [--preset full]
    python benchmarks/bench_train.py --preset fashion-full      # DeepFashion: 256x256, batch 2, NN 5x5

Builds the original-size generator and discriminator (width 1), the paper's "full"
configuration by default (deformable skips, NN loss on VGG19 relu1_2; the VGG weights
are random here since pretrained weights cannot be downloaded on this machine, which
does not change the timing), and times one iteration (geometry rendering, generator
forward, a discriminator step, a generator step) with the operators' compiled backend
against the same model on the pure-PyTorch reference operators, in one run.

``--size H W`` (default: the preset's image size, 128x64 for the Market presets) sets
the resolution; each backend runs in a fresh process, whose peak resident memory is
reported beside its time.

The share of time in the operators: for the fused run it is measured with the
profiler (every deformgan_ops forward and backward op); for the reference run it is
derived as T_ref - (T_fused - ops_fused), since everything else is the same work.
"""
import argparse
import multiprocessing
import resource
import statistics
import time
import warnings

import torch

import deformgan_ops as D
from deformgan.losses import GeneratorLoss, discriminator_loss
from deformgan.models import Discriminator, Generator
from deformgan.train import PRESETS


def make_batch(n, size=(128, 64), seed=0):
    """Random images and real (bank) poses, the poses scaled from 128x64 by H/128 and
    centred horizontally (at 256x256 the synthetic fashion set's rule)."""
    import random

    from deformgan import pose as P
    from deformgan.data.synthetic import jitter_pose, load_pose_bank
    rng = random.Random(seed)
    bank = load_pose_bank()
    kp = torch.stack([jitter_pose(bank[rng.randrange(len(bank))], rng) for _ in range(2 * n)])
    H, W = size
    s = H / 128
    kp = torch.where(P.missing(kp).unsqueeze(-1), kp, kp * s + torch.tensor([(W - 64 * s) / 2, 0.0]))
    g = torch.Generator().manual_seed(seed)
    imgs = torch.rand(2 * n, 3, H, W, generator=g) * 2 - 1
    return imgs[:n], imgs[n:], kp[:n], kp[n:]


def build(preset, backend, width_mult=1.0, size=(128, 64)):
    p = PRESETS[preset]
    torch.manual_seed(0)
    G = Generator(p.get("variant", "parts"), width_mult=width_mult, image_size=size, ops_backend=backend)
    Dn = Discriminator(width_mult=width_mult)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = GeneratorLoss(1.0, p.get("l1", 0.0), p.get("nn", 0.0), p.get("perceptual", 0.0), p.get("smooth", 0.0),
                             p.get("nn_kernel", 3), vgg_weights=None, allow_random_vgg=True, ops_backend=backend)
    return G, Dn, loss, torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999)), \
        torch.optim.Adam(Dn.parameters(), 2e-4, betas=(0.5, 0.999))


def iteration(G, Dn, loss_fn, opt_g, opt_d, batch):
    src, tgt, skp, tkp = batch
    with torch.no_grad():
        geo = G.render_geometry(skp, tkp)
    fake, offsets = G(src, skp, tkp, geometry=geo, return_offsets=True)
    h_a, h_b = geo.source_heatmaps, geo.target_heatmaps
    loss_d = discriminator_loss(Dn(src, h_a, tgt, h_b), Dn(src, h_a, fake.detach(), h_b))
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()
    loss_g, _ = loss_fn(fake, tgt, Dn(src, h_a, fake, h_b), offsets=offsets)
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()


def time_backend(backend, args, batch):
    model = build(args.preset, backend, args.width_mult, tuple(args.size))
    iteration(*model, batch)  # warm-up
    ts = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        iteration(*model, batch)
        ts.append(time.perf_counter() - t0)
    ops = None
    if backend != "reference":
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            iteration(*model, batch)
        ops = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key.startswith("deformgan_ops::")) / 1e6
    return statistics.median(ts), ops


def _child(backend, args, queue):
    torch.set_num_threads(args.threads)
    t, ops = time_backend(backend, args, make_batch(args.batch, tuple(args.size)))
    queue.put((t, ops, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))  # KiB -> MiB


def run_isolated(backend, args):
    """time_backend in a fresh process: (s / iteration, s in operators, peak RSS MiB)."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(backend, args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=None, help="default: the preset's (4 Market, 2 DeepFashion)")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--preset", default="full",
                    choices=["baseline", "dsc", "full", "offsets", "fashion-dsc", "fashion-full"])
    ap.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                    help="image size (default: the preset's)")
    ap.add_argument("--width-mult", type=float, default=1.0, help="1 = the original size")
    args = ap.parse_args(argv)
    preset = PRESETS[args.preset]
    args.size = list(args.size or preset.get("image_size", (128, 64)))
    args.batch = args.batch or preset.get("batch_size", 4)
    fused = [b for b in D.available_backends("cpu") if b != "reference"][-1]
    t_fused, ops_fused, mem_fused = run_isolated(fused, args)
    t_ref, _, mem_ref = run_isolated("reference", args)
    ops_ref = t_ref - (t_fused - ops_fused)
    print(f"# one training iteration, preset {args.preset!r}, width {args.width_mult}, batch {args.batch}, "
          f"{args.size[0]}x{args.size[1]}, NN window {preset.get('nn_kernel', 3)}, threads={args.threads}")
    print("| operators | s / iteration | time in operators | share | speed-up | peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    print(f"| reference | {t_ref:.2f} | {ops_ref:.2f} s (derived) | {ops_ref / t_ref:.0%} | 1.00x | {mem_ref:.0f} |")
    print(f"| {fused} | {t_fused:.2f} | {ops_fused:.2f} s (profiled) | {ops_fused / t_fused:.0%} | "
          f"{t_ref / t_fused:.2f}x | {mem_fused:.0f} |")


if __name__ == "__main__":
    main()
