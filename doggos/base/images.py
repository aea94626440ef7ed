"""Decoding one image file robustly: awkward modes become RGB, bad files raise ImageError with a reason."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 40_000_000  # past this a file is treated as a decompression bomb (a 40 MP photo still passes)


class ImageError(ValueError):
    """This file cannot be used as an image; the message is the reason recorded for it."""


def decode(data: bytes) -> Image.Image:
    """An RGB image from encoded bytes, upright per EXIF, transparency composited on white as CLIP's processor does."""
    if not data:
        raise ImageError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_PIXELS:
                raise ImageError(f"too large: {image.width}x{image.height} pixels (limit {MAX_PIXELS:,}), possible decompression bomb")
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image (unknown or unsupported format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"too large, possible decompression bomb: {error}") from None
    except (OSError, SyntaxError, ValueError, MemoryError) as error:
        raise ImageError(f"unreadable image: {error}") from None


def thumbnail_jpeg(image: Image.Image, size: int) -> bytes:
    """A small JPEG so pages can show images without fetching originals (which may be on S3)."""
    scale = size / max(image.size)
    small = image
    if scale < 1:  # as Image.thumbnail, without its copy of the whole image
        shape = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        # reducing_gap=1: a fast 2×2 box reduction first where the image is 2× too big or more; half the time of a
        # plain bicubic resize (0.6 against 1.2 ms for 500×375 → 224), no difference a thumbnail shows.
        small = image.resize(shape, Image.Resampling.BICUBIC, reducing_gap=1.0)
    out = io.BytesIO()
    small.save(out, format="JPEG", quality=85)
    return out.getvalue()


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit greyscale: PIL's convert clips to 0..255 (mostly white); scale the full range down instead.
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if pixels.max() > 255 else 255.0
        image = Image.fromarray(np.clip(pixels / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if image.mode == "F":
        pixels = np.asarray(image, dtype=np.float64)
        span = (pixels.max() - pixels.min()) or 1.0
        image = Image.fromarray(((pixels - pixels.min()) / span * 255).astype(np.uint8))
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")
