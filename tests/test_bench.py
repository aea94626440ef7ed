"""The benchmark's arithmetic and helpers (the benchmark itself is run by hand: `python -m doggos bench`)."""

import math

import numpy as np
import pytest
from conftest import wait_for
from PIL import Image

from doggos.base import store
from doggos.base.processes import PeakMemory
from doggos.bench.launch import Launch, Measurement, format_table, make_photos, steady_rate
from doggos.bench.steps import synthetic_run


def test_steady_rate_ignores_start_up_and_tail():
    # 2 s of model loading, then 10 images/s, then a slow tail.
    samples = [(0, 0), (1, 0), (2, 0)] + [(2 + t, 10 * t) for t in range(1, 10)] + [(20, 100)]
    assert math.isclose(steady_rate(samples, total=100), 10.0)
    assert math.isnan(steady_rate([(0, 0), (1, 100)], total=100))


def test_table_gives_ratios_against_the_first_row():
    table = format_table([Measurement("ceiling", 10.0), Measurement("doggos", 9.5),
                          Measurement("peak memory 4x", 1.1, "1 vs 1.1 GiB")])
    assert "| doggos | 9.50 | 0.95 |" in table and "| peak memory 4x | 1 vs 1.1 GiB | 1.10× |" in table


def test_photos_are_photo_like_and_made_once(tmp_path):
    make_photos(tmp_path / "few", count=3, labels=2)
    make_photos(tmp_path / "more", count=12, labels=2)
    photos = sorted((tmp_path / "more").glob("*/*.jpg"))
    assert len(photos) == 12 and {p.parent.name for p in photos} == {"label-0", "label-1"}
    assert all(Image.open(p).size == (500, 375) for p in photos)
    sizes = np.array([p.stat().st_size for p in photos]) / 1024
    # Real detail and noise: file sizes of real 500 x 375 photos, not of smooth synthetic gradients (a few KB).
    assert 25 < np.median(sizes) < 70 and sizes.min() > 3, sizes
    # Photo i is the same whatever else is made, and a second call writes nothing.
    same = [folder / "label-0" / "photo-00002.jpg" for folder in (tmp_path / "few", tmp_path / "more")]
    assert same[0].read_bytes() == same[1].read_bytes()
    times = [p.stat().st_mtime_ns for p in photos]
    make_photos(tmp_path / "more", count=12, labels=2)
    assert [p.stat().st_mtime_ns for p in photos] == times


def test_where_the_launch_time_goes_adds_up_to_the_whole_run():
    launch = Launch(images=100, phases={"listing": 2.0, "starting ray": 4.0, "loading model": 9.0, "embedding": 12.0,
                                        "writing": 30.0, "projecting": 31.0, "checking labels": 33.5},
                    finished=36.0, exited=37.5, steps={"map": 2.0, "quality": 2.5}, steady=5.0)
    stretches = dict(launch.where_time_goes())
    assert stretches == {"Python start, imports, checks, listing": 4.0, "starting Ray": 5.0,
                         "actors load the model, first batch": 3.0, "embedding": 18.0, "writing, publishing": 1.0,
                         "map step": 2.0, "quality step": 2.5, "after the steps, until the manifest": 0.5,
                         "after the manifest: Ray shutdown, exit": 1.5}
    assert math.isclose(sum(stretches.values()), launch.exited)
    # A phase too short to be seen (a small run's "writing") leaves its time to the stretch before it.
    del launch.phases["writing"]
    assert dict(launch.where_time_goes())["embedding"] == 19.0
    # The driver's own record of when a step began beats the polled phase, even for a step that came after another.
    launch.step_starts = {"quality": 33.2}
    assert math.isclose(dict(launch.where_time_goes())["after the steps, until the manifest"], 36.0 - 31.2 - 4.5)


def test_synthetic_runs_read_like_finished_ones(tmp_path):
    run = synthetic_run(tmp_path / "run", rows=30, model="some/model", dim=8, labels=3)
    vectors, meta = store.load_embeddings(run)
    assert vectors.shape == (30, 8) and meta["label"].nunique() == 3
    assert (run / "config.json").read_text().count("some/model") == 1


@pytest.mark.slow
def test_synthetic_runs_can_carry_the_prompt_features_a_runs_actors_leave(tmp_path, tiny_clip):
    from doggos.explore.quality import label_names, prompts
    from doggos.explore.quality_step import stored_prompt_features
    from doggos.pipeline.encoders import TextEncoder

    run = synthetic_run(tmp_path / "run", rows=30, model=tiny_clip, dim=32, labels=3, prompt_features=True)
    texts = prompts(label_names(store.load_embeddings(run)[1]["label"]))
    features, scale = stored_prompt_features(run, texts)
    np.testing.assert_allclose(features, TextEncoder(tiny_clip).encode(texts), atol=1e-5)
    assert scale == pytest.approx(math.log(1 / 0.07), abs=1e-3)


def test_peak_memory_counts_what_this_process_touches():
    with PeakMemory(every_s=0.01) as before:
        wait_for(lambda: before.peak > 0, timeout_s=10, poll_s=0.01)
    with PeakMemory(every_s=0.01) as after:
        block = bytearray(256 * 2**20)  # zero-filled pages are really touched: they count
        wait_for(lambda: after.peak > before.peak + 200 * 2**20, timeout_s=10, poll_s=0.01)
    assert len(block)
