"""The folder mode of deformgan.evaluate: any method's outputs scored by the field's
protocol. Scores are checked against scikit-image / numpy computed here on the exact
uint8 arrays read back from disk, in every pairing mode."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import structural_similarity

from deformgan import evaluate as E
from deformgan import metrics as MT
from deformgan.data.market import read_annotations, read_pairs
from deformgan.data.synthetic import make_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_NETS = dict(inception_weights="none", alexnet_weights="none", pose_weights="none", progress=False)


def sk_ssim(g, t):
    return structural_similarity(g, t, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 channel_axis=-1, data_range=float(g.max()) - float(g.min()))


def expected(pairs, annotations):
    """Independent scores of (generated, target) uint8 HxWx3 arrays: scikit-image SSIM,
    numpy L1 / PSNR, mask-SSIM / mask-L1 with the target's pose mask."""
    s, l1, psnr, ms, ml1 = [], [], [], [], []
    for g, t, name in pairs:
        s.append(sk_ssim(g, t))
        d = g.astype(np.float64) - t.astype(np.float64)
        l1.append(np.abs(d).mean() / 255)
        psnr.append(10 * np.log10(255 ** 2 / (d ** 2).mean()))
        m = MT.pose_mask(annotations[name], *t.shape[:2])[..., None]
        ms.append(sk_ssim(g * m, t * m))
        ml1.append(np.abs(g * m - t * m.astype(np.float64)).mean() / 255)
    return {"ssim": np.mean(s), "l1": np.mean(l1), "psnr": np.mean(psnr), "mask_ssim": np.mean(ms),
            "mask_l1": np.mean(ml1)}


def assert_scores(result, exp, keys=("ssim", "l1", "psnr", "mask_ssim", "mask_l1")):
    for k in keys:
        assert result[k] == pytest.approx(exp[k], abs=1e-9, rel=0), k


def read(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)


def fake_output(target, seed):
    """A plausible 'method output': the target blurred and shifted, plus noise."""
    rng = np.random.default_rng(seed)
    x = np.roll(target.astype(np.float64), 2, axis=1)
    x = (x + np.roll(x, 1, axis=0)) / 2 + rng.normal(0, 12, x.shape)
    return np.clip(x, 0, 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalfolders")
    make_dataset(str(root / "data"), ids=4, images_per_id=3, seed=5, test_fraction=0.5, progress=False)
    data = root / "data"
    ann = read_annotations(str(data / "annotations-test.csv"))
    pairs = read_pairs(str(data / "pairs-test.csv"))[:6]
    real = data / "bounding_box_test"
    gen = {}  # (from, to) -> generated array
    for i, (a, b) in enumerate(pairs):
        gen[(a, b)] = fake_output(read(real / b), i)
    return {"root": root, "data": data, "real": real, "ann": ann, "pairs": pairs, "gen": gen,
            "ann_path": str(data / "annotations-test.csv")}


def write_pairs(path, pairs):
    path.write_text("from,to\n" + "".join(f"{a},{b}\n" for a, b in pairs))
    return str(path)


def test_pairing_by_file_name_matches_scikit_image(dataset, tmp_path):
    gen_dir = tmp_path / "gen"
    gen_dir.mkdir()
    items = []
    seen = set()
    for (a, b), g in dataset["gen"].items():
        if b in seen:
            continue
        seen.add(b)
        # .png output of a .jpg target pairs by name up to the extension; .jpg by the same name
        name = b if len(seen) % 2 else os.path.splitext(b)[0] + ".png"
        Image.fromarray(g).save(gen_dir / name, quality=95)
        items.append((read(gen_dir / name), read(dataset["real"] / b), b))
    r = E.evaluate_folder(str(gen_dir), str(dataset["real"]), str(tmp_path / "out"), dataset["ann_path"], **NO_NETS)
    assert r["pairs"] == len(items) and r["mode"] == "folder" and r["image_size"] == [128, 64]
    assert r["dataset"] == "market"
    assert_scores(r, expected(items, dataset["ann"]))
    # a dataset root given as --real uses its bounding_box_test/
    r2 = E.evaluate_folder(str(gen_dir), str(dataset["data"]), str(tmp_path / "out2"), dataset["ann_path"], **NO_NETS)
    assert r2["ssim"] == r["ssim"]
    # without annotations the mask metrics are skipped with the reason
    r3 = E.evaluate_folder(str(gen_dir), str(dataset["real"]), str(tmp_path / "out3"), **NO_NETS)
    assert "mask_ssim" not in r3 and "give --annotations" in json.dumps(r3["skipped"])
    assert r3["ssim"] == r["ssim"]
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["ssim"] == r["ssim"] and (tmp_path / "out" / "examples.png").exists()


@pytest.mark.parametrize("naming", ["{a}___{b}.png", "{A}___{B}.png", "{a}___{b}_vis.png", "{A}___{B}_vis.jpg"])
def test_pairing_by_pairs_file_with_the_fields_names(dataset, tmp_path, naming):
    gen_dir = tmp_path / "gen"
    gen_dir.mkdir()
    items = []
    for (a, b), g in dataset["gen"].items():
        name = naming.format(a=os.path.splitext(a)[0], b=os.path.splitext(b)[0], A=a, B=b)
        Image.fromarray(g).save(gen_dir / name, quality=95)
        items.append((read(gen_dir / name), read(dataset["real"] / b), b))
    pairs = write_pairs(tmp_path / "pairs.csv", dataset["pairs"])
    r = E.evaluate_folder(str(gen_dir), str(dataset["real"]), str(tmp_path / "out"), dataset["ann_path"], pairs,
                          **NO_NETS)
    assert r["pairs"] == len(dataset["pairs"]) and not r["pairing"]
    assert_scores(r, expected(items, dataset["ann"]))


def _strip(*panels):
    return np.concatenate(panels, axis=1)


def test_strip_panels(dataset, tmp_path):
    gen_dir = tmp_path / "strips"
    gen_dir.mkdir()
    items = []
    for (a, b), g in dataset["gen"].items():
        src, tgt = read(dataset["real"] / a), read(dataset["real"] / b)
        Image.fromarray(_strip(src, tgt, g)).save(gen_dir / f"{os.path.splitext(a)[0]}___{os.path.splitext(b)[0]}.png")
        items.append((g, tgt, b))
    pairs = write_pairs(tmp_path / "pairs.csv", dataset["pairs"])
    exp = expected(items, dataset["ann"])
    for panel in (2, -1):
        r = E.evaluate_folder(str(gen_dir), str(dataset["real"]), str(tmp_path / f"o{panel}"), dataset["ann_path"],
                              pairs, strip_panel=panel, **NO_NETS)
        assert_scores(r, exp)
    # panel 1 is the target itself: SSIM 1, L1 0
    r = E.evaluate_folder(str(gen_dir), str(dataset["real"]), str(tmp_path / "o1"), None, pairs, strip_panel=1,
                          **NO_NETS)
    assert r["ssim"] == pytest.approx(1.0) and r["l1"] == 0.0
    with pytest.raises(E.EvaluationError, match=r"--strip-panel 3: .* has 3 panels \(valid: -3..2\)"):
        E.evaluate_folder(str(gen_dir), str(dataset["real"]), str(tmp_path / "o3"), None, pairs, strip_panel=3,
                          **NO_NETS)
    # a strip whose width is not a whole number of panels
    bad = tmp_path / "bad"
    bad.mkdir()
    (a, b), g = next(iter(dataset["gen"].items()))
    Image.fromarray(_strip(g, g[:, :40])).save(bad / f"{os.path.splitext(a)[0]}___{os.path.splitext(b)[0]}.png")
    with pytest.raises(E.EvaluationError, match="is not a strip of 64:128 panels"):
        E.evaluate_folder(str(bad), str(dataset["real"]), str(tmp_path / "ob"), None, pairs, strip_panel=0,
                          **NO_NETS)


def test_size_mismatch_is_an_error_unless_resize(dataset, tmp_path):
    gen_dir = tmp_path / "small"
    gen_dir.mkdir()
    items = []
    for (a, b), g in list(dataset["gen"].items())[:3]:
        small = np.asarray(Image.fromarray(g).resize((32, 64), Image.BILINEAR))
        Image.fromarray(small).save(gen_dir / b.replace(".jpg", ".png"))
        # the documented resize: Pillow bicubic to the target size, done here independently
        up = np.asarray(Image.fromarray(small).resize((64, 128), Image.BICUBIC))
        items.append((up, read(dataset["real"] / b), b))
    with pytest.raises(E.EvaluationError, match=r"generated image is 32x64 \(WxH\), the real targets are 64x128; "
                                                r"give --resize"):
        E.evaluate_folder(str(gen_dir), str(dataset["real"]), str(tmp_path / "o"), dataset["ann_path"], **NO_NETS)
    r = E.evaluate_folder(str(gen_dir), str(dataset["real"]), str(tmp_path / "o"), dataset["ann_path"], resize=True,
                          **NO_NETS)
    assert r["resize"] and r["pairs"] == len({b for _, _, b in items})
    assert_scores(r, expected(items, dataset["ann"]))


def test_missing_unpaired_and_unreadable_files_are_reported_by_name(dataset, tmp_path):
    gen_dir = tmp_path / "gen"
    gen_dir.mkdir()
    pairs = dataset["pairs"]
    items = []
    for i, ((a, b), g) in enumerate(dataset["gen"].items()):
        name = f"{os.path.splitext(a)[0]}___{os.path.splitext(b)[0]}.png"
        if i == 0:
            continue  # missing
        if i == 1:
            (gen_dir / name).write_bytes(b"\x89PNG\r\n\x1a\n broken")  # unreadable
            continue
        Image.fromarray(g).save(gen_dir / name)
        items.append((g, read(dataset["real"] / b), b))
    Image.fromarray(next(iter(dataset["gen"].values()))).save(gen_dir / "stray.png")  # unpaired
    pairs_csv = write_pairs(tmp_path / "pairs.csv", pairs)
    args = [sys.executable, "-m", "deformgan.evaluate", "--generated", str(gen_dir), "--real", str(dataset["real"]),
            "--pairs", pairs_csv, "--annotations", dataset["ann_path"], "--out", str(tmp_path / "out"),
            "--inception-weights", "none", "--alexnet-weights", "none", "--pose-weights", "none"]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    a0, b0 = pairs[0]
    broken = f"{os.path.splitext(pairs[1][0])[0]}___{os.path.splitext(pairs[1][1])[0]}.png"
    assert f"1 pair(s) with no generated file, left out: {a0},{b0}" in proc.stderr
    assert f"1 unreadable file(s), left out: {broken}" in proc.stderr
    assert "1 generated file(s) with no real target / pair, left out: stray.png" in proc.stderr
    r = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert r["pairing"] == {"missing_generated": [f"{a0},{b0}"], "unreadable": [broken],
                            "unpaired_generated": ["stray.png"]}
    assert r["pairs"] == len(items)
    assert_scores(r, expected(items, dataset["ann"]))
    proc = subprocess.run(args + ["--strict"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--strict: the pairing above is incomplete" in proc.stderr
    # nothing pairs at all: an error, not a table of NaN
    empty = tmp_path / "empty"
    empty.mkdir()
    Image.fromarray(next(iter(dataset["gen"].values()))).save(empty / "nobody.png")
    proc = subprocess.run(args[:4] + [str(empty), "--real", str(dataset["real"]), "--out", str(tmp_path / "o2")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "nothing to score" in proc.stderr and "nobody.png" in proc.stderr


def test_targets_without_annotation_are_named(dataset, tmp_path):
    gen_dir = tmp_path / "gen"
    gen_dir.mkdir()
    (a, b), g = next(iter(dataset["gen"].items()))
    Image.fromarray(g).save(gen_dir / b)
    ann = tmp_path / "ann.csv"
    lines = (dataset["data"] / "annotations-test.csv").read_text().splitlines()
    ann.write_text("\n".join(l for l in lines if not l.startswith(b + ":")) + "\n")
    with pytest.raises(E.EvaluationError, match=f"1 target image\\(s\\) have no row in .*: {b}"):
        E.evaluate_folder(str(gen_dir), str(dataset["real"]), str(tmp_path / "o"), str(ann), **NO_NETS)


def test_real_only_row(dataset, tmp_path):
    r = E.evaluate_folder(None, str(dataset["real"]), str(tmp_path / "real"), dataset["ann_path"], real_only=True,
                          **NO_NETS)
    n = len([f for f in os.listdir(dataset["real"]) if f.endswith(".jpg")])
    assert r["pairs"] == n and r["mode"] == "real"
    assert r["ssim"] == pytest.approx(1.0) and r["mask_ssim"] == pytest.approx(1.0) and r["l1"] == 0.0


def test_networks_and_fid_cache(dataset, tmp_path):
    """IS / mask-IS / FID / LPIPS go through the same path with (seeded) random networks;
    the FID reference statistics are cached by folder content."""
    gen_dir = tmp_path / "gen"
    gen_dir.mkdir()
    for (a, b), g in dataset["gen"].items():
        Image.fromarray(g).save(gen_dir / b.replace(".jpg", ".png"))
    ref = tmp_path / "ref"
    shutil.copytree(dataset["data"] / "bounding_box_train", ref)
    kw = dict(inception_weights="random", alexnet_weights="random", lpips_weights="random", pose_weights="none",
              allow_random_networks=True, fid_reference=str(ref), fid_cache=str(tmp_path / "cache"), progress=False)
    r1 = E.evaluate_folder(str(gen_dir), str(dataset["real"]), str(tmp_path / "o1"), dataset["ann_path"], **kw)
    for k in ("is", "mask_is", "fid", "lpips"):
        assert np.isfinite(r1[k]), k
    assert r1["fid"] > 0 and r1["fid_reference_images"] == len(os.listdir(ref)) and not r1["fid_reference_cached"]
    r2 = E.evaluate_folder(str(gen_dir), str(dataset["real"]), str(tmp_path / "o2"), dataset["ann_path"], **kw)
    assert r2["fid_reference_cached"] and r2["fid"] == r1["fid"] and r2["is"] == r1["is"]
    # the same folder with one image changed is another reference set
    victim = sorted(os.listdir(ref))[0]
    img = read(ref / victim).copy()
    img[:10] = 0
    Image.fromarray(img).save(ref / victim)
    r3 = E.evaluate_folder(str(gen_dir), str(dataset["real"]), str(tmp_path / "o3"), dataset["ann_path"], **kw)
    assert not r3["fid_reference_cached"] and r3["fid"] != r1["fid"]
    # the real row: LPIPS of an image with itself is 0, FID of the real test set is finite
    real = E.evaluate_folder(None, str(dataset["real"]), str(tmp_path / "real"), dataset["ann_path"],
                             real_only=True, **kw)
    assert real["lpips"] == pytest.approx(0.0, abs=1e-6) and np.isfinite(real["fid"]) and real["fid"] != r3["fid"]


def test_compare_table_with_published_rows(dataset, tmp_path):
    outs = []
    for k, shift in (("a", 0), ("b", 1)):
        gen_dir = tmp_path / f"gen{k}"
        gen_dir.mkdir()
        for (a, b), g in dataset["gen"].items():
            Image.fromarray(np.roll(g, shift, axis=0)).save(gen_dir / b.replace(".jpg", ".png"))
        E.evaluate_folder(str(gen_dir), str(dataset["real"]), str(tmp_path / f"run_{k}"), dataset["ann_path"],
                          **NO_NETS)
        outs.append(str(tmp_path / f"run_{k}"))
    proc = subprocess.run([sys.executable, "-m", "deformgan.evaluate", "--compare", *outs, "--out", str(tmp_path / "c")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout
    ra = json.loads((tmp_path / "run_a" / "metrics.json").read_text())
    assert f"| run_a | {ra['pairs']} | {ra['ssim']:.3f} | {ra['mask_ssim']:.3f} |" in table
    assert "| run_b |" in table and "Dataset: market." in table
    assert "| Deformable GAN (CVPR 2018) (published) | - | 0.290 | 0.805 |" in table
    assert "| PATN (CVPR 2019) (published) | - | 0.311 | 0.811 |" in table and "0.940" in table
    assert "| real data (published) | - | 1.000 | 1.000 |" in table
    assert "0.756" not in table  # DeepFashion rows only for DeepFashion runs
    assert (tmp_path / "c" / "compare.md").read_text() == table
    assert "0.756" in E.compare(outs, dataset="deepfashion")
    proc = subprocess.run([sys.executable, "-m", "deformgan.evaluate", "--compare", str(tmp_path / "nope")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no metrics.json in" in proc.stderr
