"""The redesign changed no numbers: short deterministic trainings give the generator
weights recorded before it (commit b1c0385, the last commit before the redesign).

``FINGERPRINTS`` holds, per run, the SHA-256 of the generator's weights (every tensor
of the state dict, in order, as raw bytes) and each tensor's float64 sum. The
weights must be bit-identical; where this machine's CPU computes convolutions with
other instructions than the recording machine (another oneDNN code path), the hash
cannot match and the sums must then agree to 1e-6 relative instead, which still
catches any change of the computation (a changed op, init order, data order or loss
moves them by far more). Re-record only for a deliberate change of numbers:
``python tests/test_same_numbers.py``.
"""
import hashlib
import json
import os
import sys

import pytest
import torch

RUNS = {
    # The check: python -m deformgan.train --steps 20 --deterministic --no-amp
    "demo_parts_20": ["--steps", "20", "--deterministic", "--no-amp"],
    "global_5": ["--steps", "5", "--deterministic", "--no-amp", "--variant", "global"],
    "none_5": ["--steps", "5", "--deterministic", "--no-amp", "--variant", "none"],
    "offsets_5": ["--steps", "5", "--deterministic", "--no-amp", "--variant", "parts+offsets", "--smooth", "0.1",
                  "--nn", "0.5", "--allow-random-vgg"],
}

FINGERPRINTS_FILE = os.path.join(os.path.dirname(__file__), "data", "same_numbers.json")


def fingerprint(state_dict) -> dict:
    h = hashlib.sha256()
    sums = {}
    for name, t in state_dict.items():
        t = t.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(t.numpy().tobytes())
        sums[name] = float(t.double().sum())
    return {"sha256": h.hexdigest(), "sums": sums}


def run(name: str, out: str) -> dict:
    from deformgan.train import build_config, train

    cfg, _ = build_config(RUNS[name] + ["--out", out])
    train(cfg, progress=False)
    state = torch.load(os.path.join(out, "checkpoint.pt"), map_location="cpu", weights_only=True)
    return fingerprint(state["generator"])


@pytest.mark.parametrize("name", sorted(RUNS))
def test_generator_weights_match_the_pre_redesign_recording(name, tmp_path):
    with open(FINGERPRINTS_FILE) as fh:
        recorded = json.load(fh)[name]
    got = run(name, str(tmp_path / name))
    assert list(got["sums"]) == list(recorded["sums"]), "the generator's parameter names or order changed"
    if got["sha256"] == recorded["sha256"]:
        return  # bit-identical
    for key, want in recorded["sums"].items():
        assert got["sums"][key] == pytest.approx(want, rel=1e-6, abs=1e-6), key


if __name__ == "__main__":  # re-record (only for a deliberate change of numbers)
    import tempfile

    out = {}
    with tempfile.TemporaryDirectory() as d:
        for name in RUNS:
            out[name] = run(name, os.path.join(d, name))
            print(name, out[name]["sha256"], file=sys.stderr)
    os.makedirs(os.path.dirname(FINGERPRINTS_FILE), exist_ok=True)
    with open(FINGERPRINTS_FILE, "w") as fh:
        json.dump(out, fh, indent=1)
