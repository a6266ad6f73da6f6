"""Images as people have them, read one way by every command.

Every command that reads a photo (training data, evaluation, generation, animation,
keypoint extraction, the DeepFashion converter, re-ID augmentation) goes through
:func:`to_rgb`, so that a photo means the same thing everywhere:

- the EXIF orientation is applied (a phone's portrait photo stands upright);
- 16-bit images are scaled to 8 bits (65535 -> 255), never clipped (clipping turns a
  16-bit photo white);
- transparency is composited on white, the colour the converter pads with;
- palette, grey, CMYK and the other modes are converted to RGB.
"""
import os
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Files the commands take as images, by extension.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
WHITE = (255, 255, 255)


def _sixteen_bit_to_l(im: Image.Image) -> Image.Image:
    """A grey image of 16 (or 32) bit integers as 8-bit "L", scaled from 0..65535
    (or 0..its maximum, for 32-bit data above 65535)."""
    arr = np.asarray(im, dtype=np.float64)
    top = 65535.0 if im.mode.startswith("I;16") or arr.max(initial=0) <= 65535 else float(arr.max())
    if im.mode == "I" and arr.max(initial=0) <= 255 and arr.min(initial=0) >= 0:
        top = 255.0  # an "I" image that holds 8-bit values (some TIFF and PNG writers)
    return Image.fromarray(np.clip(np.rint(arr / top * 255.0), 0, 255).astype(np.uint8), "L")


def to_rgb(im: Image.Image) -> Image.Image:
    """``im`` as an 8-bit RGB image (see the module): EXIF orientation applied, 16-bit
    scaled, transparency composited on white, any mode converted.

    Example:
        >>> import numpy as np
        >>> from PIL import Image
        >>> from deformgan.images import to_rgb
        >>> grey16 = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16))
        >>> np.asarray(to_rgb(grey16))[0, :, 0].tolist()  # scaled, not clipped
        [0, 128, 255]
        >>> clear = Image.new("RGBA", (2, 1), (200, 0, 0, 0))  # fully transparent red
        >>> np.asarray(to_rgb(clear))[0, 0].tolist()  # on white
        [255, 255, 255]
    """
    im = ImageOps.exif_transpose(im)
    if im.mode.startswith("I") or im.mode == "F":
        im = _sixteen_bit_to_l(im) if im.mode != "F" else Image.fromarray(
            np.clip(np.rint(np.asarray(im, dtype=np.float64)), 0, 255).astype(np.uint8), "L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return im.convert("RGB")


def open_rgb(path: str) -> Image.Image:
    """The image file ``path`` as RGB (:func:`to_rgb`), fully read. A missing file is a
    FileNotFoundError and an unreadable one a ValueError, both naming the path and, for
    the latter, what the decoder said."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return to_rgb(im)
    except (UnidentifiedImageError, ImportError) as exc:
        # ImportError: a plugin another package registered (ultralytics' HEIF opener) tried
        # to load a module that is not installed, for a file that is no image at all
        raise ValueError(f"cannot read image {path}: not an image in a format this program reads "
                         f"({', '.join(e.lstrip('.').upper() for e in IMAGE_EXTENSIONS)})") from exc
    except Exception as exc:  # truncated or corrupt data: PIL raises several types
        raise ValueError(f"cannot read image {path}: {exc}") from exc


def read_rgb_array(source: Union[str, np.ndarray, Image.Image]) -> np.ndarray:
    """A path, an array or a PIL image as a uint8 ``[H, W, 3]`` array."""
    if isinstance(source, str):
        return np.asarray(open_rgb(source), dtype=np.uint8).copy()
    if isinstance(source, np.ndarray):
        return np.asarray(to_rgb(Image.fromarray(source)), dtype=np.uint8).copy()
    return np.asarray(to_rgb(source), dtype=np.uint8).copy()
