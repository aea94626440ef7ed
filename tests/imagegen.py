"""Generated test images: photo-like colour fields and labeled image trees."""

import numpy as np
from PIL import Image

LABELS = ("beagle", "border collie", "shiba_inu")


def make_photo(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A smooth random colour field with some texture: decodes like a photo, differs per seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    channels = [np.sin(x * rng.uniform(2, 9) + y * rng.uniform(2, 9) + rng.uniform(0, 6)) for _ in range(3)]
    pixels = (np.stack(channels, axis=-1) * 100 + 127 + rng.normal(0, 12, (h, w, 3))).clip(0, 255)
    return Image.fromarray(pixels.astype(np.uint8))


def write_image_tree(root, per_label: int = 4, labels=LABELS):
    """<root>/<label>/<label>-<i>.jpg with a mix of sizes; returns {path: label}."""
    written = {}
    for li, label in enumerate(labels):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_label):
            path = root / label / f"{label}-{i}.jpg"
            make_photo(100 * li + i, size=(120 + 17 * i, 90 + 11 * li)).save(path, quality=90)
            written[str(path)] = label
    return written
