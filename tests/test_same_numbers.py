"""The redesign changed no numbers: short deterministic trainings give the generator
weights recorded before it (commit b1c0385, the last commit before the redesign).

``tests/data/same_numbers.json`` holds, per run, the SHA-256 of the generator's weights
(every tensor of the state dict, in order, as raw bytes) and each tensor's float64 sum,
with the thread count and the CPU capability (torch's vectorisation level) they were
recorded with. The runs use that thread count (convolutions sum in another order on
another one). On a CPU of a recorded capability the weights must be bit-identical.
Other SIMD code paths in oneDNN round differently, and a few Adam steps amplify that
(AVX512 against AVX2: up to 7e-3 relative in a tensor's sum after 5 steps), so each
capability has its own recording:

- ``cpu_capability`` / ``runs``: AVX2, recorded at b1c0385, before the redesign;
- ``by_capability``: the others, each recorded at the commit it names, on code whose
  AVX2 numbers were still bit-identical to the AVX2 recording (AVX512: recorded at
  0db72a0, and the same SHA-256s at the commit after this round's low-precision and
  profiling work; AVX512+AMX: recorded at 9456201, whose AVX2 and AVX512 numbers CI
  had just checked).

The key is torch's capability plus ``+AMX`` on a CPU with AMX tiles (Sapphire Rapids
and later; ``cpu_kind``): on such a CPU every run, the unwarped ``none_5`` too, gives
other weights than on the AVX512 CPU of the 0db72a0 recording, so the capability alone
does not name the rounding path.

A capability with no recording is skipped with the command that records it: between
AVX2 and AVX512 a tensor's sum moves by up to 7e-3 relative (and sums near zero by more),
so no tolerance tells a rounding path from a changed computation. Re-record only for a
deliberate change of numbers:
``python tests/test_same_numbers.py`` (everything, on an AVX2 CPU) or
``python tests/test_same_numbers.py --add-capability COMMIT`` (this CPU's capability only).
"""
import hashlib
import json
import os
import sys

import pytest
import torch

# The check: python -m deformgan.train --steps 20 --deterministic --no-amp, with
# --no-fused-adam since Adam's fused kernel became the default (2026-12-07): the recordings
# were made with torch's for-loop Adam, which the flag runs (the same construction as then).
_COMMON = ["--deterministic", "--no-amp", "--no-fused-adam"]
RUNS = {
    "demo_parts_20": ["--steps", "20", *_COMMON],
    "global_5": ["--steps", "5", *_COMMON, "--variant", "global"],
    "none_5": ["--steps", "5", *_COMMON, "--variant", "none"],
    "offsets_5": ["--steps", "5", *_COMMON, "--variant", "parts+offsets", "--smooth", "0.1", "--nn", "0.5",
                  "--allow-random-vgg"],
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


def cpu_kind() -> str:
    """torch's CPU capability (its vectorisation level), plus ``+AMX`` where the CPU has
    AMX tiles (oneDNN's kernels, and so the rounding, differ there)."""
    capability = torch.backends.cpu.get_cpu_capability()
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return capability + ("+AMX" if amx is not None and amx() else "")


def recording_for(saved: dict, capability: str):
    """The recorded runs for this CPU's capability, or None when it has none."""
    if capability == saved["cpu_capability"]:
        return saved["runs"]
    other = saved.get("by_capability", {}).get(capability)
    return None if other is None else other["runs"]


def test_recording_for_picks_this_capability():
    saved = {"cpu_capability": "AVX2", "runs": {"a": 1}, "by_capability": {"AVX512": {"runs": {"a": 2}}}}
    assert recording_for(saved, "AVX2") == {"a": 1}
    assert recording_for(saved, "AVX512") == {"a": 2}
    assert recording_for(saved, "DEFAULT") is None


def test_avx2_and_avx512_are_recorded():
    with open(FINGERPRINTS_FILE) as fh:
        saved = json.load(fh)
    assert saved["cpu_capability"] == "AVX2" and sorted(saved["by_capability"]) == ["AVX512", "AVX512+AMX"]
    for kind in saved["by_capability"]:
        assert sorted(saved["by_capability"][kind]["runs"]) == sorted(saved["runs"]) == sorted(RUNS)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_generator_weights_match_the_pre_redesign_recording(name, tmp_path):
    with open(FINGERPRINTS_FILE) as fh:
        saved = json.load(fh)
    capability = cpu_kind()
    runs = recording_for(saved, capability)
    if runs is None:
        pytest.skip(f"no recording for CPU capability {capability}: "
                    "python tests/test_same_numbers.py --add-capability COMMIT records one")
    got = run(name, str(tmp_path / name), saved["threads"])
    assert list(got["sums"]) == list(runs[name]["sums"]), "the generator's parameter names or order changed"
    assert got["sha256"] == runs[name]["sha256"], "the generator's weights are not bit-identical"


if __name__ == "__main__":  # re-record (only for a deliberate change of numbers)
    import argparse
    import tempfile

    ap = argparse.ArgumentParser()
    ap.add_argument("--add-capability", metavar="COMMIT", default=None,
                    help="record this CPU's capability only (under by_capability), naming the commit")
    args = ap.parse_args()
    capability = cpu_kind()
    if args.add_capability:
        with open(FINGERPRINTS_FILE) as fh:
            out = json.load(fh)
        threads = out["threads"]
    else:
        out = {"threads": torch.get_num_threads(), "cpu_capability": capability, "runs": {}}
        threads = out["threads"]
    runs = {}
    with tempfile.TemporaryDirectory() as d:
        for name in RUNS:
            runs[name] = run(name, os.path.join(d, name), threads)
            print(name, runs[name]["sha256"], file=sys.stderr)
    if args.add_capability:
        if capability == out["cpu_capability"]:
            raise SystemExit(f"{capability} is the main recording's capability; re-record it without --add-capability")
        out.setdefault("by_capability", {})[capability] = {"commit": args.add_capability, "runs": runs}
    else:
        out["runs"] = runs
    os.makedirs(os.path.dirname(FINGERPRINTS_FILE), exist_ok=True)
    with open(FINGERPRINTS_FILE, "w") as fh:
        json.dump(out, fh, indent=1)
