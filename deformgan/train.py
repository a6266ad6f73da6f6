"""`python -m deformgan.train [--preset NAME] [--data DIR] [--out DIR] [options]`

Trains Deformable GAN. With no ``--data`` it trains on the synthetic demo set (made
on first use) with a small model sized to finish on a 2-core CPU in about five
minutes. Presets: ``demo`` (default without --data), ``baseline`` (U-Net, L1 100),
``dsc`` (deformable skips, L1 100), ``full`` (deformable skips, NN loss 0.01),
``offsets`` (parts+offsets, perceptual 0.1, NN 1, smoothness 0.1). Any option may also
come from ``--config FILE.json`` (or .yaml); precedence: preset < config file < flags.
The run's full config is saved as OUT/config.json.

Outputs in OUT: config.json, checkpoint.pt (written atomically every --save-every
steps and at the end), log.csv and log.jsonl (and TensorBoard events when installed),
samples/step_NNNNNN.png (rows: source, target pose, generated, target).

Distributed: ``torchrun --nproc_per_node=N -m deformgan.train ...`` (NCCL on GPUs, gloo
on CPU); --batch-size is per process; rank 0 logs and writes checkpoints.
"""
import os
import sys

import torch.distributed as dist

import deformgan_ops

from . import checkpoint as ckpt_io
from .outputs import OutputBusy, OutputNotWritable
# The configuration and the engine, re-exported: ``deformgan.train.train(cfg)`` etc.
from .config import PRESETS, TrainConfig, build_config, validate_config  # noqa: F401
from .data.layout import default_cache  # noqa: F401
from .engine import NonFiniteLoss, PairDataset, PairOrder, prepare_data, train  # noqa: F401


def main(argv=None) -> int:
    cfg, args = build_config(argv, description=__doc__)
    if cfg.ops_backend is not None:  # once per process: every operator, the geometry included
        deformgan_ops.set_backend(cfg.ops_backend)
    try:
        result = train(cfg, resume=args.resume, overwrite=args.overwrite)
    except NonFiniteLoss as exc:
        print(f"[deformgan.train] STOPPED: {exc}", file=sys.stderr)
        return 3
    except (ckpt_io.CheckpointError, FileNotFoundError, FileExistsError, OutputBusy, OutputNotWritable) as exc:
        print(f"[deformgan.train] error: {exc}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"[deformgan.train] done: {result['step']} steps; checkpoint {result['checkpoint']}; "
              f"samples in {os.path.join(cfg.out, 'samples')}; log {os.path.join(cfg.out, 'log.csv')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
