"""Run by tests/test_train_reliability.py under torchrun: the training CLI with a
generator loss that turns NaN on rank 1 only, from step 2 (rank 0 stays finite)."""
import os
import sys

import torch

from deformgan import losses, train

_real = losses.GeneratorLoss.forward
_calls = {"n": 0}


def _forward(self, *args, **kwargs):
    total, terms = _real(self, *args, **kwargs)
    _calls["n"] += 1
    if os.environ.get("RANK") == "1" and _calls["n"] >= 2:
        total = total * torch.tensor(float("nan"))
    return total, terms


losses.GeneratorLoss.forward = _forward
sys.exit(train.main(sys.argv[1:]))
