"""deformgan/images.py: photos as people have them, read one way by every command
(training data, evaluation, generation, keypoints, the DeepFashion converter)."""
import io

import numpy as np
import pytest
from PIL import Image

from deformgan import images as I
from deformgan.data.market import read_image_uint8
from helpers import assert_refused


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    ramp = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)  # 0, 1, 128, 255 in 8 bits
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode.startswith("I")  # Pillow reads it as 16-bit
    got = read_image_uint8(str(tmp_path / "g16.png"))
    assert got.shape == (1, 4, 3) and got[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (got[..., 0] == got[..., 1]).all() and (got[..., 1] == got[..., 2]).all()


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.zeros((1, 3, 4), np.uint8)
    rgba[0, 0] = (200, 0, 0, 255)  # opaque red
    rgba[0, 1] = (200, 0, 0, 0)  # fully transparent: white
    rgba[0, 2] = (0, 0, 0, 128)  # half transparent black: mid grey
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    got = read_image_uint8(str(tmp_path / "a.png"))
    assert got[0, 0].tolist() == [200, 0, 0] and got[0, 1].tolist() == [255, 255, 255]
    assert all(abs(v - 127) <= 1 for v in got[0, 2].tolist())
    la = Image.fromarray(np.array([[[10, 0]]], np.uint8), "LA")
    assert np.asarray(I.to_rgb(la))[0, 0].tolist() == [255, 255, 255]


def test_palette_with_transparency_grey_and_cmyk(tmp_path):
    p = Image.new("P", (2, 1))
    p.putpalette([0, 0, 255] + [0, 255, 0] + [0] * 762)
    p.putpixel((0, 0), 0)
    p.putpixel((1, 0), 1)
    p.info["transparency"] = 0  # colour 0 is transparent
    p.save(tmp_path / "p.png", transparency=0)
    got = read_image_uint8(str(tmp_path / "p.png"))
    assert got[0, 0].tolist() == [255, 255, 255] and got[0, 1].tolist() == [0, 255, 0]
    assert np.asarray(I.to_rgb(Image.new("L", (1, 1), 77)))[0, 0].tolist() == [77, 77, 77]
    assert np.asarray(I.to_rgb(Image.new("CMYK", (1, 1), (0, 0, 0, 0))))[0, 0].tolist() == [255, 255, 255]


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((16, 32, 3), np.uint8)  # stored landscape, 32 wide, a red top-left block
    arr[:8, :8] = (255, 0, 0)
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    im.save(tmp_path / "phone.jpg", exif=exif, quality=100)
    got = read_image_uint8(str(tmp_path / "phone.jpg"))
    assert got.shape == (32, 16, 3)  # displayed portrait
    assert got[3, 12, 0] > 200 and got[3, 12, 1] < 60  # the red block moved to the top right
    assert got[3, 3].max() < 60


def test_unreadable_files_are_value_errors_naming_the_file(tmp_path):
    (tmp_path / "t.png").write_text("no image here")
    assert_refused(ValueError, f"cannot read image {tmp_path / 't.png'}: not an image in a format this program "
                   "reads (JPG, JPEG, PNG, BMP, WEBP, TIF, TIFF)", I.open_rgb, str(tmp_path / "t.png"))
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[:200])  # truncated
    with pytest.raises(ValueError, match=f"cannot read image {tmp_path / 'cut.jpg'}: "):
        I.open_rgb(str(tmp_path / "cut.jpg"))
    assert_refused(FileNotFoundError, f"image not found: {tmp_path / 'no.jpg'}", I.open_rgb,
                   str(tmp_path / "no.jpg"))


def test_a_sixteen_bit_photo_through_the_deepfashion_converter_keeps_its_values(tmp_path):
    """The converter pads and writes JPEG; a 16-bit grey photo comes out grey, not white."""
    from deformgan.data import deepfashion as DF
    src = tmp_path / "g16.png"
    Image.fromarray(np.full((128, 128), 32896, np.uint16)).save(src)
    DF._write_image(str(src), str(tmp_path / "out.jpg"))
    with Image.open(tmp_path / "out.jpg") as im:
        arr = np.asarray(im.convert("RGB")).astype(int)
    assert arr.shape == (256, 256, 3) and abs(arr[128, 128, 0] - 128) <= 2  # resized to 256, still mid grey
