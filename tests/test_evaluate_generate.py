import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from deformgan import checkpoint as C
from deformgan import generate as GEN
from deformgan import train as T
from deformgan.data.market import read_annotations
from deformgan.data.synthetic import make_dataset
from deformgan.evaluate import evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = root / "data"
    make_dataset(str(data), ids=5, images_per_id=3, seed=2, progress=False)
    cfg = T.TrainConfig(data=str(data), out=str(root / "run"), preset="dsc", variant="parts", width_mult=0.0625,
                        dropout=0.0, batch_size=2, steps=2, l1=100.0, log_every=1, sample_every=100, save_every=100)
    T.train(cfg, progress=False)
    return str(data), str(root / "run" / "checkpoint.pt"), root


def test_evaluate_end_to_end(trained):
    data, ckpt, root = trained
    out = root / "eval"
    r = evaluate(ckpt, data, out=str(out), batch_size=4, inception_weights="random", alexnet_weights="random",
                 lpips_weights="random", pose_weights="yolo11n-pose.yaml", allow_random_networks=True, progress=False,
                 fid_cache=str(root / "fid-cache"))
    for k in ("ssim", "mask_ssim", "l1", "psnr", "lpips", "is", "mask_is", "fid"):
        assert k in r and np.isfinite(r[k]), k
    assert 0 <= r["ssim"] <= 1 and r["pairs"] > 0
    assert "pckh" in r or "PCKh" in r["skipped"]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["ssim"] == pytest.approx(r["ssim"])
    assert "| SSIM | mask-SSIM |" in (out / "metrics.md").read_text()
    assert (out / "examples.png").exists()


def test_checkpoint_mode_writes_images_that_the_folder_mode_scores_the_same(trained, tmp_path):
    from deformgan.evaluate import evaluate_folder
    data, ckpt, _ = trained
    nets = dict(inception_weights="random", alexnet_weights="random", lpips_weights="random", pose_weights="none",
                allow_random_networks=True, fid_cache=str(tmp_path / "cache"), progress=False)
    a = evaluate(ckpt, data, out=str(tmp_path / "ck"), batch_size=4, **nets)
    pairs = (tmp_path / "ck" / "pairs.csv").read_text().splitlines()[1:]
    assert len(os.listdir(tmp_path / "ck" / "generated")) == a["pairs"] == len(pairs)
    b = evaluate_folder(a["generated"], a["real"], str(tmp_path / "re"), a["annotations"], a["pairs_file"],
                        fid_reference=a["fid_reference"], batch_size=3, **nets)
    assert b["fid_reference_cached"]
    for k in ("pairs", "ssim", "mask_ssim", "l1", "mask_l1", "psnr", "lpips", "is", "mask_is", "fid"):
        assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-9), k
    assert b["ssim"] == a["ssim"] and b["mask_ssim"] == a["mask_ssim"]


def test_evaluate_cli_reports_skipped_metrics_and_bad_checkpoints(trained, tmp_path):
    data, ckpt, _ = trained
    proc = subprocess.run([sys.executable, "-m", "deformgan.evaluate", "--checkpoint", ckpt, "--data", data, "--out",
                           str(tmp_path / "e"), "--inception-weights", "none", "--alexnet-weights", "none",
                           "--pose-weights", "none"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| SSIM |" in proc.stdout and "IS/FID skipped: disabled" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "deformgan.evaluate", "--checkpoint", str(tmp_path / "nope.pt")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "checkpoint not found" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "deformgan.evaluate", "--checkpoint", ckpt, "--data", data,
                           "--variant", "none"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "variant 'parts', but variant 'none' was asked for" in proc.stderr


def test_generate_api_and_cli(trained, tmp_path):
    data, ckpt, _ = trained
    ann = read_annotations(os.path.join(data, "annotations-test.csv"))
    (a, kp_a), (b, kp_b) = list(ann.items())[:2]
    src = os.path.join(data, "bounding_box_test", a)
    r = GEN.Reposer(ckpt, device="cpu")
    out = r.generate(src, kp_b, source_keypoints=kp_a)
    assert out.shape == (128, 64, 3) and out.dtype == np.uint8
    pose = tmp_path / "pose.json"
    pose.write_text(json.dumps({"keypoints": kp_b.tolist()}))
    ys, xs = [int(v) for v in kp_b[:, 1]], [int(v) for v in kp_b[:, 0]]
    src_kp = f"{[int(v) for v in kp_a[:, 1]]}:{[int(v) for v in kp_a[:, 0]]}"
    for target in (["--target-pose", str(pose)], ["--target-keypoints", f"{ys}:{xs}"]):
        res = tmp_path / "out.png"
        proc = subprocess.run([sys.executable, "-m", "deformgan.generate", "--checkpoint", ckpt, "--source", src,
                               "--source-keypoints", src_kp, *target, "--out", str(res), "--panel"],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert Image.open(res).size[0] > 3 * 64  # the panel: source | pose | result
    # keypoints of the source and of a target image looked up in an annotation CSV
    res = tmp_path / "out2.png"
    proc = subprocess.run([sys.executable, "-m", "deformgan.generate", "--checkpoint", ckpt, "--source", src,
                           "--target-image", os.path.join(data, "bounding_box_test", b),
                           "--annotations", os.path.join(data, "annotations-test.csv"), "--out", str(res)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert Image.open(res).size == (64, 128)


def test_generate_bad_inputs(trained, tmp_path):
    data, ckpt, _ = trained
    ann = read_annotations(os.path.join(data, "annotations-test.csv"))
    a, kp_a = next(iter(ann.items()))
    src = os.path.join(data, "bounding_box_test", a)
    bad = tmp_path / "bad.json"
    bad.write_text('{"keypoints": [[1, 2], [3, 4]]}')
    with pytest.raises(GEN.PoseFileError, match="bad.json: expected 18"):
        GEN.read_pose_file(str(bad))
    bad.write_text("not json")
    with pytest.raises(GEN.PoseFileError, match="bad.json"):
        GEN.read_pose_file(str(bad))
    with pytest.raises(GEN.PoseFileError, match="expected two lists"):
        GEN.parse_keypoints_string("[1, 2, 3]")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        GEN.Reposer(str(tmp_path / "missing.pt"))
    with pytest.raises(C.CheckpointError, match="variant 'parts', but variant 'global'"):
        GEN.Reposer(ckpt, variant="global")
    # a blank image: the (random-weight) pose model finds no person
    pytest.importorskip("ultralytics")
    blank = tmp_path / "blank.png"
    Image.fromarray(np.zeros((128, 64, 3), np.uint8)).save(blank)
    r = GEN.Reposer(ckpt, device="cpu", pose_weights="yolo11n-pose.yaml")
    with pytest.raises(GEN.NoPersonFound, match="no person found in .*blank.png"):
        r.generate(str(blank), kp_a)
    proc = subprocess.run([sys.executable, "-m", "deformgan.generate", "--checkpoint", ckpt, "--source", str(blank),
                           "--target-pose", str(bad), "--out", str(tmp_path / "o.png")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "pose file" in proc.stderr


def test_a_target_pose_with_no_usable_joint_is_refused_not_a_grey_image(trained, tmp_path):
    data, ckpt, _ = trained
    ann = read_annotations(os.path.join(data, "annotations-test.csv"))
    a, kp_a = next(iter(ann.items()))
    src = os.path.join(data, "bounding_box_test", a)
    r = GEN.Reposer(ckpt, device="cpu")
    assert r.generate(src, kp_a, kp_a).shape == (128, 64, 3)
    for bad in (torch.full((18, 2), -1.0), torch.full((18, 2), 500.0)):  # all missing; all outside
        with pytest.raises(ValueError, match="the target pose has no usable joint"):
            r.generate(src, bad, kp_a)
    proc = subprocess.run([sys.executable, "-m", "deformgan.generate", "--checkpoint", ckpt, "--source", src,
                           "--target-keypoints", json.dumps([-1] * 18) + ":" + json.dumps([-1] * 18),
                           "--source-keypoints", "{}:{}".format(*[json.dumps([int(v) for v in kp_a[:, i]])
                                                                 for i in (1, 0)]),
                           "--out", str(tmp_path / "o.png")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "no usable joint" in proc.stderr
    assert not (tmp_path / "o.png").exists()


def test_reposer_passes_the_source_and_target_poses_in_order(trained, monkeypatch):
    """Bug caught (issue 16): generate with the source and target poses swapped."""
    data, ckpt, _ = trained
    ann = read_annotations(os.path.join(data, "annotations-test.csv"))
    (a, kp_a), (b, kp_b) = list(ann.items())[:2]
    r = GEN.Reposer(ckpt, device="cpu")
    seen = {}

    def fake_generator(x, src, tgt):
        seen.update(src=src.clone(), tgt=tgt.clone(), x=x.clone())
        return x  # the source image itself

    monkeypatch.setattr(r, "generator", fake_generator)
    out = r.generate(os.path.join(data, "bounding_box_test", a), kp_b, source_keypoints=kp_a)
    assert torch.equal(seen["src"][0], kp_a) and torch.equal(seen["tgt"][0], kp_b)
    src_img = np.asarray(Image.open(os.path.join(data, "bounding_box_test", a)).convert("RGB"))
    assert np.abs(out.astype(int) - src_img.astype(int)).max() <= 1  # [-1, 1] -> uint8 round trip
