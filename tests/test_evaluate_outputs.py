"""evaluate's output folder, with real faults: a second evaluation into the same folder
at once is refused naming the first (a child process holds it), a second model's run
never mixes its images with the first's, and a run with no pairs to score exits 2."""
import os
import subprocess
import sys

import pytest

from deformgan import evaluate as EV
from deformgan.outputs import LOCK_NAME

from test_evaluate_generate import trained  # noqa: F401 - a data folder and a 2-step checkpoint
from test_train_outputs import _hold_lock_in_a_child

NETS = dict(inception_weights="none", alexnet_weights="none", pose_weights="none", progress=False)


def test_evaluate_refuses_a_folder_another_run_holds(trained, tmp_path, capsys):  # noqa: F811
    data, ckpt, _ = trained
    out = tmp_path / "eval"
    child = _hold_lock_in_a_child(out)
    try:
        code = EV.main(["--checkpoint", ckpt, "--data", data, "--out", str(out), "--inception-weights", "none",
                        "--alexnet-weights", "none", "--pose-weights", "none"])
        err = capsys.readouterr().err
        assert code == 2 and f"another run is writing to {out}: pid {child.pid}" in err
        assert not (out / "metrics.json").exists()
    finally:
        child.stdin.close()
        child.wait(timeout=60)


def test_a_second_model_never_mixes_its_images_with_the_first(trained, tmp_path):  # noqa: F811
    data, ckpt, _ = trained
    out = tmp_path / "eval"
    first = EV.evaluate(ckpt, data, out=str(out), max_pairs=4, **NETS)
    stale = out / "generated" / "someone___else.png"
    stale.write_bytes(b"an earlier model's image")
    second = EV.evaluate(ckpt, data, out=str(out), max_pairs=2, **NETS)
    names = sorted(os.listdir(out / "generated"))
    assert len(names) == 2 == second["pairs"] and first["pairs"] == 4 and not stale.exists()
    assert not (out / LOCK_NAME).exists()


def test_no_pairs_to_evaluate_exits_2(trained, tmp_path, capsys):  # noqa: F811
    data, ckpt, _ = trained
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("from,to\n")
    code = EV.main(["--checkpoint", ckpt, "--data", data, "--pairs", str(pairs), "--out", str(tmp_path / "e"),
                    "--inception-weights", "none", "--alexnet-weights", "none", "--pose-weights", "none"])
    assert code == 2 and "no pairs to evaluate" in capsys.readouterr().err


def test_two_evaluations_started_together_one_is_refused(trained, tmp_path):  # noqa: F811
    """Two real processes into one folder: one finishes, the other exits 2 naming it
    (or, if the first was already done, both finish; never both writing at once)."""
    data, ckpt, _ = trained
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "deformgan.evaluate", "--checkpoint", ckpt, "--data", data, "--out", str(out),
           "--inception-weights", "none", "--alexnet-weights", "none", "--pose-weights", "none", "--max-pairs", "6"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runs = [subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in runs]
    codes = sorted(c for c, _ in results)
    assert codes in ([0, 0], [0, 2]), results
    if codes == [0, 2]:
        assert any("another run is writing to" in err for c, err in results if c == 2)
    assert len(os.listdir(out / "generated")) == 6 and not (out / LOCK_NAME).exists()


def test_two_generated_files_for_one_target_are_reported_not_scored_twice(tmp_path):
    from PIL import Image
    gen, real = tmp_path / "gen", tmp_path / "real"
    gen.mkdir()
    real.mkdir()
    for folder, names in ((real, ["x.jpg", "y.jpg"]), (gen, ["x.jpg", "x.png", "y.png"])):
        for n in names:
            Image.new("RGB", (4, 4)).save(folder / n)
    p = EV.pair_by_name(str(gen), str(real))
    assert sorted((os.path.basename(i.generated), i.target) for i in p.items) == [("x.jpg", "x.jpg"),
                                                                                   ("y.png", "y.jpg")]
    assert p.ambiguous == ["x.png (another generated file for the real x.jpg: x.jpg)"]
