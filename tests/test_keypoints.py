"""deformgan.keypoints against independent oracles: the person kept (box areas worked
out by hand), the 17 -> 18 joint conversion of an ultralytics-shaped result (the
the method's table written out here, not taken from deformgan.pose), and the extraction
loop driven by a fake pose model that records what it is given (images in BGR, batch
sizes, the confidence passed, resumption, unreadable and refused names)."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from deformgan import keypoints as K
from deformgan.data import market as M

# docs/method.md (keypoints): 18-joint index <- COCO-17 index (the neck, 1, is derived)
SPEC_COCO_FOR_JOINT = {0: 0, 2: 6, 3: 8, 4: 10, 5: 5, 6: 7, 7: 9, 8: 12, 9: 14, 10: 16, 11: 11, 12: 13,
                       13: 15, 14: 2, 15: 1, 16: 4, 17: 3}


def expected_joints(xy17, conf17=None, threshold=0.3):
    """The 18 joints of one person by the method, written as loops."""
    out = [[-1.0, -1.0] for _ in range(18)]
    for joint, coco in SPEC_COCO_FOR_JOINT.items():
        x, y = float(xy17[coco][0]), float(xy17[coco][1])
        kept = (conf17 is None or float(conf17[coco]) >= threshold) and not (x == 0 and y == 0)
        if kept:
            out[joint] = [x, y]
    rs, ls = out[2], out[5]
    if rs != [-1.0, -1.0] and ls != [-1.0, -1.0]:
        out[1] = [(rs[0] + ls[0]) / 2, (rs[1] + ls[1]) / 2]
    return torch.tensor(out)


def fake_result(xy, kconf=None, boxes=None, box_conf=None):
    """An object shaped like one ultralytics Results: .keypoints.xy [n, 17, 2],
    .keypoints.conf [n, 17] or None, .boxes.xyxy [n, 4], .boxes.conf [n] or None."""
    kps = SimpleNamespace(xy=xy, conf=kconf)
    return SimpleNamespace(keypoints=kps, boxes=None if boxes is None else _Boxes(boxes, box_conf))


class _Boxes:
    def __init__(self, xyxy, conf):
        self.xyxy, self.conf = xyxy, conf

    def __len__(self):
        return len(self.xyxy)


def people(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = 1 + 60 * torch.rand(n, 17, 2, generator=g, dtype=torch.float64)
    conf = torch.rand(n, 17, generator=g, dtype=torch.float64)
    return xy, conf


# ------------------------------------------------------------------ select_person
def test_select_person_ranks_by_area_worked_out_by_hand():
    # areas 20*5 = 100, 9*12 = 108, 11*9 = 99; widths, heights, x2 + x1 or y2 + y1
    # alone would rank them otherwise
    boxes = torch.tensor([[30, 40, 50, 45], [2, 3, 11, 15], [100, 1, 111, 10]], dtype=torch.float32)
    assert K.select_person(boxes) == 1
    assert K.select_person(boxes[[0, 2]]) == 0
    # a box with x2 < x1 and y2 < y1 has no area (not (-10) * (-10) = 100)
    inverted = torch.tensor([[5, 5, 7, 8], [20, 20, 10, 10]], dtype=torch.float32)
    assert K.select_person(inverted) == 0
    assert K.select_person(torch.tensor([[5, 5, 7, 8], [20, 5, 10, 30]], dtype=torch.float32)) == 0
    assert K.select_person(torch.tensor([[5, 5, 7, 8], [5, 30, 30, 20]], dtype=torch.float32)) == 0
    # boxes under one pixel wide or tall: 0.5 * 10 = 5 < 0.8 * 8 = 6.4 (clamping the
    # sides at 1 instead of 0 would rank them the other way)
    thin = torch.tensor([[0, 0, 0.5, 10], [0, 0, 0.8, 8]], dtype=torch.float32)
    assert K.select_person(thin) == 1
    flat = torch.tensor([[0, 0, 10, 0.5], [0, 0, 8, 0.8]], dtype=torch.float32)
    assert K.select_person(flat) == 1


def test_select_person_scores_break_ties_only():
    boxes = torch.tensor([[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 5, 5]], dtype=torch.float32)
    assert K.select_person(boxes, torch.tensor([0.2, 0.9, 0.99])) == 1  # the smaller box's score does not count
    assert K.select_person(boxes, torch.tensor([0.7, 0.3, 0.99])) == 0
    assert K.select_person(boxes, torch.tensor([0.7, 0.3, 0.99], dtype=torch.float64)) == 0
    assert K.select_person(torch.zeros(0, 4)) is None and K.select_person(None) is None


# ------------------------------------------------------------------ result_to_keypoints
@pytest.mark.parametrize("threshold", [0.3, 0.6])
def test_result_to_keypoints_keeps_the_largest_person_converted_by_the_spec(threshold):
    xy, conf = people(3)
    xy[1, 4] = 0  # ultralytics' "not found" at (0, 0)
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 30, 40], [5, 5, 20, 20]], dtype=torch.float64)
    kp = K.result_to_keypoints(fake_result(xy, conf, boxes, torch.tensor([0.9, 0.5, 0.8])), threshold)
    assert kp.shape == (18, 2) and kp.dtype == torch.float32
    torch.testing.assert_close(kp, expected_joints(xy[1], conf[1], threshold).float())
    assert (kp == -1).all(-1).sum() == (expected_joints(xy[1], conf[1], threshold) == -1).all(-1).sum() > 0


def test_result_to_keypoints_breaks_a_tie_of_box_areas_by_the_box_scores():
    xy, conf = people(2, seed=3)
    boxes = torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30]], dtype=torch.float32)  # equal areas
    kp = K.result_to_keypoints(fake_result(xy, conf, boxes, torch.tensor([0.4, 0.8])), 0.3)
    torch.testing.assert_close(kp, expected_joints(xy[1], conf[1]).float())


def test_result_to_keypoints_without_confidences_or_box_scores():
    xy, conf = people(2, seed=1)
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 5, 50]], dtype=torch.float32)
    kp = K.result_to_keypoints(fake_result(xy, None, boxes, None), 0.3)
    torch.testing.assert_close(kp, expected_joints(xy[1]).float())  # no confidence: every joint kept
    assert (kp != -1).all()


def test_result_to_keypoints_takes_the_first_person_when_the_boxes_do_not_match():
    xy, conf = people(2, seed=2)
    for boxes in (None, torch.tensor([[0, 0, 10, 10]], dtype=torch.float32)):  # no boxes; 1 box for 2 people
        kp = K.result_to_keypoints(fake_result(xy, conf, boxes, None), 0.3)
        torch.testing.assert_close(kp, expected_joints(xy[0], conf[0]).float())


@pytest.mark.parametrize("result", [
    SimpleNamespace(),                                              # no keypoints attribute
    SimpleNamespace(keypoints=None, boxes=None),
    SimpleNamespace(keypoints=SimpleNamespace(xy=None, conf=None), boxes=None),
    SimpleNamespace(keypoints=SimpleNamespace(xy=torch.zeros(0, 17, 2), conf=torch.zeros(0, 17)), boxes=None),
], ids=["no-attribute", "none", "xy-none", "nobody"])
def test_result_to_keypoints_of_no_person_is_all_missing(result):
    kp = K.result_to_keypoints(result, 0.3)
    assert kp.shape == (18, 2) and torch.equal(kp, torch.full((18, 2), -1.0))


# ------------------------------------------------------------------ extract with a fake model
class FakePoseModel:
    """Records each predict call; answers one person per image whose nose is at the
    image's mean BGR values (so the test can tell what image and channel order it got)."""

    def __init__(self):
        self.calls = []

    def predict(self, images, **kwargs):
        self.calls.append((images, kwargs))
        results = []
        for im in images:
            xy = torch.full((1, 17, 2), 7.0)
            xy[0, 0] = torch.tensor([float(im[..., 0].mean()), float(im[..., 2].mean())])  # (B, R)
            xy[0, 1:5] = torch.tensor([[21.0, 3.0], [22.0, 3.0], [23.0, 3.0], [24.0, 3.0]])
            conf = torch.full((1, 17), 0.9)
            conf[0, 15] = 0.4  # L ankle: kept at conf 0.3, missing at 0.5
            results.append(fake_result(xy, conf, torch.tensor([[0.0, 0.0, 5.0, 5.0]]), torch.tensor([0.9])))
        return results


def write_rgb(path, r, g, b):
    Image.fromarray(np.stack([np.full((6, 4), c, np.uint8) for c in (r, g, b)], -1)).save(path)


@pytest.mark.parametrize("conf", [0.3, 0.5])
def test_extract_runs_the_model_in_batches_of_bgr_images_and_writes_every_joint(tmp_path, conf, capsys):
    images = tmp_path / "images"
    images.mkdir()
    colours = {"a.png": (10, 20, 30), "b.png": (40, 50, 60), "c.png": (70, 80, 90), "d.PNG": (5, 6, 7)}
    for name, rgb in colours.items():
        write_rgb(images / name, *rgb)
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "ann.csv"
    model = FakePoseModel()
    written, skipped, not_done = K.extract(str(images), str(out), batch_size=3, conf=conf, model=model,
                                           progress=False)
    assert (written, skipped, not_done) == (4, 0, [])
    assert "keypoints" not in capsys.readouterr().err  # no progress bar when asked for none
    assert [len(ims) for ims, _ in model.calls] == [3, 1]  # sorted names, batches of 3
    assert all(kw == dict(device=None, verbose=False, conf=0.25) for _, kw in model.calls)
    first = model.calls[0][0][0]
    assert first.shape == (6, 4, 3) and first.flags.c_contiguous
    assert first[0, 0].tolist() == [30, 20, 10]  # BGR
    ann = M.read_annotations(str(out))
    assert list(ann) == ["a.png", "b.png", "c.png", "d.PNG"]
    for name, (r, g, b) in colours.items():
        assert ann[name][0].tolist() == [b, r]  # the nose the fake model put at (B, R)
        assert ann[name][13].tolist() == ([7.0, 7.0] if conf <= 0.4 else [-1.0, -1.0])  # the L ankle
        assert ann[name][15].tolist() == [21.0, 3.0] and ann[name][17].tolist() == [23.0, 3.0]
        assert ann[name][1].tolist() == [7.0, 7.0]  # the neck between the shoulders


def test_extract_resumes_and_reports_unreadable_and_refused_names(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        write_rgb(images / name, 1, 2, 3)
    (images / "broken.jpg").write_bytes(b"\x00 not an image")
    (images / "bad:name.jpg").write_bytes(b"")
    out = tmp_path / "ann.csv"
    M.write_annotations(str(out), {"b.jpg": torch.full((18, 2), -1.0)})
    with open(out, "a") as fh:
        fh.write("c.jpg: [1, 2")  # a line cut by an interrupted run
    model = FakePoseModel()
    written, skipped, not_done = K.extract(str(images), str(out), batch_size=16, model=model, progress=False)
    assert (written, skipped) == (2, 1) and not_done == ["broken.jpg", "bad:name.jpg"]
    assert len(model.calls) == 1 and len(model.calls[0][0]) == 2  # a.jpg and c.jpg; b.jpg is done
    err = capsys.readouterr().err
    assert "cannot read broken.jpg" in err and "bad:name.jpg" in err and "rename the file" in err
    assert "dropped an incomplete last line" in err and "'c.jpg: [1, 2'" in err
    ann = M.read_annotations(str(out))
    assert sorted(ann) == ["a.jpg", "b.jpg", "c.jpg"] and (ann["b.jpg"] == -1).all()
    assert not (ann["c.jpg"] == -1).all()
    # nothing left to do: the model is not called again
    assert K.extract(str(images), str(out), model=model, progress=False)[:2] == (0, 3)
    assert len(model.calls) == 1
    with pytest.raises(FileNotFoundError, match="images folder not found: .*missing"):
        K.extract(str(tmp_path / "missing"), str(out), model=model, progress=False)


def test_extract_defaults_and_progress_bar(tmp_path, monkeypatch, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(17):
        write_rgb(images / f"{i:02d}.png", 1, 2, 3)
    Image.fromarray(np.full((6, 4), 50, np.uint8), mode="L").save(images / "grey.png")
    Image.fromarray(np.full((6, 4, 4), 60, np.uint8), mode="RGBA").save(images / "rgba.png")
    model = FakePoseModel()
    loaded = []
    monkeypatch.setattr(K, "load_pose_model", lambda weights, flag=None: loaded.append(weights) or model)
    out = tmp_path / "ann.csv"
    out.write_bytes(b"")  # an empty file is a new file
    assert K.extract(str(images), str(out)) == (19, 0, [])
    assert loaded == ["yolo11n-pose.pt"]
    assert [len(ims) for ims, _ in model.calls] == [16, 3] and model.calls[0][1]["device"] is None
    assert all(im.shape == (6, 4, 3) for ims, _ in model.calls for im in ims)  # grey and RGBA as 3 channels
    assert model.calls[1][0][1][0, 0].tolist() == [50, 50, 50] and model.calls[1][0][2][0, 0].tolist() == [209] * 3  # 60 at alpha 60 on white
    assert M.read_annotations(str(out))["00.png"][13].tolist() == [7.0, 7.0]  # conf 0.4 >= 0.3
    err = capsys.readouterr().err
    assert "keypoints: 100%" in err and "19/19" in err and "img/s" in err  # the progress bar, by default


def test_extract_refuses_an_output_that_is_not_an_annotation_file(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    write_rgb(images / "a.png", 1, 2, 3)
    out = tmp_path / "ann.csv"
    out.write_bytes(b"\n")  # one byte, no header: not appended to
    with pytest.raises(M.AnnotationError, match="header must be"):
        K.extract(str(images), str(out), model=FakePoseModel(), progress=False)
    assert out.read_bytes() == b"\n"


# ------------------------------------------------------------------ repair_partial_last_line
def test_repair_partial_last_line_cuts_only_an_unterminated_last_line(tmp_path, capsys):
    path = tmp_path / "ann.csv"
    assert K.repair_partial_last_line(str(path)) is None  # no file
    path.write_bytes(b"")
    assert K.repair_partial_last_line(str(path)) is None  # empty
    path.write_bytes(b"header\nline one\n")
    assert K.repair_partial_last_line(str(path)) is None and path.read_bytes() == b"header\nline one\n"
    assert capsys.readouterr().err == ""
    path.write_bytes(b"header\nline one\nline tw")
    assert K.repair_partial_last_line(str(path)) == "line tw"
    assert path.read_bytes() == b"header\nline one\n"
    assert f"{path}: dropped an incomplete last line" in capsys.readouterr().err
    long = "x" * 70
    path.write_bytes(b"header\n" + long.encode())
    assert K.repair_partial_last_line(str(path)) == long
    assert f"({long[:60]!r}); its image is redone" in capsys.readouterr().err  # the first 60 characters
    path.write_bytes(b"no newline at all \xff")
    assert K.repair_partial_last_line(str(path)) == "no newline at all \ufffd"
    assert path.read_bytes() == b""


# ------------------------------------------------------------------ the command line, in process
def test_main_passes_its_flags_on_and_reports_the_counts(tmp_path, monkeypatch, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(17):
        write_rgb(images / f"{i:02d}.png", i, 0, 0)
    (images / "broken.png").write_bytes(b"\x00")
    model = FakePoseModel()
    loaded = []
    monkeypatch.setattr(K, "load_pose_model", lambda weights, flag=None: loaded.append(weights) or model)
    out = tmp_path / "ann.csv"
    assert K.main([str(images), "--out", str(out)]) == 0  # the defaults
    assert loaded == ["yolo11n-pose.pt"]
    assert [len(ims) for ims, _ in model.calls] == [16, 1]  # batches of 16 names; broken.png, last, unreadable
    assert all(kw["device"] is None for _, kw in model.calls)
    ann = M.read_annotations(str(out))
    assert len(ann) == 17 and ann["03.png"][13].tolist() == [7.0, 7.0]  # conf 0.4 >= the default 0.3
    err = capsys.readouterr().err
    assert f"wrote 17 images to {out}; 0 already there; 1 unreadable: broken.png" in err
    out2 = tmp_path / "ann2.csv"
    model.calls.clear()
    assert K.main([str(images), "--out", str(out2), "--weights", "w.pt", "--device", "cpu", "--batch-size", "5",
                   "--conf", "0.5"]) == 0
    assert loaded[-1] == "w.pt"
    assert [len(ims) for ims, _ in model.calls] == [5, 5, 5, 2] and model.calls[0][1]["device"] == "cpu"
    assert M.read_annotations(str(out2))["03.png"][13].tolist() == [-1.0, -1.0]
    assert "wrote 17 images" in capsys.readouterr().err
    assert K.main([str(images), "--out", str(out2)]) == 0
    assert f"wrote 0 images to {out2}; 17 already there; 1 unreadable: broken.png" in capsys.readouterr().err


class FakeYOLO:
    made = []

    def __init__(self, weights, task=None):
        if weights.endswith(".pt") and "missing" in weights:
            raise FileNotFoundError("no such file")
        FakeYOLO.made.append((weights, task))


def test_load_pose_model_builds_random_weights_from_a_yaml_and_explains_missing_weights(monkeypatch, capsys):
    import sys
    import types
    fake = types.ModuleType("ultralytics")
    fake.YOLO = FakeYOLO
    monkeypatch.setitem(sys.modules, "ultralytics", fake)
    FakeYOLO.made.clear()
    assert isinstance(K.load_pose_model("yolo11n-pose.yaml"), FakeYOLO)
    assert "building yolo11n-pose.yaml with RANDOM weights" in capsys.readouterr().err
    assert isinstance(K.load_pose_model("local.pt"), FakeYOLO)
    assert capsys.readouterr().err == ""
    assert FakeYOLO.made == [("yolo11n-pose.yaml", "pose"), ("local.pt", "pose")]
    assert isinstance(K.load_pose_model(), FakeYOLO) and FakeYOLO.made[-1] == ("yolo11n-pose.pt", "pose")
    with pytest.raises(K.PoseWeightsError) as err:  # the hint names the option of the command that asked
        K.load_pose_model("missing.pt")
    assert str(err.value) == ("cannot load pose weights 'missing.pt' (no such file). Pretrained weights are "
                              "downloaded by ultralytics when online; offline, pass --pose-weights "
                              "/path/to/yolo11n-pose.pt")
    with pytest.raises(K.PoseWeightsError) as err:
        K.load_pose_model("missing.pt", flag="--weights")
    assert str(err.value).endswith("offline, pass --weights /path/to/yolo11n-pose.pt")
    monkeypatch.setitem(sys.modules, "ultralytics", None)  # not installed
    with pytest.raises(ImportError) as err:
        K.load_pose_model("local.pt")
    assert str(err.value) == "keypoint extraction needs ultralytics: pip install ultralytics"


def test_predict_passes_its_arguments_and_keeps_torch_thread_count():
    class SingleThreaded:
        def predict(self, images, **kwargs):
            torch.set_num_threads(1)  # what ultralytics does on the CPU
            return images, kwargs

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert K.predict(SingleThreaded(), ["im"], device="cpu", conf=0.25) == (["im"], dict(device="cpu", conf=0.25))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_main_help_names_the_command_and_keeps_the_description_lines(capsys):
    with pytest.raises(SystemExit) as exit_:
        K.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m deformgan.keypoints [-h] --out OUT")
    # the module docstring, its line breaks kept (RawDescriptionHelpFormatter)
    assert "\nRuns an ultralytics YOLO pose model over a folder of person images, keeps one person\n" in out
    assert "\nPretrained weights: ``--weights yolo11n-pose.pt`` loads them through ultralytics\n" in out
    flat = " ".join(out.split())  # argparse wraps the option help
    for text in ("--out OUT annotation CSV to write (appended to when it exists)",
                 "--weights WEIGHTS YOLO pose weights (.pt) or architecture (.yaml)",
                 "--device DEVICE e.g. cpu, 0, cuda:0 (default: ultralytics' choice)",
                 "--conf CONF keypoint confidence under which a joint is missing"):
        assert text in flat, text


def test_main_refuses_a_missing_out_and_a_confidence_outside_0_1(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(K, "load_pose_model", lambda weights, flag=None: FakePoseModel())
    for argv, message in (([str(tmp_path)], "the following arguments are required: --out"),
                          ([str(tmp_path), "--out", "a.csv", "--conf", "1.5"],
                           "argument --conf: must be a number in [0, 1], got 1.5")):
        with pytest.raises(SystemExit) as exit_:
            K.main(argv)
        assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_main_summary_lists_the_images_not_done(tmp_path, monkeypatch, capsys):
    images = tmp_path / "images"
    images.mkdir()
    write_rgb(images / "a.png", 1, 2, 3)
    monkeypatch.setattr(K, "load_pose_model", lambda weights, flag=None: FakePoseModel())
    assert K.main([str(images), "--out", str(tmp_path / "one.csv")]) == 0
    assert capsys.readouterr().err.endswith("wrote 1 images to " + str(tmp_path / "one.csv") + "; 0 already there; "
                                            "0 unreadable\n")
    (images / "b.png").write_bytes(b"\x00")
    (images / "c.png").write_bytes(b"\x00")
    assert K.main([str(images), "--out", str(tmp_path / "two.csv")]) == 0
    assert capsys.readouterr().err.endswith("; 0 already there; 2 unreadable: b.png, c.png\n")


def test_offline_without_pose_weights_the_commands_exit_2_with_one_clear_line(tmp_path, monkeypatch, capsys):
    """keypoints and the DeepFashion converter (detecting poses) with weights that cannot
    be had: exit 2, one message naming the weights and the option, no traceback; the
    converter refuses before converting any image."""
    import sys
    import types
    from deformgan.data import deepfashion as DF
    fake = types.ModuleType("ultralytics")
    fake.YOLO = FakeYOLO
    monkeypatch.setitem(sys.modules, "ultralytics", fake)
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (64, 128)).save(images / "0001_c1s1_000001_01.jpg")
    assert K.main([str(images), "--out", str(tmp_path / "a.csv"), "--weights", "missing.pt"]) == 2
    err = capsys.readouterr().err
    assert err == ("[deformgan.keypoints] error: cannot load pose weights 'missing.pt' (no such file). Pretrained "
                   "weights are downloaded by ultralytics when online; offline, pass --weights "
                   "/path/to/yolo11n-pose.pt\n")
    shop = tmp_path / "In-shop" / "img" / "MEN" / "Denim" / "id_00000080"
    shop.mkdir(parents=True)
    Image.new("RGB", (256, 256)).save(shop / "01_1_front.jpg")
    out = tmp_path / "fashion"
    assert DF.main([str(tmp_path / "In-shop"), "--out", str(out), "--weights", "missing.pt"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("[deformgan.data.deepfashion] error: cannot load pose weights 'missing.pt'")
    assert err.endswith("offline, pass --weights /path/to/yolo11n-pose.pt\n") and "Traceback" not in err
    assert not out.exists() or not any(out.rglob("*.jpg"))  # nothing converted
