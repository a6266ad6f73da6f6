"""The redesign changed no numbers: short deterministic trainings give the generator
weights recorded before it (commit b1c0385, the last commit before the redesign).

``tests/data/same_numbers.json`` holds, per run, the SHA-256 of the generator's weights
(every tensor of the state dict, in order, as raw bytes) and each tensor's float64 sum,
with the thread count and the CPU capability (torch's vectorisation level) they were
recorded with. The runs use that thread count (convolutions sum in another order on
another one). On a CPU of the recorded capability the weights must be bit-identical.
On another (other SIMD code paths in oneDNN round differently, and 20 Adam steps
amplify that to ~1e-4) the sums must agree to 1e-3 relative, which still catches a
changed computation (a changed op, init or data order, loss or weight moves them by
orders of magnitude more). Re-record only for a deliberate change of numbers:
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


def run(name: str, out: str, threads: int) -> dict:
    from deformgan.train import build_config, train

    cfg, _ = build_config(RUNS[name] + ["--out", out])
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        train(cfg, progress=False)
    finally:
        torch.set_num_threads(before)
    state = torch.load(os.path.join(out, "checkpoint.pt"), map_location="cpu", weights_only=True)
    return fingerprint(state["generator"])


@pytest.mark.parametrize("name", sorted(RUNS))
def test_generator_weights_match_the_pre_redesign_recording(name, tmp_path):
    with open(FINGERPRINTS_FILE) as fh:
        saved = json.load(fh)
    recorded = saved["runs"][name]
    got = run(name, str(tmp_path / name), saved["threads"])
    assert list(got["sums"]) == list(recorded["sums"]), "the generator's parameter names or order changed"
    if torch.backends.cpu.get_cpu_capability() == saved["cpu_capability"]:
        assert got["sha256"] == recorded["sha256"], "the generator's weights are not bit-identical"
        return
    for key, want in recorded["sums"].items():
        assert got["sums"][key] == pytest.approx(want, rel=1e-3, abs=1e-4), key


if __name__ == "__main__":  # re-record (only for a deliberate change of numbers)
    import tempfile

    out = {"threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "runs": {}}
    with tempfile.TemporaryDirectory() as d:
        for name in RUNS:
            out["runs"][name] = run(name, os.path.join(d, name), out["threads"])
            print(name, out["runs"][name]["sha256"], file=sys.stderr)
    os.makedirs(os.path.dirname(FINGERPRINTS_FILE), exist_ok=True)
    with open(FINGERPRINTS_FILE, "w") as fh:
        json.dump(out, fh, indent=1)
