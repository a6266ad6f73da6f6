"""deformgan/reid_augment.py's contract with a recording stand-in for the generator (the
real generator goes through it in tests/test_evaluate_generate.py): the plan, the
manifest file, the output folder a re-ID library reads, resuming, and the CLI."""
import errno
import json
import os
import random

import numpy as np
import pytest
import torch
from PIL import Image

from deformgan import generate as GEN
from deformgan import reid_augment as RA
from deformgan.checkpoint import CheckpointError
from deformgan.data.market import AnnotationError, write_annotations
from deformgan.outputs import OutputNotWritable
from helpers import assert_refused, help_text, usage_error

H, W = 16, 8


def pose(x=3.0):
    """A whole pose inside 16x8; joint 1 (neck) at column ``x`` tells poses apart."""
    kp = torch.tensor([[4, 1], [4, 3], [2, 3], [1, 6], [1, 8], [6, 3], [7, 6], [7, 8], [3, 8], [3, 11], [3, 14],
                       [5, 8], [5, 11], [5, 14], [3, 1], [5, 1], [2, 1], [6, 1]], dtype=torch.float32)
    kp[1, 0] = x
    return kp


VALID = ["0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg", "0007_c3s2_001234_02.jpg"]


@pytest.fixture
def data(tmp_path):
    """A Market-layout folder: three valid training images (neck columns 1, 2, 3), a
    distractor (-1) and an image without its hips; a query/ folder, no test folder."""
    root = tmp_path / "data"
    train = root / "bounding_box_train"
    train.mkdir(parents=True)
    (root / "query").mkdir()
    ann = {n: pose(i + 1) for i, n in enumerate(VALID)}
    ann["-1_c1s1_000001_00.jpg"] = pose()
    no_hips = pose()
    no_hips[8] = no_hips[11] = -1
    ann["0009_c1s1_000001_00.jpg"] = no_hips
    rng = np.random.default_rng(0)
    for name in ann:
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(train / name)
    write_annotations(str(root / "annotations-train.csv"), ann)
    return root, ann


class Reposer:
    """Stands in for generate.Reposer: each output image is a flat colour (source neck
    column * 10, target neck column * 10, mean of the source image); records every call."""
    made = []

    def __init__(self, checkpoint, device=None, ops_backend=None):
        self.args = (checkpoint, device, ops_backend)
        self.height, self.width = H, W
        self.batches = []
        Reposer.made.append(self)

    def generate_batch(self, images, source_keypoints, target_keypoints):
        self.batches.append((images, source_keypoints.clone(), target_keypoints.clone()))
        return [np.full((H, W, 3), [10 * s[1, 0], 10 * t[1, 0], np.asarray(im).mean()], dtype=np.uint8)
                for im, s, t in zip(images, source_keypoints, target_keypoints)]


@pytest.fixture
def reposer(monkeypatch):
    Reposer.made = []
    monkeypatch.setattr(GEN, "Reposer", Reposer)
    return Reposer


def read(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(int)


# ---------------------------------------------------------------- the plan and the manifest
def test_generated_names_keep_the_source_stem():
    assert RA.generated_name("0002_c1s1_000451_03.jpg", 4) == "0002_c1s1_000451_03_g04.jpg"
    assert RA.generated_name("0002_c1s1_000451_03.png", 12) == "0002_c1s1_000451_03_g12.jpg"


def test_plan_every_valid_source_k_times_targets_seeded_from_all_valid_poses(data):
    _, ann = data
    rows = RA.plan(ann, 2, seed=7)
    rng = random.Random(7)  # uniform with replacement, in row order, from one seeded generator
    assert rows == [(f"{n[:-4]}_g{k:02d}.jpg", n, rng.choice(VALID)) for n in VALID for k in range(2)]
    assert RA.plan(ann, 2, seed=8) != rows
    invalid = {n: ann[n] for n in ("-1_c1s1_000001_00.jpg", "0009_c1s1_000001_00.jpg")}
    assert_refused(ValueError, "no training image has a valid pose (a person id and all four torso joints)",
                   RA.plan, invalid, 1, 0)


def test_manifest_file_round_trip_and_refusals(tmp_path):
    rows = [("a_g00.jpg", "a.jpg", "b.jpg"), ("a_g01.jpg", "a.jpg", "a.jpg")]
    path = tmp_path / "manifest.csv"
    RA.write_manifest(str(path), rows)
    assert path.read_bytes() == b"generated,source,target_pose_of\na_g00.jpg,a.jpg,b.jpg\na_g01.jpg,a.jpg,a.jpg\n"
    assert RA.read_manifest(str(path)) == rows and os.listdir(tmp_path) == ["manifest.csv"]
    for text in ("", "generated,source\nx,y\n"):
        path.write_text(text)
        assert_refused(ValueError, f"{path}: not a reid_augment manifest (header 'generated,source,target_pose_of')",
                       RA.read_manifest, str(path))


# ---------------------------------------------------------------- augment
def test_augment_writes_the_market_layout_with_each_images_generator_output(data, reposer, tmp_path):
    root, ann = data
    out = tmp_path / "aug"
    r = RA.augment("ck.pt", str(root), 2, str(out), seed=3, batch_size=4, device="cpu", ops_backend="reference",
                   progress=False)
    rows = RA.plan(ann, 2, 3)
    (rep,) = reposer.made
    assert rep.args == ("ck.pt", "cpu", "reference")
    assert [len(b[0]) for b in rep.batches] == [4, 2]
    train = out / "bounding_box_train"
    for gen, src, tgt in rows:  # each generated image is the output for its own source and target
        want = [10 * ann[src][1, 0], 10 * ann[tgt][1, 0], read(root / "bounding_box_train" / src).mean()]
        assert np.abs(read(train / gen) - np.array(want, dtype=np.uint8)).max() <= 1, gen
    images, src_kp, tgt_kp = rep.batches[0]
    assert all(isinstance(im, Image.Image) for im in images)
    np.testing.assert_array_equal(np.asarray(images[2]), read(root / "bounding_box_train" / rows[2][1]))
    assert torch.equal(src_kp, torch.stack([ann[s] for _, s, _ in rows[:4]]))
    assert torch.equal(tgt_kp, torch.stack([ann[t] for _, _, t in rows[:4]]))
    real = sorted(os.listdir(root / "bounding_box_train"))
    assert sorted(os.listdir(train)) == sorted(real + [g for g, _, _ in rows])  # nothing else, no temporary files
    for name in real:  # the real images, copied (not linked) byte for byte
        assert (train / name).read_bytes() == (root / "bounding_box_train" / name).read_bytes()
        assert not os.path.samefile(train / name, root / "bounding_box_train" / name)
    assert os.path.islink(out / "query") and os.readlink(out / "query") == str(root / "query")
    assert not os.path.lexists(out / "bounding_box_test")  # not in the data, not linked
    assert RA.read_manifest(str(out / "manifest.csv")) == rows
    assert r["generated"] == r["generated_now"] == 6 and r["real_copied"] == 5
    assert r["manifest"] == str(out / "manifest.csv") and r["seconds"] > 0
    assert r["images_per_s"] == pytest.approx(6 / r["seconds"])


def test_augment_resumes_where_it_stopped(data, reposer, tmp_path):
    root, ann = data
    out = tmp_path / "aug"
    RA.augment("ck.pt", str(root), 2, str(out), seed=3, progress=False)
    rows = RA.plan(ann, 2, 3)
    train = out / "bounding_box_train"
    kept = train / rows[0][0]
    stamp = kept.stat().st_mtime_ns
    for gen, _, _ in rows[1:3]:
        os.remove(train / gen)
    os.remove(train / VALID[0])
    (out / "query").unlink()
    (root / "bounding_box_test").mkdir()
    r = RA.augment("ck.pt", str(root), 2, str(out), seed=3, progress=False)
    rep = reposer.made[-1]
    assert [t[1, 0].item() for t in rep.batches[0][2]] == [ann[t][1, 0].item() for _, _, t in rows[1:3]]
    assert r["generated_now"] == 2 and r["real_copied"] == 1 and r["generated"] == 6
    assert kept.stat().st_mtime_ns == stamp and all((train / g).exists() for g, _, _ in rows)
    assert os.path.islink(out / "query") and os.readlink(out / "bounding_box_test") == str(root / "bounding_box_test")
    # nothing left to do: no batch, no speed
    r = RA.augment("ck.pt", str(root), 2, str(out), seed=3, progress=False)
    assert r["generated_now"] == 0 and r["real_copied"] == 0 and r["images_per_s"] is None
    assert reposer.made[-1].batches == []


def test_augment_links_or_leaves_out_the_real_images(data, reposer, tmp_path):
    root, _ = data
    RA.augment("ck.pt", str(root), 1, str(tmp_path / "linked"), link=True, progress=False)
    for name in os.listdir(root / "bounding_box_train"):
        assert os.path.samefile(tmp_path / "linked" / "bounding_box_train" / name, root / "bounding_box_train" / name)
    r = RA.augment("ck.pt", str(root), 1, str(tmp_path / "gen"), generated_only=True, progress=False)
    assert sorted(os.listdir(tmp_path / "gen" / "bounding_box_train")) == sorted(f"{n[:-4]}_g00.jpg" for n in VALID)
    assert r["real_copied"] == 0


def test_augment_shows_progress_by_default(data, reposer, tmp_path, capsys):
    root, _ = data
    RA.augment("ck.pt", str(root), 1, str(tmp_path / "aug"), batch_size=2)
    err = capsys.readouterr().err
    assert "reid_augment: 100%" in err and "2/2" in err and "batch/s" in err


def test_augment_refusals(data, reposer, tmp_path):
    root, _ = data
    out = tmp_path / "aug"
    RA.augment("ck.pt", str(root), 1, str(out), seed=0, progress=False)
    assert_refused(ValueError, f"{out / 'manifest.csv'} was written by another run (other data, --per-image or "
                   "--seed); use another --out or remove it", RA.augment, "ck.pt", str(root), 1, str(out), seed=1,
                   progress=False)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for where in (blocker, blocker / "x"):  # the message names the folder given, whether or not it is made
        assert_refused(OutputNotWritable, f"--out {where}: cannot write there ({blocker} is a file, not a folder)" if where == blocker else
                       f"--out {where}: cannot write there (Not a directory)", RA.augment, "ck.pt", str(root), 1,
                       str(where), progress=False)
    os.rename(root / "bounding_box_train", root / "elsewhere")
    assert_refused(FileNotFoundError, f"no training images in {root} (bounding_box_train/ or train/)", RA.augment, "ck.pt", str(root), 1,
                   str(tmp_path / "o2"), progress=False)
    os.remove(root / "annotations-train.csv")
    with pytest.raises(FileNotFoundError, match="no train annotations in"):
        RA.augment("ck.pt", str(root), 1, str(tmp_path / "o3"), progress=False)
    assert reposer.made[1:] == []  # refused before the generator was loaded


# ---------------------------------------------------------------- the command line
def test_main_passes_its_arguments_and_reports(monkeypatch, capsys):
    calls = []
    result = {"generated": 6, "generated_now": 4, "real_copied": 5, "manifest": "O/manifest.csv",
              "images_per_s": 12.34, "seconds": 1.0}

    def augment(*args):
        calls.append(args)
        return dict(result)

    monkeypatch.setattr(RA, "augment", augment)
    assert RA.main(["--checkpoint", "c", "--data", "d", "--per-image", "3", "--out", "O"]) == 0
    assert RA.main(["--checkpoint", "c", "--data", "d", "--per-image", "1", "--out", "O", "--seed", "4",
                    "--batch-size", "2", "--generated-only", "--link", "--device", "cuda:0",
                    "--ops-backend", "triton"]) == 0
    assert calls == [("c", "d", 3, "O", 0, 16, False, False, None, None),
                     ("c", "d", 1, "O", 4, 2, True, True, "cuda:0", "triton")]
    line = ("[deformgan.reid_augment] 6 generated images (4 this run, 12.3 images/s), 5 real images added; "
            "manifest O/manifest.csv\n")
    assert capsys.readouterr().err == line * 2
    result["images_per_s"] = None
    assert RA.main(["--checkpoint", "c", "--data", "d", "--per-image", "3", "--out", "O"]) == 0
    assert capsys.readouterr().err == line.replace(", 12.3 images/s", "")
    for exc in (FileNotFoundError("a"), ValueError("b"), CheckpointError("c"), AnnotationError("d")):
        def failing(*args, exc=exc):
            raise exc
        monkeypatch.setattr(RA, "augment", failing)
        assert RA.main(["--checkpoint", "c", "--data", "d", "--per-image", "3", "--out", "O"]) == 2
        assert capsys.readouterr().err == f"[deformgan.reid_augment] error: {exc}\n"
    for bad in (["--per-image", "0"], ["--per-image", "1", "--seed", "-1"], ["--per-image", "1", "--batch-size", "0"],
                ["--per-image", "1", "--ops-backend", "gpu"]):
        with pytest.raises(SystemExit) as e:
            RA.main(["--checkpoint", "c", "--data", "d", "--out", "O", *bad])
        assert e.value.code == 2


def test_main_accepts_every_backend_and_seed_0(monkeypatch):
    calls = []
    monkeypatch.setattr(RA, "augment", lambda *a: calls.append(a) or {
        "generated": 0, "generated_now": 0, "real_copied": 0, "manifest": "m", "images_per_s": None})
    for backend in ("auto", "reference", "cpu", "cuda", "triton"):
        assert RA.main(["--checkpoint", "c", "--data", "d", "--per-image", "1", "--out", "O", "--seed", "0",
                        "--ops-backend", backend]) == 0
    assert [c[-1] for c in calls] == ["auto", "reference", "cpu", "cuda", "triton"] and {c[4] for c in calls} == {0}


def test_main_help_and_required_arguments(capsys):
    text = help_text(RA.main, capsys)
    assert text.startswith("usage: python -m deformgan.reid_augment [-h] --checkpoint CHECKPOINT --data")
    assert RA.__doc__.strip() in text  # the module's description, its line breaks kept
    flat = " ".join(text.split())
    for option in ("--data DATA Market-layout folder with bounding_box_train/ and its annotations",
                   "--per-image PER_IMAGE K generated images per training image",
                   "--generated-only do not copy the real training images",
                   "--link hard-link the real training images instead of copying",
                   "--ops-backend {auto,reference,cpu,cuda,triton}"):
        assert option in flat, option
    assert usage_error(RA.main, [], capsys) == ("python -m deformgan.reid_augment: error: the following arguments are "
                                                "required: --checkpoint, --data, --per-image, --out")


def test_augment_defaults_seed_0_batches_of_16(data, reposer, tmp_path):
    root, ann = data
    RA.augment("ck.pt", str(root), 6, str(tmp_path / "aug"), progress=False)
    assert RA.read_manifest(str(tmp_path / "aug" / "manifest.csv")) == RA.plan(ann, 6, 0)
    assert [len(b[0]) for b in reposer.made[0].batches] == [16, 2]
    assert reposer.made[0].args == ("ck.pt", None, None)


def test_augment_refuses_a_training_image_of_another_size_and_is_quiet_without_progress(data, reposer, tmp_path,
                                                                                        capsys):
    root, _ = data
    RA.augment("ck.pt", str(root), 1, str(tmp_path / "ok"), progress=False)
    assert capsys.readouterr().err == ""
    path = root / "bounding_box_train" / VALID[1]
    Image.new("RGB", (W, H + 1)).save(path)
    assert_refused(ValueError, f"image {path} is 17x8, expected 16x8", RA.augment, "ck.pt", str(root), 1,
                   str(tmp_path / "aug"), progress=False)


def test_augment_jpeg_encoding_timing_and_copy_when_links_fail(data, reposer, tmp_path, monkeypatch):
    import io
    root, ann = data
    monkeypatch.setattr(os, "link", lambda src, dst: (_ for _ in ()).throw(OSError(18, "Invalid cross-device link")))
    r = RA.augment("ck.pt", str(root), 1, str(tmp_path / "aug"), link=True, progress=False)
    train = tmp_path / "aug" / "bounding_box_train"
    for name in os.listdir(root / "bounding_box_train"):  # a link that cannot be made is a copy
        assert (train / name).read_bytes() == (root / "bounding_box_train" / name).read_bytes()
    assert r["real_copied"] == 5 and 0 < r["seconds"] < 60
    gen, src, tgt = RA.plan(ann, 1, 0)[0]
    arr = np.full((H, W, 3), [10 * ann[src][1, 0], 10 * ann[tgt][1, 0],
                              read(root / "bounding_box_train" / src).mean()], dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95, subsampling=0)  # quality 95, 4:4:4
    assert (train / gen).read_bytes() == buf.getvalue()


# ---------------------------------------------------------------- the output folder, with real faults
def test_augment_never_writes_into_its_input_and_refuses_another_checkpoint_on_resume(data, reposer, tmp_path):
    root, ann = data
    for out in (root, root / "augmented"):
        with pytest.raises(ValueError, match=r"is the input dataset .* or inside it"):
            RA.augment("ck.pt", str(root), 1, str(out), progress=False)
    assert sorted(os.listdir(root / "bounding_box_train")) == sorted(ann)  # untouched
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.write_bytes(b"generator A")
    b.write_bytes(b"generator B")
    out = tmp_path / "aug"
    RA.augment(str(a), str(root), 1, str(out), progress=False)
    assert json.loads((out / "AUGMENT.json").read_text())["per_image"] == 1
    with pytest.raises(ValueError, match=r"was generated with another checkpoint .* would mix two generators"):
        RA.augment(str(b), str(root), 1, str(out), progress=False)
    assert RA.augment(str(a), str(root), 1, str(out), progress=False)["generated_now"] == 0  # the same one: fine


def test_augment_replaces_a_truncated_copy_and_leaves_no_half_file_on_a_full_disk(data, reposer, tmp_path,
                                                                                 monkeypatch):
    root, ann = data
    out = tmp_path / "aug"
    RA.augment("ck.pt", str(root), 1, str(out), progress=False)
    victim = out / "bounding_box_train" / VALID[0]
    victim.write_bytes(victim.read_bytes()[:50])  # a copy cut short (a full disk before this code)
    r = RA.augment("ck.pt", str(root), 1, str(out), progress=False)
    assert r["real_copied"] == 1 and victim.read_bytes() == (root / "bounding_box_train" / VALID[0]).read_bytes()
    os.remove(victim)

    def full(src, dst):
        with open(dst, "wb") as fh:
            fh.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(RA.shutil, "copy2", full)
    with pytest.raises(OSError, match=f"cannot write {victim}: the disk is full"):
        RA.augment("ck.pt", str(root), 1, str(out), progress=False)
    assert not victim.exists() and not [f for f in os.listdir(out / "bounding_box_train") if f.endswith(".part")]


def test_augment_reads_a_deepfashion_folder(reposer, tmp_path):
    """The other commands read DeepFashion's train/ and test/ folders: so does this one."""
    root = tmp_path / "fashion"
    (root / "train").mkdir(parents=True)
    names = ["fashionMENDenimid0000008001_1front.jpg", "fashionMENDenimid0000008002_2side.jpg"]
    rng = np.random.default_rng(1)
    for n in names:
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(root / "train" / n)
    write_annotations(str(root / "annotations-train.csv"), {n: pose(i + 1) for i, n in enumerate(names)})
    r = RA.augment("ck.pt", str(root), 2, str(tmp_path / "aug"), progress=False)
    assert r["generated"] == 4 and r["real_copied"] == 2
    assert sorted(os.listdir(tmp_path / "aug" / "bounding_box_train")) == sorted(
        names + [RA.generated_name(n, k) for n in names for k in range(2)])
