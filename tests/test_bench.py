"""The benchmark's arithmetic and helpers (the benchmark itself is run by hand: `python -m doggos bench`)."""

import math

from PIL import Image

from conftest import wait_for
from doggos.bench import Measurement, PeakMemory, format_table, make_photos, steady_rate


def test_steady_rate_ignores_start_up_and_tail():
    # 2 s of model loading, then 10 images/s, then a slow tail.
    samples = [(0, 0), (1, 0), (2, 0)] + [(2 + t, 10 * t) for t in range(1, 10)] + [(20, 100)]
    assert math.isclose(steady_rate(samples, total=100), 10.0)
    assert math.isnan(steady_rate([(0, 0), (1, 100)], total=100))


def test_table_gives_ratios_against_the_first_row():
    table = format_table([Measurement("ceiling", 10.0), Measurement("doggos", 9.5), Measurement("peak memory 4x", 1.1, "1 vs 1.1 GiB")])
    assert "| doggos | 9.50 | 0.95 |" in table and "| peak memory 4x | 1 vs 1.1 GiB | 1.10× |" in table


def test_photos_have_the_realistic_size_and_labels(tmp_path):
    make_photos(tmp_path, count=4, labels=2)
    photos = sorted(tmp_path.glob("*/*.jpg"))
    assert len(photos) == 4 and {p.parent.name for p in photos} == {"label-0", "label-1"}
    assert Image.open(photos[0]).size == (500, 375)


def test_peak_memory_counts_what_this_process_touches():
    with PeakMemory(every_s=0.01) as before:
        wait_for(lambda: before.peak > 0, timeout_s=10, poll_s=0.01)
    with PeakMemory(every_s=0.01) as after:
        block = bytearray(256 * 2**20)  # zero-filled pages are really touched: they count
        wait_for(lambda: after.peak > before.peak + 200 * 2**20, timeout_s=10, poll_s=0.01)
    assert len(block)
