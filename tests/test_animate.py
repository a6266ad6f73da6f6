"""deformgan/animate.py's contract, function by function, with a recording stand-in for
the generator and the pose model (the real ones go through it in
tests/test_evaluate_generate.py): pose files of every kind, missing joints carried over,
poses scaled to the model's size, batches, the panel, GIF/MP4 writing, the CLI."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from deformgan import animate as A
from deformgan import generate as GEN
from deformgan.data.market import write_annotations
from deformgan.viz import pose_image
from helpers import assert_refused

H, W = 16, 8


def pose(x=3.0, y=3.0):
    """A whole pose inside 16x8 with the neck (joint 1) at (x, y)."""
    kp = torch.tensor([[4, 1], [4, 3], [2, 3], [1, 6], [1, 8], [6, 3], [7, 6], [7, 8], [3, 8], [3, 11], [3, 14],
                       [5, 8], [5, 11], [5, 14], [3, 1], [5, 1], [2, 1], [6, 1]], dtype=torch.float32)
    kp[1] = torch.tensor([x, y])
    return kp


class Reposer(GEN.Reposer):
    """generate.Reposer without a checkpoint: its pose model reads the neck's column from
    the frame's red value (red 0: no person); each generated image is flat, coloured by
    the target neck (x * 10, y * 10) and the source neck's x * 10."""

    def __init__(self):
        self.height, self.width = H, W
        self.batches = []
        self.asked = []

    def keypoints_of(self, image, name="image"):
        self.asked.append(name)
        red = int(np.asarray(image)[0, 0, 0])
        if red == 0:
            raise GEN.NoPersonFound(f"no person found in {name}")
        return pose(red / 10, 3.0)

    def generate_batch(self, image, source_keypoints, target_keypoints):
        self.batches.append((image, source_keypoints.clone(), target_keypoints.clone()))
        return [np.full((H, W, 3), [round(10 * t[1, 0].item()), round(10 * t[1, 1].item()),
                                    round(10 * source_keypoints[1, 0].item())], dtype=np.uint8)
                for t in target_keypoints]


def frame(path, red, size=(W, H)):
    Image.new("RGB", size, (red, 50, 50)).save(path)
    return path


# ---------------------------------------------------------------- poses
def test_carry_missing_joints_takes_each_from_the_frame_before():
    seq = torch.stack([pose(1), pose(2), pose(3)])
    seq[0, 5] = -1  # missing from the first frame on: stays missing
    seq[1, 5] = -1
    seq[1, 0] = float("nan")  # missing once: frame 0's
    seq[1, 2] = -1
    seq[2, 2] = -1  # missing twice: frame 0's, carried through frame 1
    before = seq.clone()
    out = A.carry_missing_joints(seq)
    assert torch.equal(seq.nan_to_num(-7), before.nan_to_num(-7))  # the input is left alone
    want = torch.stack([pose(1), pose(2), pose(3)])
    want[:2, 5] = -1
    want[2, 5] = pose()[5]
    want[1, 0] = pose()[0]
    assert torch.equal(out, want)


def test_pose_files_csv_json_forms_and_refusals(tmp_path):
    csv = tmp_path / "poses.csv"
    write_annotations(str(csv), {"b.jpg": pose(2), "a.jpg": pose(1)})
    seq, size, skipped = A.read_poses(str(csv))
    assert torch.equal(seq, torch.stack([pose(2), pose(1)])) and size is None and skipped == []  # file order
    x_y = {"x": pose(4)[:, 0].tolist(), "y": pose(4)[:, 1].tolist()}
    with_nan = pose(5).tolist()
    with_nan[3] = [float("nan"), 2.0]
    with_nan[4] = [-3.0, 2.0]
    js = tmp_path / "poses.json"
    js.write_text(json.dumps([pose(3).tolist(), {"keypoints": pose(6).tolist()}, x_y, with_nan]))
    seq, size, skipped = A.read_poses(str(js))
    want = torch.stack([pose(3), pose(6), pose(4), pose(5)])
    want[3, 3:5] = -1  # NaN and negative joints are missing: -1
    assert torch.equal(seq, want) and size is None and skipped == []
    cases = {"[]": f"{js}: expected a non-empty JSON list of poses",
             '{"x": 1}': f"{js}: expected a non-empty JSON list of poses",
             json.dumps([pose().tolist(), pose().tolist()[:17]]): f"{js}[1]: expected 18 (x, y) joints, got shape [17, 2]",
             json.dumps([{"x": [1] * 18, "y": [2] * 17}]): f"{js}[0]: expected {A.POSE_FORMS} (stack expects each "
                                                          "tensor to be equal size, but got [18] at entry 0 and [17] "
                                                          "at entry 1)",
             json.dumps([pose().tolist(), {"y": [1] * 18}]): f"{js}[1]: expected {A.POSE_FORMS} (must be real "
                                                             "number, not dict)",
             json.dumps([{"x": ["a"] * 18, "y": [1] * 18}]): f"{js}[0]: expected {A.POSE_FORMS} (too many "
                                                             "dimensions 'str')",
             json.dumps([[[1, 2], [3]]]): f"{js}[0]: expected {A.POSE_FORMS} (expected sequence of length 2 at "
                                          "dim 1 (got 1))"}
    for text, message in cases.items():
        js.write_text(text)
        assert_refused(GEN.PoseFileError, message, A.read_poses, str(js))
    # integer coordinates are read as float32 poses, in every form
    ints = pose(4).int()
    for form in (ints.tolist(), {"keypoints": ints.tolist()}, {"x": ints[:, 0].tolist(), "y": pose(4)[:, 1].tolist()},
                 {"x": pose(4)[:, 0].tolist(), "y": ints[:, 1].tolist()}):
        js.write_text(json.dumps([form]))
        seq, _, _ = A.read_poses(str(js))
        assert seq.dtype == torch.float32 and torch.equal(seq, pose(4)[None]), form
    js.write_text("[1, ")
    with pytest.raises(GEN.PoseFileError, match=rf"^{js}: not valid JSON \(Expecting value"):
        A.read_poses(str(js))
    csv.write_text("name:keypoints_y:keypoints_x\n")
    assert_refused(GEN.PoseFileError, f"{csv}: no pose rows", A.read_poses, str(csv))
    assert_refused(FileNotFoundError, f"--poses: no such file or folder {tmp_path / 'x.json'}", A.read_poses,
                   str(tmp_path / "x.json"))


def test_pose_folder_frames_in_name_order_skipping_frames_without_a_person(tmp_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    for name, red in (("03.png", 30), ("01.png", 10), ("02.png", 0), ("00.png", 50)):
        frame(folder / name, red, size=(20, 40))
    (folder / "notes.txt").write_text("not a frame")
    r = Reposer()
    seq, size, skipped = A.read_poses(str(folder), r, progress=False)
    assert torch.equal(seq, torch.stack([pose(5), pose(1), pose(3)])) and size == (40, 20) and skipped == ["02.png"]
    assert r.asked == ["frame 00.png", "frame 01.png", "frame 02.png", "frame 03.png"]
    assert capsys.readouterr().err == ""
    A.read_poses(str(folder), Reposer())  # a progress bar by default
    err = capsys.readouterr().err
    assert "poses: 100%" in err and "4/4" in err and "frame/s" in err
    frame(folder / "04.png", 10, size=(20, 41))
    assert_refused(ValueError, "--poses: frame 04.png is 20x41, the first frame 20x40 (WxH); the frames of a "
                   "sequence share one size", A.read_poses, str(folder), Reposer(), progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_refused(FileNotFoundError, f"--poses: no images in the folder {empty}", A.read_poses, str(empty),
                   Reposer())
    assert_refused(ValueError, "a folder of frames needs a Reposer (its pose model) to find the poses",
                   A.read_poses, str(folder))
    nobody = tmp_path / "nobody"
    nobody.mkdir()
    frame(nobody / "a.png", 0)
    frame(nobody / "b.png", 0)
    assert_refused(GEN.NoPersonFound, f"--poses: no person found in any of the 2 frames of {nobody}", A.read_poses,
                   str(nobody), Reposer(), progress=False)


# ---------------------------------------------------------------- writing
def test_write_video_gif_frames_duration_and_no_leftovers(tmp_path):
    frames = [np.full((H, W, 3), v, dtype=np.uint8) for v in (0, 100, 200)]
    for fps, duration in ((10, 100), (4, 250), (0.5, 2000), (3, 330)):  # GIF stores hundredths of a second
        out = tmp_path / "sub" / f"a{fps}.gif"  # the folder is made
        assert A.write_video(frames, str(out), fps) == "pillow"
        with Image.open(out) as im:
            assert im.n_frames == 3 and im.info["duration"] == duration and im.info["loop"] == 0
            got = []
            for i in range(3):
                im.seek(i)
                got.append(int(np.asarray(im.convert("RGB"))[0, 0, 0]))
        assert got == [0, 100, 200]
    assert sorted(os.listdir(tmp_path / "sub")) == ["a0.5.gif", "a10.gif", "a3.gif", "a4.gif"]
    assert A.write_video(frames, str(tmp_path / "sub" / "a50.gif"), 50) == "pillow"  # the fastest a GIF holds
    with Image.open(tmp_path / "sub" / "a50.gif") as im:
        assert im.info["duration"] == 20
    os.remove(tmp_path / "sub" / "a50.gif")
    gif_fast = ("--fps 50.5: a GIF stores frame delays in hundredths of a second and viewers show delays under 2 of "
                "them as 10, so it would play at 10 fps; use --fps 50 or less for GIF, or MP4 (--out X.mp4)")
    assert_refused(ValueError, gif_fast, A.write_video, frames, str(tmp_path / "fast.gif"), 50.5)
    avi = str(tmp_path / "x.avi")
    assert_refused(ValueError, f"--out must end in .gif or .mp4, got {avi!r}", A.write_video, frames, avi, 10)
    assert os.listdir(tmp_path) == ["sub"]  # nothing written, no temporary file left


def test_mp4_writer_name_opencv_then_imageio_ffmpeg(monkeypatch):
    import importlib.util
    import sys
    import types
    installed = "opencv" if importlib.util.find_spec("cv2") else (
        "imageio-ffmpeg" if importlib.util.find_spec("imageio_ffmpeg") else None)
    assert A.mp4_writer_name() == installed
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 now raises ImportError
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", types.ModuleType("imageio_ffmpeg"))
    assert A.mp4_writer_name() == "imageio-ffmpeg"
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    assert A.mp4_writer_name() is None


def test_write_video_mp4(tmp_path, monkeypatch):
    frames = [np.full((H * 2, W * 2, 3), v, dtype=np.uint8) for v in (0, 120, 240)]
    writer = A.mp4_writer_name()
    if writer == "opencv":
        import cv2
        out = tmp_path / "a.mp4"
        assert A.write_video(frames, str(out), 5) == "opencv"
        cap = cv2.VideoCapture(str(out))
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3 and cap.get(cv2.CAP_PROP_FPS) == pytest.approx(5)
        assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (W * 2, H * 2)
        cap.release()
        assert os.listdir(tmp_path) == ["a.mp4"]
    monkeypatch.setattr(A, "mp4_writer_name", lambda: None)
    assert_refused(RuntimeError, "MP4 needs OpenCV (pip install opencv-python) or imageio-ffmpeg; GIF output "
                   "(--out X.gif) always works", A.write_video, frames, str(tmp_path / "b.mp4"), 5)
    assert not os.path.exists(tmp_path / "b.mp4") and not [f for f in os.listdir(tmp_path) if ".tmp" in f]


# ---------------------------------------------------------------- animate
def test_animate_generates_each_pose_in_batches_at_the_models_size(tmp_path):
    src = frame(tmp_path / "src.png", 20, size=(16, 32))  # twice the model's size
    poses = tmp_path / "p.json"
    seq = [pose(1, 2), pose(2, 4), pose(3, 6), pose(4, 8), pose(5, 10)]
    seq[2][7] = -1  # carried over from the frame before, then scaled
    poses.write_text(json.dumps([p.tolist() for p in seq]))
    r = Reposer()
    res = A.animate("unused.pt", str(src), str(poses), str(tmp_path / "out.gif"), batch_size=2, pose_size=(32, 16),
                    progress=False, reposer=r)
    assert res == {"frames": 5, "out": str(tmp_path / "out.gif"), "writer": "pillow", "size": [H, W],
                   "skipped_frames": []}
    assert [len(b[2]) for b in r.batches] == [2, 2, 1]
    targets = torch.cat([b[2] for b in r.batches])
    want = torch.stack(seq)
    want[2, 7] = want[1, 7]
    assert torch.equal(targets, want / 2)  # poses given at 32x16, the model is 16x8
    image, src_kp, _ = r.batches[0]
    assert image.size == (W, H) and torch.equal(src_kp, pose(2.0, 3.0) / 2)  # detected (red 20), then fitted
    assert r.asked == [str(src)]
    with Image.open(tmp_path / "out.gif") as im:
        colours = []
        for i in range(5):
            im.seek(i)
            colours.append(np.asarray(im.convert("RGB"))[0, 0].tolist())
    assert colours == [[5, 10, 10], [10, 20, 10], [15, 30, 10], [20, 40, 10], [25, 50, 10]]


@pytest.mark.parametrize("pose_size", [(64, 16), (16, 32)], ids=["taller", "wider"])
def test_animate_scales_each_axis_by_its_own_factor(tmp_path, pose_size):
    """Poses given at a size that is not proportional to the model's (16x8): x scales by
    the width ratio and y by the height ratio (the two swapped gives other numbers, since
    the ratios differ); a missing joint stays -1."""
    src = frame(tmp_path / "src.png", 20)
    ph, pw = pose_size
    seq = [pose(1, 2) * torch.tensor([pw / W, ph / H]), pose(3, 5) * torch.tensor([pw / W, ph / H])]
    seq[1][4] = -1
    poses = tmp_path / "p.json"
    poses.write_text(json.dumps([p.tolist() for p in seq]))
    r = Reposer()
    A.animate("unused.pt", str(src), str(poses), str(tmp_path / "out.gif"), pose_size=pose_size, progress=False,
              reposer=r)
    got = torch.cat([b[2] for b in r.batches])
    want = torch.stack([pose(1, 2), pose(3, 5)])
    want[1, 4] = seq[0][4] * torch.tensor([W / pw, H / ph])  # carried over from frame 0, then scaled
    assert W / pw != H / ph
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_animate_panel_given_source_pose_and_folder_sizes(tmp_path, capsys):
    src = frame(tmp_path / "src.png", 20)
    folder = tmp_path / "frames"
    folder.mkdir()
    names = [f"{i:02d}.png" for i in range(23)]
    for i, name in enumerate(names):  # frames at 2x the model's size; no person in 21 of them
        frame(folder / name, 40 if i in (4, 9) else 0, size=(16, 32))
    r = Reposer()
    res = A.animate("unused.pt", str(src), str(folder), str(tmp_path / "p.gif"), source_keypoints=pose(7, 1),
                    panel=True, progress=False, reposer=r)
    assert res["frames"] == 2 and res["size"] == [H, 3 * W] and res["skipped_frames"] == [
        n for i, n in enumerate(names) if i not in (4, 9)]
    assert r.asked == [f"frame {n}" for n in names]  # the source pose was given: not detected
    assert torch.equal(r.batches[0][1], pose(7, 1)) and torch.equal(r.batches[0][2], torch.stack([pose(4, 3) / 2] * 2))
    skipped = [n for i, n in enumerate(names) if i not in (4, 9)]
    assert capsys.readouterr().err == ("[deformgan.animate] warning: no person found in 21 frame(s), skipped: "
                                       + ", ".join(skipped[:20]) + " ...\n")
    with Image.open(tmp_path / "p.gif") as im:
        panel = np.asarray(im.convert("RGB")).astype(int)
    assert panel.shape == (H, 3 * W, 3)
    assert (np.abs(panel[:, :W] - [20, 50, 50]) <= 8).all()  # the source (GIF palette: near)
    drawn = np.asarray(pose_image(pose(4, 3) / 2, H, W)).astype(int)
    assert (np.abs(panel[:, W:2 * W] - drawn) <= 8).all() and drawn.any()  # the target pose, drawn
    assert (np.abs(panel[:, 2 * W:] - [20, 15, 70]) <= 8).all()  # the generated image
    # with a pose size given, it wins over the frames' size
    r = Reposer()
    A.animate("unused.pt", str(src), str(folder), str(tmp_path / "q.gif"), pose_size=(H, W), progress=False,
              reposer=r)
    assert torch.equal(r.batches[0][2], torch.stack([pose(4, 3)] * 2))


def test_animate_refusals_before_any_work(tmp_path, monkeypatch):
    r = Reposer()
    args = ("unused.pt", str(tmp_path / "src.png"), str(tmp_path / "p.json"))
    assert_refused(ValueError, f"--out must end in .gif or .mp4, got {str(tmp_path / 'o.avi')!r}", A.animate, *args,
                   str(tmp_path / "o.avi"), reposer=r)
    monkeypatch.setattr(A, "mp4_writer_name", lambda: None)
    assert_refused(RuntimeError, "MP4 needs OpenCV (pip install opencv-python) or imageio-ffmpeg; GIF output "
                   "(--out X.gif) always works", A.animate, *args, str(tmp_path / "o.MP4"), reposer=r)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="cannot write there"):
        A.animate(*args, str(tmp_path / "file" / "o.gif"), reposer=r)
    assert_refused(ValueError, "--fps 60: a GIF stores frame delays in hundredths of a second and viewers show "
                   "delays under 2 of them as 10, so it would play at 10 fps; use --fps 50 or less for GIF, or MP4 "
                   "(--out X.mp4)", A.animate, *args, str(tmp_path / "o.gif"), fps=60, reposer=r)
    assert r.asked == [] and r.batches == [] and not os.path.exists(tmp_path / "o.gif")


def test_animate_shows_progress_by_default(tmp_path, capsys):
    src = frame(tmp_path / "src.png", 20)
    poses = tmp_path / "p.json"
    poses.write_text(json.dumps([pose().tolist()] * 3))
    A.animate("unused.pt", str(src), str(poses), str(tmp_path / "o.gif"), batch_size=2, reposer=Reposer())
    err = capsys.readouterr().err
    assert "animate: 100%" in err and "2/2" in err and "batch/s" in err


# ---------------------------------------------------------------- the command line
def test_main_passes_its_arguments_and_reports(tmp_path, monkeypatch, capsys):
    calls = []

    def animate(*args):
        calls.append(args)
        return {"frames": 7, "out": "o.gif", "writer": "pillow"}

    monkeypatch.setattr(A, "animate", animate)
    base = ["--checkpoint", "c.pt", "--source", "s.png", "--poses", "p.json", "--out", "o.gif"]
    assert A.main(base) == 0
    kp = pose(2, 5)
    text = f"{kp[:, 1].int().tolist()}:{kp[:, 0].int().tolist()}"
    assert A.main(base + ["--source-keypoints", text, "--fps", "0.5", "--panel", "--batch-size", "3",
                          "--pose-size", "32", "16", "--pose-weights", "w.pt", "--device", "cpu"]) == 0
    pose_file = tmp_path / "src.json"
    pose_file.write_text(json.dumps({"keypoints": pose(6, 2).tolist()}))
    assert A.main(base + ["--source-pose", str(pose_file)]) == 0
    assert calls[0] == ("c.pt", "s.png", "p.json", "o.gif", None, 10.0, False, 8, None, None, "yolo11n-pose.pt")
    assert calls[1][:4] == calls[0][:4] and torch.equal(calls[1][4], kp)
    assert calls[1][5:] == (0.5, True, 3, [32, 16], "cpu", "w.pt")  # below one frame a second is allowed
    assert torch.equal(calls[2][4], pose(6, 2))
    assert capsys.readouterr().err == "[deformgan.animate] wrote 7 frames to o.gif (pillow)\n" * 3
    for exc in (FileNotFoundError("a"), ValueError("b"), RuntimeError("c"), GEN.NoPersonFound("d")):
        def failing(*args, exc=exc):
            raise exc
        monkeypatch.setattr(A, "animate", failing)
        assert A.main(base) == 2
        assert capsys.readouterr().err == f"[deformgan.animate] error: {exc}\n"
    assert A.main(base + ["--source-keypoints", "[1, 2]:[3]"]) == 2  # a malformed pose string: refused, named
    assert capsys.readouterr().err.startswith("[deformgan.animate] error: ")
    for bad in (["--fps", "0"], ["--fps", "241"], ["--batch-size", "0"], ["--pose-size", "32"],
                ["--source-keypoints", "x", "--source-pose", "y"]):
        with pytest.raises(SystemExit) as e:
            A.main(base + bad)
        assert e.value.code == 2


def test_main_help_and_required_arguments(capsys):
    from helpers import help_text, usage_error
    text = help_text(A.main, capsys)
    assert text.startswith("usage: python -m deformgan.animate [-h] --checkpoint CHECKPOINT --source")
    assert A.__doc__.strip() in text  # the module's description, its line breaks kept
    flat = " ".join(text.split())
    for option in ('--source-keypoints SOURCE_KEYPOINTS "[y0, ..., y17]:[x0, ..., x17]"',
                   "--source-pose SOURCE_POSE a JSON pose file",
                   "--poses POSES annotation CSV, JSON list of poses, or a folder of frames",
                   "--out OUT OUT.gif or OUT.mp4", "--panel source | target pose | generated",
                   "--pose-size H W the image size the poses are given in (default: the frames', else the model's)",
                   "[--source-keypoints SOURCE_KEYPOINTS | --source-pose SOURCE_POSE]"):
        assert option in flat, option
    assert usage_error(A.main, [], capsys) == ("python -m deformgan.animate: error: the following arguments are "
                                               "required: --checkpoint, --source, --poses, --out")


def test_animate_defaults_and_the_reposer_it_builds(tmp_path, monkeypatch, capsys):
    made = []

    class Built(Reposer):
        def __init__(self, checkpoint, **kwargs):
            super().__init__()
            made.append((checkpoint, kwargs))

    monkeypatch.setattr(A, "Reposer", Built)
    src = frame(tmp_path / "src.png", 20)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(9):  # nine frames, each with a person (in nine poses: GIF merges equal frames)
        frame(folder / f"{i:02d}.png", 30 + i)
    res = A.animate("ck.pt", str(src), str(folder), str(tmp_path / "o.gif"))
    assert made == [("ck.pt", {"device": None, "pose_weights": "yolo11n-pose.pt"})]
    assert res["size"] == [H, W] and res["frames"] == 9  # no panel
    with Image.open(tmp_path / "o.gif") as im:
        assert im.info["duration"] == 100  # 10 fps
    err = capsys.readouterr().err
    assert "poses: 100%" in err and "animate: 100%" in err and "2/2" in err  # batches of 8: 8 + 1
    A.animate("ck.pt", str(src), str(folder), str(tmp_path / "p.gif"), device="cpu", pose_weights="w.pt",
              progress=False)
    assert made[-1] == ("ck.pt", {"device": "cpu", "pose_weights": "w.pt"}) and capsys.readouterr().err == ""


def test_animate_one_pose_and_twenty_skipped_frames(tmp_path, capsys):
    src = frame(tmp_path / "src.png", 20)
    folder = tmp_path / "frames"
    folder.mkdir()
    names = [f"{i:02d}.png" for i in range(21)]
    for i, name in enumerate(names):  # one frame with a person, twenty without
        frame(folder / name, 30 if i == 20 else 0)
    res = A.animate("ck.pt", str(src), str(folder), str(tmp_path / "o.gif"), source_keypoints=pose(),
                    progress=False, reposer=Reposer())
    assert res["frames"] == 1 and res["size"] == [H, W]
    assert capsys.readouterr().err == ("[deformgan.animate] warning: no person found in 20 frame(s), skipped: "
                                       + ", ".join(names[:20]) + "\n")


def test_write_video_mp4_with_opencv_colours_codec_and_failures(tmp_path, monkeypatch):
    cv2 = pytest.importorskip("cv2")
    frame_rgb = np.zeros((64, 48, 3), dtype=np.uint8)
    frame_rgb[...] = [200, 40, 90]
    out = tmp_path / "one.mp4"
    assert A.write_video([frame_rgb], str(out), 5) == "opencv"  # a single frame
    cap = cv2.VideoCapture(str(out))
    ok, bgr = cap.read()
    cap.release()
    assert ok
    assert np.abs(bgr[8:-8, 8:-8, ::-1].astype(int) - [200, 40, 90]).max() <= 12  # RGB written as BGR

    class Closed:
        def __init__(self, *args):
            pass

        def isOpened(self):
            return False

    monkeypatch.setattr(cv2, "VideoWriter", Closed)
    bad = str(tmp_path / "bad.mp4")
    assert_refused(RuntimeError, f"OpenCV could not open an MP4 writer for {bad}", A.write_video, [frame_rgb], bad, 5)
    assert sorted(os.listdir(tmp_path)) == ["one.mp4"]


def test_write_video_mp4_with_imageio_ffmpeg(tmp_path, monkeypatch):
    import sys
    import types
    calls = []

    def write_frames(path, size, fps):  # imageio-ffmpeg's generator protocol, writing a stand-in file
        calls.append((path, size, fps))
        with open(path, "wb") as fh:  # send(None) runs to the first yield; then one frame per send
            while True:
                f = yield
                assert f.shape == (16, 8, 3)
                if f[0, 0, 0] == 255:  # the frame this writer fails on
                    raise RuntimeError("disk full")
                assert f.flags["C_CONTIGUOUS"] and f.shape == (16, 8, 3)
                fh.write(f.tobytes())

    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", types.SimpleNamespace(write_frames=write_frames))
    monkeypatch.setattr(A, "mp4_writer_name", lambda: "imageio-ffmpeg")
    frames = [np.full((16, 8, 3), v, dtype=np.uint8)[:, ::-1] for v in (1, 2)]  # not contiguous
    out = tmp_path / "a.mp4"
    assert A.write_video(frames, str(out), 7.5) == "imageio-ffmpeg"
    (path, size, fps), = calls
    assert size == (8, 16) and fps == 7.5 and path.endswith(".mp4") and path != str(out)
    assert out.read_bytes() == bytes([1] * 384 + [2] * 384) and os.listdir(tmp_path) == ["a.mp4"]
    # a writer failing half way: its error, and no temporary file left
    failing = np.full((16, 8, 3), 255, dtype=np.uint8)
    assert_refused(RuntimeError, "disk full", A.write_video, [frames[0], failing], str(tmp_path / "b.mp4"), 5)
    assert os.listdir(tmp_path) == ["a.mp4"]


def test_a_gif_slower_than_its_delay_field_holds_is_refused_before_any_work(tmp_path):
    """--fps 0.001 asks for a 1,000 s frame delay; a GIF holds at most 655.35 s."""
    with pytest.raises(ValueError, match=r"--fps 0.001: a GIF stores a frame's delay as at most 65535 hundredths"):
        A.check_output(str(tmp_path / "slow.gif"), 0.001)
    assert A.check_output(str(tmp_path / "ok.gif"), 0.002) == ".gif"  # 500 s: fits
    frames = [np.zeros((2, 2, 3), np.uint8), np.full((2, 2, 3), 200, np.uint8)]
    A.write_video(frames, str(tmp_path / "ok.gif"), 0.002)
    with Image.open(tmp_path / "ok.gif") as im:
        assert im.info["duration"] == 500000


def test_a_second_animation_into_the_same_file_at_once_is_refused(tmp_path):
    """A child process holds out.gif's lock: the run is refused naming it; once the child
    is gone, the run goes ahead."""
    import subprocess
    import sys
    from deformgan.outputs import OutputBusy
    out = tmp_path / "out.gif"
    code = ("import sys; from deformgan.outputs import file_lock\n"
            f"lock = file_lock({str(out)!r}, 'animate').acquire()\n"
            "print('held', flush=True); sys.stdin.read()\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    src = frame(tmp_path / "src.png", 20)
    poses = tmp_path / "p.json"
    poses.write_text(json.dumps([pose(1, 2).tolist()]))
    try:
        with pytest.raises(OutputBusy, match=f"pid {child.pid} \\(animate: "):
            A.animate("unused.pt", str(src), str(poses), str(out), progress=False, reposer=Reposer())
        assert not out.exists()
    finally:
        child.stdin.close()
        child.wait(timeout=60)
    A.animate("unused.pt", str(src), str(poses), str(out), progress=False, reposer=Reposer())
    assert out.exists() and sorted(os.listdir(tmp_path)) == ["out.gif", "p.json", "src.png"]
