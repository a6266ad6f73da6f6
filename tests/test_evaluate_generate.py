import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import deformgan.pose
from deformgan import checkpoint as C
from deformgan import generate as GEN
from deformgan import train as T
from deformgan.data.market import read_annotations
from deformgan.data.synthetic import make_dataset
from deformgan.evaluate import evaluate
from helpers import SHARED_MARKET, market_file

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
    """Bug caught: generate with the source and target poses swapped."""
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


def test_carry_missing_joints_takes_the_previous_frame():
    from deformgan.animate import carry_missing_joints
    seq = torch.arange(3 * 18 * 2, dtype=torch.float32).reshape(3, 18, 2)
    seq[1, 4] = -1           # missing in frame 1: frame 0's
    seq[1, 5] = -1
    seq[2, 5] = -1           # missing in frames 1 and 2: frame 0's, carried twice
    seq[0, 7] = -1           # missing from the first frame: stays missing there
    out = carry_missing_joints(seq)
    assert torch.equal(out[1, 4], seq[0, 4]) and torch.equal(out[2, 5], seq[0, 5])
    assert (out[0, 7] == -1).all() and torch.equal(out[1, 7], seq[1, 7])
    assert torch.equal(out[2, 0], seq[2, 0])


def test_animate_cli_json_csv_panel_and_errors(trained, tmp_path):
    data, ckpt, _ = trained
    ann = read_annotations(os.path.join(data, "annotations-test.csv"))
    names = list(ann)
    src = os.path.join(data, "bounding_box_test", names[0])
    kp = ann[names[0]]
    src_kp = f"{[int(v) for v in kp[:, 1]]}:{[int(v) for v in kp[:, 0]]}"
    poses = [ann[names[i % len(names)]].tolist() for i in (1, 2, 3)]
    poses[1][3] = [-1, -1]  # carried from the previous frame
    pj = tmp_path / "poses.json"
    pj.write_text(json.dumps([poses[0], {"keypoints": poses[1]},
                              {"x": [p[0] for p in poses[2]], "y": [p[1] for p in poses[2]]}]))
    base = [sys.executable, "-m", "deformgan.animate", "--checkpoint", ckpt, "--source", src,
            "--source-keypoints", src_kp]
    gif = tmp_path / "a.gif"
    proc = subprocess.run(base + ["--poses", str(pj), "--out", str(gif), "--fps", "5", "--batch-size", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with Image.open(gif) as im:
        assert im.n_frames == 3 and im.size == (64, 128) and im.info["duration"] == 200
    # the annotation CSV, rows in order, with the panel
    csv = tmp_path / "poses.csv"
    lines = open(os.path.join(data, "annotations-test.csv")).read().splitlines()
    csv.write_text("\n".join(lines[:5]) + "\n")
    gif2 = tmp_path / "b.gif"
    proc = subprocess.run(base + ["--poses", str(csv), "--out", str(gif2), "--panel"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with Image.open(gif2) as im:
        assert im.n_frames == len(lines[1:5]) and im.size == (3 * 64, 128)
    # MP4 through the installed writer, or a clear refusal
    from deformgan.animate import mp4_writer_name
    mp4 = tmp_path / "c.mp4"
    proc = subprocess.run(base + ["--poses", str(pj), "--out", str(mp4)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    if mp4_writer_name():
        assert proc.returncode == 0 and mp4.stat().st_size > 0 and f"({mp4_writer_name()})" in proc.stderr
    else:
        assert proc.returncode == 2 and "GIF output" in proc.stderr
    # errors: a malformed pose list, a pose with no usable joint, a bad extension
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([[[1, 2]] * 17]))
    proc = subprocess.run(base + ["--poses", str(bad), "--out", str(tmp_path / "x.gif")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "bad.json[0]: expected 18 (x, y) joints" in proc.stderr
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps([poses[0], [[-1, -1]] * 18]))
    proc = subprocess.run(base + ["--poses", str(empty), "--out", str(tmp_path / "y.gif")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, "the empty second pose is the first pose carried over"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = subprocess.run(base + ["--poses", str(pj), "--out", str(blocker / "a.gif")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "cannot write there" in proc.stderr
    proc = subprocess.run(base + ["--poses", str(pj), "--out", str(tmp_path / "z.avi")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--out must end in .gif or .mp4" in proc.stderr
    assert not (tmp_path / "z.avi").exists()


def test_animate_a_folder_of_frames_finds_their_poses(trained, tmp_path, monkeypatch):
    """The folder form runs the pose model on each frame (a stand-in model here: the
    YOLO weights are not on this machine) and scales the poses from the frames' size."""
    from deformgan import animate as A
    data, ckpt, _ = trained
    ann = read_annotations(os.path.join(data, "annotations-test.csv"))
    names = list(ann)[:3]
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, n in enumerate(names):  # the frames at twice the model's size
        Image.open(os.path.join(data, "bounding_box_test", n)).resize((128, 256)).save(frames / f"{i:03d}.png")
    r = GEN.Reposer(ckpt, device="cpu")
    (frames / "999.png").write_bytes((frames / "000.png").read_bytes())  # a frame with nobody in it
    found = iter([ann[n] * 2 for n in names] + [None])

    def keypoints_of(img, name=""):
        kp = next(found)
        if kp is None:
            raise GEN.NoPersonFound(f"no person found in {name}")
        return kp

    monkeypatch.setattr(r, "keypoints_of", keypoints_of)
    seen = []
    real = r.generate_batch
    monkeypatch.setattr(r, "generate_batch", lambda img, s, t: (seen.append(t.clone()), real(img, s, t))[1])
    res = A.animate(ckpt, os.path.join(data, "bounding_box_test", names[0]), str(frames), str(tmp_path / "f.gif"),
                    source_keypoints=ann[names[0]], reposer=r, progress=False)
    assert res["frames"] == 3 and res["skipped_frames"] == ["999.png"]
    got = torch.cat(seen)
    want = A.carry_missing_joints(torch.stack([ann[n] for n in names]))
    present = ~deformgan.pose.missing(want)
    torch.testing.assert_close(got[present], want[present])


REAL = os.path.join(SHARED_MARKET, "real")


def test_real_photos_through_generation_animation_and_evaluation(trained, tmp_path):
    """The two real Market-1501 JPEGs of one person (``real/`` of the real data folder) with
    their real keypoints: re-pose one into the other's pose, animate it along both
    poses, and score the result in the folder mode."""
    from skimage.metrics import structural_similarity

    from deformgan.animate import animate
    from deformgan.evaluate import evaluate_folder
    market_file("real")
    _, ckpt, _ = trained
    ann_path = market_file("market-annotation-train.csv")
    ann = read_annotations(ann_path)
    a, b = "0011_c6s4_002502_01.jpg", "0011_c6s4_002527_01.jpg"
    r = GEN.Reposer(ckpt, device="cpu")
    out = r.generate(os.path.join(REAL, a), ann[b], source_keypoints=ann[a])
    assert out.shape == (128, 64, 3) and out.dtype == np.uint8
    gen_dir = tmp_path / "gen"
    gen_dir.mkdir()
    Image.fromarray(out).save(gen_dir / f"{a[:-4]}___{b[:-4]}.png")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"from,to\n{a},{b}\n")
    res = evaluate_folder(str(gen_dir), REAL, str(tmp_path / "eval"), ann_path, str(pairs), inception_weights="none",
                          alexnet_weights="none", pose_weights="none", progress=False)
    tgt = np.asarray(Image.open(os.path.join(REAL, b)).convert("RGB"))
    ref = structural_similarity(out, tgt, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                channel_axis=-1, data_range=float(out.max()) - float(out.min()))
    assert res["pairs"] == 1 and res["ssim"] == pytest.approx(ref, abs=1e-9)
    poses = tmp_path / "poses.json"
    poses.write_text(json.dumps([ann[a].tolist(), ann[b].tolist()]))
    res = animate(ckpt, os.path.join(REAL, a), str(poses), str(tmp_path / "real.gif"), source_keypoints=ann[a],
                  panel=True, reposer=r, progress=False)
    assert res["frames"] == 2 and res["size"] == [128, 3 * 64]


def generated_name_of_first(rows):
    return rows[0][0]  # a file: a folder cannot be made inside it


def test_reid_augment_market_layout_labels_manifest_and_resume(trained, tmp_path):
    import re

    from deformgan import reid_augment as RA
    from deformgan.data.market import is_valid_for_pairs, person_id
    data, ckpt, _ = trained
    ann = read_annotations(os.path.join(data, "annotations-train.csv"))
    valid = [n for n, kp in ann.items() if is_valid_for_pairs(n, kp)]
    out = tmp_path / "aug"
    r = RA.augment(ckpt, data, 3, str(out), seed=5, batch_size=4, progress=False)
    assert r["generated"] == r["generated_now"] == 3 * len(valid)
    rows = RA.read_manifest(str(out / "manifest.csv"))
    assert len(rows) == 3 * len(valid) and len({g for g, _, _ in rows}) == len(rows)
    train = out / "bounding_box_train"
    for gen, src, tgt in rows:
        assert src in valid and tgt in valid
        # a re-ID loader's Market regex reads the source's identity and camera
        m = re.match(r"([-\d]+)_c(\d)", gen)
        assert m.group(1) == person_id(src) and m.group(2) == re.match(r"([-\d]+)_c(\d)", src).group(2)
        with Image.open(train / gen) as im:
            assert im.size == (64, 128)
    assert any(person_id(s) != person_id(t) for _, s, t in rows), "target poses of any identity"
    real = sorted(os.listdir(os.path.join(data, "bounding_box_train")))
    assert set(real) <= set(os.listdir(train)) and r["real_copied"] == len(real)
    assert not [f for f in os.listdir(train) if ".tmp" in f]
    # the image is the generator's output for (source image, source pose, target pose)
    gen, src, tgt = rows[0]
    G = C.build_generator(C.load(ckpt))
    from deformgan.data.market import load_image
    from deformgan.scoring import to_uint8
    with torch.no_grad():
        want = to_uint8(G(load_image(os.path.join(data, "bounding_box_train", src))[None], ann[src][None],
                          ann[tgt][None]))[0].permute(1, 2, 0).numpy().astype(int)
    import io
    buf = io.BytesIO()
    Image.fromarray(want.astype(np.uint8)).save(buf, format="JPEG", quality=95, subsampling=0)
    want_jpeg = np.asarray(Image.open(buf).convert("RGB")).astype(int)
    got = np.asarray(Image.open(train / gen).convert("RGB")).astype(int)
    assert np.abs(got - want_jpeg).mean() < 0.5  # the same JPEG encoding of the same output (batching aside)
    # seeded: the same plan again, another one for another seed
    assert RA.plan(ann, 3, 5) == rows and RA.plan(ann, 3, 6) != rows
    # resume: only the missing images are generated again
    for gen, _, _ in rows[:4]:
        os.remove(train / gen)
    r2 = RA.augment(ckpt, data, 3, str(out), seed=5, batch_size=4, progress=False)
    assert r2["generated_now"] == 4 and all((train / g).exists() for g, _, _ in rows)
    proc = subprocess.run([sys.executable, "-m", "deformgan.reid_augment", "--checkpoint", ckpt, "--data", data,
                           "--per-image", "3", "--out", str(out), "--seed", "6"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "written by another run" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "deformgan.reid_augment", "--checkpoint", ckpt, "--data", data,
                           "--per-image", "1", "--out", str(train / generated_name_of_first(rows))], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "cannot write there" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "deformgan.reid_augment", "--checkpoint", ckpt, "--data", data,
                           "--per-image", "1", "--out", str(tmp_path / "g"), "--generated-only"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(os.listdir(tmp_path / "g" / "bounding_box_train")) == sorted(generated_name
                                                                               for generated_name, _, _ in
                                                                               RA.plan(ann, 1, 0))
