"""One training iteration of the full-size Deformable GAN, fused operators vs reference.

    python benchmarks/bench_train.py [--batch 4] [--iters 3] [--threads 2] [--preset full]

Builds the original-size generator and discriminator (width 1), the paper's "full"
configuration by default (deformable skips, NN loss on VGG19 relu1_2; the VGG weights
are random here since pretrained weights cannot be downloaded on this machine, which
does not change the timing), and times one iteration (geometry rendering, generator
forward, a discriminator step, a generator step) with the operators' compiled backend
against the same model on the pure-PyTorch reference operators, in one run.

The share of time in the operators: for the fused run it is measured with the
profiler (every deformgan_ops forward and backward op); for the reference run it is
derived as T_ref - (T_fused - ops_fused), since everything else is the same work.
"""
import argparse
import statistics
import time
import warnings

import torch

import deformgan_ops as D
from deformgan.losses import GeneratorLoss, discriminator_loss
from deformgan.models import Discriminator, Generator
from deformgan.train import PRESETS


def make_batch(n, seed=0):
    import random

    from deformgan.data.synthetic import jitter_pose, load_pose_bank
    rng = random.Random(seed)
    bank = load_pose_bank()
    kp = torch.stack([jitter_pose(bank[rng.randrange(len(bank))], rng) for _ in range(2 * n)])
    g = torch.Generator().manual_seed(seed)
    imgs = torch.rand(2 * n, 3, 128, 64, generator=g) * 2 - 1
    return imgs[:n], imgs[n:], kp[:n], kp[n:]


def build(preset, backend, width_mult=1.0):
    p = PRESETS[preset]
    torch.manual_seed(0)
    G = Generator(p.get("variant", "parts"), width_mult=width_mult, ops_backend=backend)
    Dn = Discriminator(width_mult=width_mult)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = GeneratorLoss(1.0, p.get("l1", 0.0), p.get("nn", 0.0), p.get("perceptual", 0.0), p.get("smooth", 0.0),
                             vgg_weights=None, allow_random_vgg=True, ops_backend=backend)
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
    model = build(args.preset, backend, args.width_mult)
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--preset", default="full", choices=["baseline", "dsc", "full", "offsets"])
    ap.add_argument("--width-mult", type=float, default=1.0, help="1 = the original size")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    fused = [b for b in D.available_backends("cpu") if b != "reference"][-1]
    batch = make_batch(args.batch)
    t_fused, ops_fused = time_backend(fused, args, batch)
    t_ref, _ = time_backend("reference", args, batch)
    ops_ref = t_ref - (t_fused - ops_fused)
    print(f"# one training iteration, preset {args.preset!r}, width {args.width_mult}, batch {args.batch}, 128x64, "
          f"threads={torch.get_num_threads()}")
    print("| operators | s / iteration | time in operators | share | speed-up |")
    print("|---|---|---|---|---|")
    print(f"| reference | {t_ref:.2f} | {ops_ref:.2f} s (derived) | {ops_ref / t_ref:.0%} | 1.00x |")
    print(f"| {fused} | {t_fused:.2f} | {ops_fused:.2f} s (profiled) | {ops_fused / t_fused:.0%} | "
          f"{t_ref / t_fused:.2f}x |")


if __name__ == "__main__":
    main()
