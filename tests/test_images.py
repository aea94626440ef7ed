"""Decoding: awkward but valid images become RGB; bad files raise ImageError with a reason."""

import io

import numpy as np
import pytest
from imagegen import make_photo
from PIL import Image

from doggos.base.images import MAX_PIXELS, ImageError, decode, thumbnail_jpeg


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def awkward_images():
    photo = make_photo(1, (80, 60))
    rgba = photo.convert("RGBA")
    rgba.putalpha(128)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    yield "grayscale", encode(photo.convert("L"), "PNG"), (80, 60)
    yield "rgba", encode(rgba, "PNG"), (80, 60)
    yield "palette", encode(photo.convert("P"), "GIF"), (80, 60)
    yield "cmyk", encode(photo.convert("CMYK"), "JPEG"), (80, 60)
    yield "16-bit", encode(Image.fromarray((np.arange(80 * 60, dtype=np.uint16).reshape(60, 80) * 13)), "PNG"), (80, 60)
    yield "exif-rotated", encode(photo, "JPEG", exif=exif), (60, 80)
    yield "1x1", encode(Image.new("RGB", (1, 1), "red"), "PNG"), (1, 1)
    yield "very wide", encode(Image.new("RGB", (4000, 3), "blue"), "PNG"), (4000, 3)
    yield "webp", encode(photo, "WEBP"), (80, 60)


@pytest.mark.parametrize("name, data, size", list(awkward_images()), ids=[n for n, _, _ in awkward_images()])
def test_awkward_images_decode_to_rgb(name, data, size):
    image = decode(data)
    assert image.mode == "RGB"
    assert image.size == size


def test_sixteen_bit_keeps_its_range_instead_of_clipping_to_white():
    data = encode(Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16)), "PNG")
    assert decode(data).getpixel((0, 0))[0] in range(120, 136)


def test_transparency_composites_on_white_as_clips_processor_does():
    clear = Image.new("RGBA", (2, 2), (0, 0, 0, 0))
    assert decode(encode(clear, "PNG")).getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file"),
        (b"this is not an image at all", "not an image"),
        (encode(make_photo(2), "JPEG")[:400], "unreadable image"),
        (encode(Image.new("L", (9000, 9000)), "PNG"), "decompression bomb"),
    ],
    ids=["zero-bytes", "text", "truncated", "bomb"],
)
def test_bad_files_raise_with_reason(data, reason):
    with pytest.raises(ImageError, match=reason):
        decode(data)


def test_the_bomb_case_is_over_the_limit_and_a_big_photo_is_not():
    assert 9000 * 9000 > MAX_PIXELS > 7000 * 5000


def test_thumbnail_is_a_small_jpeg():
    thumb = Image.open(io.BytesIO(thumbnail_jpeg(make_photo(3, (640, 480)), 64)))
    assert thumb.format == "JPEG" and max(thumb.size) == 64


@pytest.mark.parametrize("shape, fitted", [((640, 480), (64, 48)), ((100, 1000), (6, 64)), ((40, 30), (40, 30))])
def test_thumbnail_keeps_the_aspect_and_never_enlarges(shape, fitted):
    assert Image.open(io.BytesIO(thumbnail_jpeg(make_photo(4, shape), 64))).size == fitted
