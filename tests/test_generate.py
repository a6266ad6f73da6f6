"""deformgan/generate.py's contract, function by function, with stand-ins for the
checkpoint, the generator and the pose model (the real ones go through it in
tests/test_evaluate_generate.py): pose strings and files, usable poses, the Reposer's
image and pose handling, writable outputs, the CLI."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from deformgan import generate as GEN
from deformgan import keypoints as K
from deformgan.data.market import write_annotations
from deformgan.viz import grid, pose_image
from deformgan.outputs import OutputNotWritable
from helpers import assert_refused

H, W = 16, 8
FORMAT = ' (format: "[y0, ..., y17]:[x0, ..., x17]")'


def pose(x=3.0, y=3.0):
    """A whole pose inside 16x8 with the neck (joint 1) at (x, y)."""
    kp = torch.tensor([[4, 1], [4, 3], [2, 3], [1, 6], [1, 8], [6, 3], [7, 6], [7, 8], [3, 8], [3, 11], [3, 14],
                       [5, 8], [5, 11], [5, 14], [3, 1], [5, 1], [2, 1], [6, 1]], dtype=torch.float32)
    kp[1] = torch.tensor([x, y])
    return kp


def as_string(kp):
    return f"{kp[:, 1].tolist()}:{kp[:, 0].tolist()}"


class Generator:
    """Records its inputs; returns the source images with their channels reversed."""

    image_size = (H, W)

    def __init__(self):
        self.calls = []

    def __call__(self, x, src, tgt):
        assert not torch.is_grad_enabled()  # no autograd graph kept for inference
        self.calls.append((x.clone(), src.clone(), tgt.clone()))
        return x.flip(1)


@pytest.fixture
def reposer(monkeypatch):
    """A Reposer built through its constructor, the checkpoint and generator stand-ins."""
    made = {}

    def load(path, expect_variant=None):
        made["load"] = (path, expect_variant)
        return {"checkpoint": path}

    def build_generator(ckpt, device, ops_backend):
        made["build"] = (ckpt, device, ops_backend)
        return Generator()

    monkeypatch.setattr(GEN.ckpt_io, "load", load)
    monkeypatch.setattr(GEN.ckpt_io, "build_generator", build_generator)
    r = GEN.Reposer("ck.pt", device="cpu", pose_weights="w.pt", ops_backend="reference", variant="parts")
    r.made = made
    return r


def picture(h=H, w=W, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------- pose strings and files
def test_parse_keypoints_string_y_then_x_and_missing_joints():
    kp = pose()
    kp[3] = torch.tensor([2.5, 7.25])  # fractions kept
    text = as_string(kp)
    assert torch.equal(GEN.parse_keypoints_string(text), kp)
    assert GEN.parse_keypoints_string(text).dtype == torch.float32
    ys, xs = kp[:, 1].tolist(), kp[:, 0].tolist()
    ys[4], xs[6], xs[7], ys[7] = -1, -3, -2, -2  # either coordinate negative: the joint is missing
    ys[8] = float("nan")
    want = kp.clone()
    want[[4, 6, 7, 8]] = -1
    assert torch.equal(GEN.parse_keypoints_string(f"{ys} : {xs}".replace("nan", "NaN")), want)
    assert torch.equal(GEN.parse_keypoints_string("[0]:[0]".replace("[0]", json.dumps([0] * 18))),
                       torch.zeros(18, 2))  # the top left pixel is a joint


def test_parse_keypoints_string_refusals_word_for_word():
    def refused(text, reason):
        assert_refused(GEN.PoseFileError, f"keypoints {text[:60]!r}: {reason}{FORMAT}", GEN.parse_keypoints_string,
                       text)

    refused("[1, 2, 3]", "expected two lists separated by ':'")
    refused("[1]:[2]:[3]", "expected two lists separated by ':'")
    refused(f"{[1] * 17}:{[2] * 18}", "expected 18 values each, got 17 and 18")
    refused(f"{[1] * 18}:{[2] * 19}", "expected 18 values each, got 18 and 19")
    refused("5:" + json.dumps([1] * 18), "object of type 'int' has no len()")
    refused(json.dumps(["a"] * 18) + ":" + json.dumps([1] * 18), "could not convert string to float: 'a'")
    refused(json.dumps([None] * 18) + ":" + json.dumps([1] * 18),
            "float() argument must be a string or a real number, not 'NoneType'")
    long = "[" + "1, " * 40 + ":[2]"
    with pytest.raises(json.JSONDecodeError) as why:
        json.loads(long.split(":")[0])
    refused(long, str(why.value))
    assert len(long) > 60  # the message quotes the first 60 characters


def test_check_usable_pose_needs_one_joint_inside_the_image():
    for inside in ([0, 0], [W - 1, H - 1], [W - 0.5, H - 0.5], [0, H - 1]):
        kp = torch.full((18, 2), -1.0)
        kp[5] = torch.tensor(inside)
        GEN.check_usable_pose(kp, H, W)  # accepted
    GEN.check_usable_pose(pose().tolist(), H, W)  # a list of lists
    GEN.check_usable_pose(pose().flatten().double(), H, W)  # 36 numbers, float64

    def message(present, what="target"):
        return (f"the {what} pose has no usable joint: {present} of 18 joints are present and none lies "
                f"inside the {H}x{W} image; nothing to generate from it")

    for outside in ([W, 0], [0, H], [W, H], [100, 3]):
        kp = torch.full((18, 2), -1.0)
        kp[5] = torch.tensor(outside, dtype=torch.float32)
        kp[6] = torch.tensor([-1.0, 2.0])  # half missing: missing
        assert_refused(ValueError, message(1), GEN.check_usable_pose, kp, H, W)
    assert_refused(ValueError, message(0, "source"), GEN.check_usable_pose, torch.full((18, 2), -1.0), H, W,
                   "source")
    nan = torch.full((18, 2), float("nan"))
    assert_refused(ValueError, message(18), GEN.check_usable_pose, torch.full((18, 2), 1000.0), H, W)
    assert_refused(ValueError, message(0), GEN.check_usable_pose, nan, H, W)


def test_pose_from_json_forms():
    kp = pose(2.5, 4)
    assert torch.equal(GEN.pose_from_json({"keypoints": kp.tolist()}), kp)
    xy = {"x": kp[:, 0].tolist(), "y": kp[:, 1].tolist()}
    assert torch.equal(GEN.pose_from_json(xy), kp)
    both = dict(xy, keypoints=pose(1, 1).tolist())  # "keypoints" wins
    assert torch.equal(GEN.pose_from_json(both), pose(1, 1))
    assert GEN.pose_from_json({"keypoints": [[1, 2]]}).dtype == torch.float32  # integers: float32
    assert GEN.pose_from_json({"x": [1], "y": [2]}).dtype == torch.float32
    assert torch.equal(GEN.pose_from_json(kp.tolist(), allow_list=True), kp)
    assert GEN.pose_from_json([[1, 2]], allow_list=True).dtype == torch.float32
    form = 'expected {"keypoints": [[x, y] x 18]} or {"x": [...], "y": [...]}'
    for item in (kp.tolist(), {"x": [1]}, {"y": [1]}, {"points": []}, 3):
        assert_refused(ValueError, form, GEN.pose_from_json, item)


def test_read_pose_file_forms_missing_joints_and_refusals(tmp_path):
    kp = pose(2.5, 4)
    path = tmp_path / "p.json"
    given = kp.clone()
    given[2] = torch.tensor([-3.0, 5.0])
    given[9] = torch.tensor([4.0, -0.5])
    want = kp.clone()
    want[[2, 9]] = -1
    for data in ({"keypoints": given.tolist()}, {"x": given[:, 0].tolist(), "y": given[:, 1].tolist()}):
        path.write_text(json.dumps(data))
        assert torch.equal(GEN.read_pose_file(str(path)), want)

    def refused(text, reason):
        path.write_text(text)
        with pytest.raises(GEN.PoseFileError) as err:
            GEN.read_pose_file(str(path))
        assert str(err.value) == f"pose file {path}: {reason}"

    refused(json.dumps({"keypoints": [[1, 2]] * 17}), "expected 18 (x, y) joints, got shape [17, 2]")
    refused(json.dumps({"keypoints": [1] * 36}), "expected 18 (x, y) joints, got shape [36]")
    refused(json.dumps({"x": [1] * 18, "y": [1] * 17}),
            "stack expects each tensor to be equal size, but got [18] at entry 0 and [17] at entry 1")
    refused(json.dumps(kp.tolist()), 'expected {"keypoints": [[x, y] x 18]} or {"x": [...], "y": [...]}')
    refused("not json", "Expecting value: line 1 column 1 (char 0)")
    refused(json.dumps({"keypoints": [["a", "b"]] * 18}), "too many dimensions 'str'")
    refused(json.dumps({"keypoints": [[1, 2], [3]] + [[1, 2]] * 16}),
            "expected sequence of length 2 at dim 1 (got 1)")
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(GEN.PoseFileError, match=f"^pose file {path}: 'utf-8' codec can't decode"):
        GEN.read_pose_file(str(path))
    with pytest.raises(FileNotFoundError):  # not a PoseFileError: the file is not there
        GEN.read_pose_file(str(tmp_path / "missing.json"))


# ---------------------------------------------------------------- the Reposer
def test_reposer_loads_its_checkpoint_once_with_its_arguments(reposer, monkeypatch):
    assert reposer.made["load"] == ("ck.pt", "parts")
    assert reposer.made["build"] == ({"checkpoint": "ck.pt"}, torch.device("cpu"), "reference")
    assert (reposer.height, reposer.width) == (H, W) and reposer.pose_weights == "w.pt"
    assert reposer.device == torch.device("cpu") and reposer._pose_model is None
    made = []
    monkeypatch.setattr(GEN.ckpt_io, "load", lambda path, expect_variant: made.append((path, expect_variant)) or {})
    monkeypatch.setattr(GEN.ckpt_io, "build_generator", lambda c, d, b: made.append((d, b)) or Generator())
    for cuda in (False, True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda cuda=cuda: cuda)
        r = GEN.Reposer("other.pt")
        assert r.device == torch.device("cuda" if cuda else "cpu") and r.pose_weights == "yolo11n-pose.pt"
    assert made == [("other.pt", None), (torch.device("cpu"), None), ("other.pt", None), (torch.device("cuda"), None)]


def test_load_image_paths_arrays_and_pil_images(reposer, tmp_path):
    rgba = np.zeros((3, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    Image.fromarray(rgba).save(tmp_path / "a.png")
    Image.fromarray(np.full((3, 2), 77, np.uint8)).save(tmp_path / "g.png")
    im = reposer.load_image(str(tmp_path / "a.png"))
    assert im.mode == "RGB" and np.array_equal(np.asarray(im), rgba[..., :3])
    assert np.array_equal(np.asarray(reposer.load_image(str(tmp_path / "g.png"))), np.full((3, 2, 3), 77))
    assert np.array_equal(np.asarray(reposer.load_image(np.full((3, 2), 9, np.uint8))), np.full((3, 2, 3), 9))
    assert np.array_equal(np.asarray(reposer.load_image(rgba)), rgba[..., :3])
    pil = Image.new("L", (2, 3), 5)
    assert reposer.load_image(pil).mode == "RGB" and np.array_equal(np.asarray(reposer.load_image(pil)),
                                                                    np.full((3, 2, 3), 5))
    assert_refused(FileNotFoundError, f"image not found: {tmp_path / 'no.png'}", reposer.load_image,
                   str(tmp_path / "no.png"))
    assert_refused(FileNotFoundError, f"image not found: {tmp_path}", reposer.load_image, str(tmp_path))
    (tmp_path / "t.png").write_text("text")
    with pytest.raises(ValueError) as err:
        reposer.load_image(str(tmp_path / "t.png"))
    # Pillow's reason varies with the plugins loaded (ultralytics registers a HEIF opener)
    assert type(err.value) is ValueError and str(err.value).startswith(f"cannot read image {tmp_path / 't.png'}: ")


def test_keypoints_of_asks_the_pose_model_once_loaded(reposer, monkeypatch):
    seen = []

    def load_pose_model(weights):
        seen.append(("load", weights))
        return "model"

    def predict(model, images, **kwargs):
        seen.append(("predict", model, [im.copy() for im in images], kwargs))
        return ["result"]

    found = [pose(2, 2)]

    def result_to_keypoints(result, conf):
        seen.append(("keypoints", result, conf))
        return found[0]

    monkeypatch.setattr(K, "load_pose_model", load_pose_model)
    monkeypatch.setattr(K, "predict", predict)
    monkeypatch.setattr(K, "result_to_keypoints", result_to_keypoints)
    img = picture()
    assert torch.equal(reposer.keypoints_of(Image.fromarray(img)), pose(2, 2))
    assert torch.equal(reposer.keypoints_of(Image.fromarray(img)), pose(2, 2))
    assert [s[0] for s in seen] == ["load", "predict", "keypoints", "predict", "keypoints"]
    assert seen[0] == ("load", "w.pt") and seen[2] == ("keypoints", "result", 0.3)
    _, model, images, kwargs = seen[1]
    assert model == "model" and kwargs == {"verbose": False, "device": "cpu"}
    assert len(images) == 1 and np.array_equal(images[0], img[:, :, ::-1])  # BGR, as ultralytics reads arrays
    assert images[0].flags["C_CONTIGUOUS"]
    reposer.device = torch.device("cuda", 1)
    reposer.keypoints_of(Image.fromarray(img))
    assert seen[-2][3] == {"verbose": False, "device": 1}
    found[0] = torch.full((18, 2), -1.0)
    assert_refused(GEN.NoPersonFound, "no person found in x.png", reposer.keypoints_of, Image.fromarray(img),
                   "x.png")
    assert_refused(GEN.NoPersonFound, "no person found in image", reposer.keypoints_of, Image.fromarray(img))
    one = torch.full((18, 2), -1.0)
    one[17] = torch.tensor([0.0, 0.0])  # one joint is a person
    found[0] = one
    assert torch.equal(reposer.keypoints_of(Image.fromarray(img)), one)


def test_fit_resizes_to_the_models_size_and_scales_the_keypoints(reposer):
    big = Image.fromarray(picture(48, 32))
    kp = pose(2, 4) * torch.tensor([4.0, 3.0])  # in the 48x32 image's pixels
    kp[3] = -1
    im, out = reposer._fit(big, kp)
    assert im.size == (W, H) and np.array_equal(np.asarray(im), np.asarray(big.resize((W, H), Image.BICUBIC)))
    want = pose(2, 4)
    want[3] = -1  # a missing joint stays -1
    assert torch.allclose(out, want, atol=1e-6)
    same = Image.fromarray(picture())
    im, out = reposer._fit(same, kp)
    assert im is same and out is kp


def test_generate_batch_normalises_expands_and_converts(reposer):
    imgs = [picture(seed=s) for s in range(3)]
    tg = torch.stack([pose(1, 2), pose(2, 3), pose(3, 4)])
    out = reposer.generate_batch(Image.fromarray(imgs[0]), pose(5, 5), tg)
    x, src, tgt = reposer.generator.calls[-1]
    want_x = torch.from_numpy(imgs[0]).permute(2, 0, 1).double() / 127.5 - 1
    assert x.shape == (3, 3, H, W) and torch.allclose(x.double(), want_x.expand(3, -1, -1, -1), atol=1e-6)
    assert torch.equal(src, pose(5, 5).expand(3, 18, 2)) and torch.equal(tgt, tg)
    assert isinstance(out, list) and len(out) == 3
    for o in out:
        assert o.dtype == np.uint8 and o.shape == (H, W, 3)
        assert np.abs(o.astype(int) - imgs[0][:, :, ::-1]).max() <= 1  # the stand-in reversed the channels
    srcs = torch.stack([pose(5, 5), pose(6, 6), pose(4, 4)])
    out = reposer.generate_batch([Image.fromarray(i) for i in imgs], srcs, tg)
    x, src, _ = reposer.generator.calls[-1]
    assert torch.equal(src, srcs)
    for i in range(3):
        assert np.abs(out[i].astype(int) - imgs[i][:, :, ::-1]).max() <= 1
        want_x = torch.from_numpy(imgs[i]).permute(2, 0, 1).double() / 127.5 - 1
        assert torch.allclose(x[i].double(), want_x, atol=1e-6)
    # extreme values: -1 and 1 exactly, 0 and 255 back
    ext = np.zeros((H, W, 3), np.uint8)
    ext[:, :, 2] = 255
    reposer.generate_batch((Image.fromarray(ext),), pose().double(), pose()[None].double())
    x, src, tgt = reposer.generator.calls[-1]
    assert x[0, 0].eq(-1).all() and x[0, 2].eq(1).all()
    assert src.dtype == tgt.dtype == torch.float32


def test_generate_batch_moves_the_images_to_the_models_device(reposer):
    seen = []

    def generator(x, src, tgt):
        seen.append(x.device)
        return torch.zeros(x.shape)  # on the CPU: a device with no data cannot be converted back

    reposer.generator, reposer.device = generator, torch.device("meta")
    out = reposer.generate_batch(Image.fromarray(picture()), pose(), pose()[None])
    assert seen == [torch.device("meta")] and np.array_equal(out[0], np.full((H, W, 3), 128))


def test_generate_batch_refusals_word_for_word(reposer):
    img = Image.fromarray(picture())
    tg = torch.stack([pose(), pose()])
    message = "generate_batch: {} images and {} source poses for 2 targets (give one source, or one per target)"
    assert_refused(ValueError, message.format(3, 1), reposer.generate_batch, [img] * 3, pose(), tg)
    assert_refused(ValueError, message.format(1, 3), reposer.generate_batch, img, torch.stack([pose()] * 3), tg)
    assert_refused(ValueError, message.format(2, 3), reposer.generate_batch, [img] * 2, torch.stack([pose()] * 3),
                   tg)

    def unusable(what):
        return (f"the {what} pose has no usable joint: 0 of 18 joints are present and none lies inside the "
                f"{H}x{W} image; nothing to generate from it")

    gone = torch.full((18, 2), -1.0)
    assert_refused(ValueError, unusable("source"), reposer.generate_batch, img, gone, tg)
    assert_refused(ValueError, unusable("source #1"), reposer.generate_batch, [img] * 2,
                   torch.stack([pose(), gone]), tg)
    assert_refused(ValueError, unusable("target #1"), reposer.generate_batch, img, pose(),
                   torch.stack([pose(), gone]))
    assert_refused(ValueError, unusable("target"), reposer.generate_batch, img, pose(), gone[None])
    assert reposer.generator.calls == []


def test_generate_fits_the_source_and_scales_the_target(reposer, tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(reposer, "keypoints_of", lambda image, name="image": asked.append((image.size, name))
                        or pose(1, 1) * 2)
    big = picture(32, 16)
    Image.fromarray(big).save(tmp_path / "s.png")
    tg = pose(2, 3) * torch.tensor([3.0, 2.0])  # in a 32x24 image's pixels
    tg[4] = -1
    before = tg.clone()
    out = reposer.generate(str(tmp_path / "s.png"), tg, target_size=[32, 24])
    assert asked == [((16, 32), str(tmp_path / "s.png"))]  # the source's own pixels, named by its path
    x, src, tgt = reposer.generator.calls[-1]
    assert torch.allclose(src[0], pose(1, 1), atol=1e-6)  # found at 32x16, scaled to 16x8
    want = pose(2, 3)
    want[4] = -1
    assert torch.allclose(tgt[0], want, atol=1e-6) and torch.equal(tg, before)  # the caller's tensor untouched
    small = np.asarray(Image.fromarray(big).resize((W, H), Image.BICUBIC))
    assert np.abs(out.astype(int) - small[:, :, ::-1]).max() <= 1
    # given source keypoints, a target at the model's size (given or not), an array source
    reposer.generate(big, pose(2, 2).long(), source_keypoints=pose(3, 3) * 2, target_size=(H, W))
    _, src, tgt = reposer.generator.calls[-1]
    assert torch.allclose(src[0], pose(3, 3), atol=1e-6) and torch.equal(tgt[0], pose(2, 2))
    reposer.generate(big, pose(2, 2), source_keypoints=pose(3, 3) * 2)
    assert torch.equal(reposer.generator.calls[-1][2][0], pose(2, 2)) and len(asked) == 1
    monkeypatch.setattr(reposer, "keypoints_of", lambda image, name="image": asked.append(name) or pose())
    reposer.generate(Image.fromarray(picture()), pose())
    assert asked[-1] == "the source image"
    n = len(reposer.generator.calls)
    with pytest.raises(ValueError, match="^the target pose has no usable joint: 18 of 18 joints are present and "
                                         "none lies inside the 16x8 image"):
        reposer.generate(big, pose() + 8, source_keypoints=pose(), target_size=(H, W))  # x 8 and more: outside
    tg = pose() + torch.tensor([8.0, 0.0])
    reposer.generate(big, tg, source_keypoints=pose(), target_size=(H, 16))  # the same joints, a wider image
    assert len(reposer.generator.calls) == n + 1


# ---------------------------------------------------------------- writable outputs
def test_check_writable_creates_the_folder_and_names_the_path(tmp_path):
    GEN.check_writable(str(tmp_path / "a" / "b" / "o.png"))
    assert os.path.isdir(tmp_path / "a" / "b") and os.listdir(tmp_path / "a" / "b") == []  # no probe left
    GEN.check_writable(str(tmp_path / "c" / "d"), is_folder=True)
    assert os.path.isdir(tmp_path / "c" / "d") and os.listdir(tmp_path / "c" / "d") == []
    GEN.check_writable(str(tmp_path / "c"))  # an existing folder: written into
    (tmp_path / "f").write_text("a file")
    assert_refused(OutputNotWritable, f"--out {tmp_path / 'f' / 'o.png'}: cannot write there ({tmp_path / 'f'} is a "
                   "file, not a folder)", GEN.check_writable, str(tmp_path / "f" / "o.png"))
    assert_refused(OutputNotWritable, f"--frames {tmp_path / 'f'}: cannot write there ({tmp_path / 'f'} is a file, not a "
                   "folder)", GEN.check_writable, str(tmp_path / "f"), "--frames", True)
    assert_refused(OutputNotWritable, f"--out {tmp_path / 'f' / 'g' / 'o.png'}: cannot write there (Not a directory)",
                   GEN.check_writable, str(tmp_path / "f" / "g" / "o.png"))
    assert (tmp_path / "f").read_text() == "a file"
    try:  # a folder that exists and where no file can be made, even by root (sysfs on Linux)?
        open("/sys/.deformgan-test", "w").close()
        os.remove("/sys/.deformgan-test")
        read_only = False
    except OSError:
        read_only = os.path.isdir("/sys")
    if read_only:
        with pytest.raises(ValueError, match=r"^--out /sys/o.png: cannot write there \("):
            GEN.check_writable("/sys/o.png")


def test_check_image_output_and_save_image(tmp_path):
    assert GEN.check_image_output(str(tmp_path / "new" / "o.png")) == "PNG"
    assert GEN.check_image_output(str(tmp_path / "o.JPG")) == "JPEG"
    assert os.listdir(tmp_path / "new") == []
    for name in ("o", "o.txt", "o.png.part"):
        assert_refused(ValueError, f"--out {tmp_path / name}: not an image file name Pillow can write "
                                   "(use .png or .jpg)", GEN.check_image_output, str(tmp_path / name))
    (tmp_path / "f").write_text("")
    assert_refused(OutputNotWritable, f"--out {tmp_path / 'f' / 'o.png'}: cannot write there ({tmp_path / 'f'} is a "
                   "file, not a folder)", GEN.check_image_output, str(tmp_path / "f" / "o.png"))
    img = Image.fromarray(picture())
    GEN.save_image(img, str(tmp_path / "o.JPG"), "JPEG")
    with Image.open(tmp_path / "o.JPG") as im:
        assert im.format == "JPEG" and im.size == (W, H)
    out = tmp_path / "kept.png"
    out.write_bytes(b"the old result")

    class Broken:
        def save(self, path, format):
            assert os.path.dirname(path) == str(tmp_path)  # beside the output: os.replace cannot cross devices
            with open(path, "wb") as fh:
                fh.write(b"half")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        GEN.save_image(Broken(), str(out), "PNG")
    assert out.read_bytes() == b"the old result" and sorted(os.listdir(tmp_path)) == ["f", "kept.png", "new",
                                                                                       "o.JPG"]
    GEN.save_image(img, str(out), "PNG")
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(img)) and len(os.listdir(tmp_path)) == 4


# ---------------------------------------------------------------- the command line
class CLIReposer:
    """What main builds instead of a Reposer: records its arguments and calls, finds the
    pose (1 + red / 50, 3) in an image, returns a flat image of the target neck."""

    made = []

    def __init__(self, checkpoint, device, pose_weights, variant=None):
        CLIReposer.made.append(dict(checkpoint=checkpoint, device=device, pose_weights=pose_weights, variant=variant,
                                    reposer=self))
        self.height, self.width = H, W
        self.calls = []
        self.found = []

    def load_image(self, image):
        if not os.path.isfile(image):
            raise FileNotFoundError(f"image not found: {image}")
        return Image.open(image).convert("RGB")

    def keypoints_of(self, image, name="image"):
        self.found.append((image.size, name))
        return pose(1 + int(np.asarray(image)[0, 0, 0]) / 50, 3)

    def generate(self, source, target_keypoints, source_keypoints=None, target_size=None):
        self.calls.append((source, target_keypoints, source_keypoints, target_size))
        return np.full((H, W, 3), [int(target_keypoints[1, 0] * 10), int(target_keypoints[1, 1] * 10), 0], np.uint8)


@pytest.fixture
def cli(monkeypatch, tmp_path):
    CLIReposer.made = []
    monkeypatch.setattr(GEN, "Reposer", CLIReposer)
    Image.new("RGB", (W, H), (100, 0, 0)).save(tmp_path / "src.png")
    Image.new("RGB", (2 * W, 3 * H), (150, 0, 0)).save(tmp_path / "tgt.png")
    return ["--checkpoint", "c.pt", "--source", str(tmp_path / "src.png")]


def test_main_target_and_source_pose_forms(cli, tmp_path, capsys):
    out = str(tmp_path / "o" / "r.png")
    pose_file = tmp_path / "t.json"
    pose_file.write_text(json.dumps({"keypoints": pose(2, 5).tolist()}))
    assert GEN.main(cli + ["--target-pose", str(pose_file), "--out", out]) == 0
    assert capsys.readouterr().err == f"[deformgan.generate] wrote {out}\n"
    made = CLIReposer.made[-1]
    assert {k: made[k] for k in ("checkpoint", "device", "pose_weights", "variant")} == dict(
        checkpoint="c.pt", device=None, pose_weights="yolo11n-pose.pt", variant=None)
    src, tgt, skp, size = made["reposer"].calls[-1]
    assert src == cli[3] and torch.equal(tgt, pose(2, 5)) and skp is None and size is None
    assert np.array_equal(np.asarray(Image.open(out)), np.full((H, W, 3), [20, 50, 0]))
    assert GEN.main(cli + ["--target-keypoints", as_string(pose(4, 1)), "--source-keypoints", as_string(pose(6, 2)),
                           "--out", out, "--device", "cpu", "--pose-weights", "p.pt", "--variant", "parts"]) == 0
    made = CLIReposer.made[-1]
    assert (made["device"], made["pose_weights"], made["variant"]) == ("cpu", "p.pt", "parts")
    _, tgt, skp, size = made["reposer"].calls[-1]
    assert torch.equal(tgt, pose(4, 1)) and torch.equal(skp, pose(6, 2)) and size is None
    pose_file.write_text(json.dumps({"x": pose(7, 3)[:, 0].tolist(), "y": pose(7, 3)[:, 1].tolist()}))
    assert GEN.main(cli + ["--target-keypoints", as_string(pose(4, 1)), "--source-pose", str(pose_file),
                           "--out", out]) == 0
    assert torch.equal(CLIReposer.made[-1]["reposer"].calls[-1][2], pose(7, 3))
    # a target image: its pose found in its own pixels, its size passed on
    assert GEN.main(cli + ["--target-image", str(tmp_path / "tgt.png"), "--out", out]) == 0
    r = CLIReposer.made[-1]["reposer"]
    assert r.found == [((2 * W, 3 * H), str(tmp_path / "tgt.png"))]
    _, tgt, skp, size = r.calls[-1]
    assert torch.equal(tgt, pose(4, 3)) and skp is None and size == (3 * H, 2 * W)


def test_main_looks_keypoints_up_in_an_annotation_file(cli, tmp_path):
    ann = tmp_path / "ann.csv"
    write_annotations(str(ann), {"src.png": pose(5, 6), "tgt.png": pose(6, 7)})
    out = str(tmp_path / "r.png")
    assert GEN.main(cli + ["--target-image", str(tmp_path / "tgt.png"), "--annotations", str(ann), "--out", out]) == 0
    r = CLIReposer.made[-1]["reposer"]
    _, tgt, skp, size = r.calls[-1]
    assert r.found == [] and torch.equal(tgt, pose(6, 7)) and torch.equal(skp, pose(5, 6)) and size == (3 * H, 2 * W)
    # given keypoints win over the file's
    assert GEN.main(cli + ["--target-image", str(tmp_path / "tgt.png"), "--annotations", str(ann), "--out", out,
                           "--source-keypoints", as_string(pose(1, 1))]) == 0
    assert torch.equal(CLIReposer.made[-1]["reposer"].calls[-1][2], pose(1, 1))
    # names not in the file: the source's keypoints left to the Reposer, the target's found
    write_annotations(str(ann), {"other.png": pose()})
    assert GEN.main(cli + ["--target-image", str(tmp_path / "tgt.png"), "--annotations", str(ann), "--out", out]) == 0
    r = CLIReposer.made[-1]["reposer"]
    assert r.found == [((2 * W, 3 * H), str(tmp_path / "tgt.png"))] and r.calls[-1][2] is None


def test_main_panel_shows_source_pose_and_result(cli, tmp_path):
    out = str(tmp_path / "p.png")
    assert GEN.main(cli + ["--target-keypoints", as_string(pose(4, 1)), "--out", out, "--panel"]) == 0
    src = Image.open(tmp_path / "src.png").convert("RGB")
    result = Image.fromarray(np.full((H, W, 3), [40, 10, 0], np.uint8))
    want = grid([[src, pose_image(pose(4, 1), H, W), result]], titles=["source", "pose", "result"])
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(want))
    # a target image of another size: its pose drawn at the model's size, the source resized
    big = tmp_path / "big.png"
    Image.new("RGB", (3 * W, 2 * H), (10, 20, 30)).save(big)
    assert GEN.main(["--checkpoint", "c.pt", "--source", str(big), "--target-image", str(tmp_path / "tgt.png"),
                     "--out", out, "--panel"]) == 0
    tgt = pose(4, 3) * torch.tensor([1 / 2, 1 / 3])
    result = Image.fromarray(np.full((H, W, 3), [40, 30, 0], np.uint8))
    want = grid([[Image.open(big).convert("RGB").resize((W, H)), pose_image(tgt, H, W), result]],
                titles=["source", "pose", "result"])
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(want))


def test_main_refusals_exit_2_before_any_work(cli, tmp_path, capsys, monkeypatch):
    tk = ["--target-keypoints", as_string(pose())]
    (tmp_path / "file").write_text("")

    def refused(argv, message):
        n = len(CLIReposer.made)
        assert GEN.main(argv) == 2
        assert capsys.readouterr().err == f"[deformgan.generate] error: {message}\n"
        return len(CLIReposer.made) - n

    assert refused(cli + tk + ["--out", str(tmp_path / "o.txt")],
                   f"--out {tmp_path / 'o.txt'}: not an image file name Pillow can write (use .png or .jpg)") == 0
    assert refused(cli + tk + ["--out", str(tmp_path / "file" / "o.png")],
                   f"--out {tmp_path / 'file' / 'o.png'}: cannot write there ({tmp_path / 'file'} is a file, not "
                   "a folder)") == 0
    out = ["--out", str(tmp_path / "o.png")]
    refused(cli + out + ["--target-keypoints", "[1]:[2]"],
            f"keypoints '[1]:[2]': expected 18 values each, got 1 and 1{FORMAT}")
    refused(cli + out + ["--target-pose", str(tmp_path / "missing.json")],
            f"[Errno 2] No such file or directory: '{tmp_path / 'missing.json'}'")
    refused(cli + out + ["--target-pose", str(tmp_path)], f"[Errno 21] Is a directory: '{tmp_path}'")
    refused(cli + out + tk + ["--annotations", str(tmp_path)], f"[Errno 21] Is a directory: '{tmp_path}'")
    refused(cli + out + tk + ["--annotations", str(tmp_path / "file")],
            f"{tmp_path / 'file'}:1: header must be 'name:keypoints_y:keypoints_x', got ''")
    refused(cli + out + ["--target-image", str(tmp_path / "no.png")], f"image not found: {tmp_path / 'no.png'}")
    (tmp_path / "bad.json").write_text("{}")
    refused(cli + out + tk + ["--source-pose", str(tmp_path / "bad.json")],
            f'pose file {tmp_path / "bad.json"}: expected {{"keypoints": [[x, y] x 18]}} or '
            '{"x": [...], "y": [...]}')
    for exc in (FileNotFoundError("a"), ValueError("b"), RuntimeError("c"), GEN.NoPersonFound("d"),
                GEN.ckpt_io.CheckpointError("e"), PermissionError("f")):
        def failing(*args, exc=exc, **kwargs):
            raise exc
        monkeypatch.setattr(CLIReposer, "generate", failing)
        refused(cli + out + tk, str(exc))
    assert not (tmp_path / "o.png").exists()
    for bad in ([], ["--target-pose", "a", "--target-image", "b"], tk + ["--source-pose", "a", "--source-keypoints",
                                                                        "b"]):
        with pytest.raises(SystemExit) as e:
            GEN.main(cli + out + bad)
        assert e.value.code == 2


def test_main_help_and_required_arguments(capsys, monkeypatch):
    from helpers import help_text, usage_error
    monkeypatch.setenv("COLUMNS", "400")  # no line breaks inside the help texts (argparse breaks at hyphens)
    text = help_text(GEN.main, capsys)
    assert GEN.__doc__.strip() in text
    flat = " ".join(text.split())
    assert flat.startswith("usage: python -m deformgan.generate [-h] --checkpoint CHECKPOINT --source SOURCE")
    for option in ("(--target-pose TARGET_POSE | --target-image TARGET_IMAGE | --target-keypoints "
                   "TARGET_KEYPOINTS)", "[--source-keypoints SOURCE_KEYPOINTS | --source-pose SOURCE_POSE]",
                   "--panel write source | target pose | result",
                   "--variant VARIANT fail unless the checkpoint is of this generator variant",
                   "--annotations ANNOTATIONS an annotation CSV: keypoints of --source / --target-image are looked "
                   "up there by file name before YOLO is tried"):
        assert option in flat, option
    assert usage_error(GEN.main, [], capsys) == ("python -m deformgan.generate: error: the following arguments are "
                                                 "required: --checkpoint, --source, --out")
    assert usage_error(GEN.main, ["--checkpoint", "c", "--source", "s", "--out", "o.png"], capsys) == (
        "python -m deformgan.generate: error: one of the arguments --target-pose --target-image --target-keypoints "
        "is required")


def test_reposer_takes_poses_as_tensors_arrays_or_lists_and_refuses_others_clearly():
    """The same pose as a tensor, a numpy array and nested lists gives the same image;
    a pose of another shape, or not numbers, is a ValueError naming the argument."""
    from deformgan.models import Generator
    from deformgan_ops.skeleton import example_poses
    torch.manual_seed(0)
    r = GEN.Reposer.from_generator(Generator(width_mult=1 / 16))
    src, tgt = example_poses()[0].float(), example_poses()[0].float() + 2
    photo = np.full((128, 64, 3), 90, np.uint8)
    want = r.generate(photo, tgt, source_keypoints=src)
    for form in (tgt.numpy(), tgt.tolist(), tgt.double()):
        assert np.array_equal(r.generate(photo, form, source_keypoints=src.tolist()), want)
    assert np.array_equal(r.generate_batch(Image.fromarray(photo), src.tolist(), [tgt.tolist()])[0], want)
    with pytest.raises(ValueError, match=r"target_keypoints must be 18 \(x, y\) joints, shape \[18, 2\]; got shape \[17, 2\]"):
        r.generate(photo, tgt[:17].tolist(), source_keypoints=src)
    with pytest.raises(ValueError, match="source_keypoints must be 18 .x, y. joints as a tensor, an array or nested lists"):
        r.generate(photo, tgt, source_keypoints=[["a", "b"]] * 18)
    with pytest.raises(ValueError, match=r"generate_batch: target_keypoints must be \[B, 18, 2\], got shape \[18, 2\]"):
        r.generate_batch(Image.fromarray(photo), src, tgt)
