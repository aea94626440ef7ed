"""explore.quality: agreement, suggestions, suspects, duplicates, zero-shot, the files, on planted dirty labels."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _dashboard_fixtures import write_fake_run

from doggos.base import store
from doggos.explore import quality, quality_step
from doggos.explore.neighbours import Neighbours, brute_force
from doggos.explore.quality import QualityParams, ZeroShot

LABELS = ["beagle", "border_collie", "pug", "husky"]
PER_LABEL = 30
MISFILED = [(5, "border_collie"), (12, "border_collie"), (20, "border_collie")]  # beagles filed as collies
EXACT, NEAR = ("pug", 3, "husky"), ("husky", 7, "beagle")  # (label, copy of its n-th image, filed under)


def dirty_set(seed: int = 0, spread: float = 0.25):
    """Clusters per label, with planted dirt: misfiled beagles, an exact copy and a near copy under other labels."""
    rng = np.random.default_rng(seed)
    dim = 32
    centres = {label: rng.normal(size=dim) for label in LABELS}
    vectors, labels, paths = [], [], []
    for label in LABELS:
        for i in range(PER_LABEL):
            vectors.append(centres[label] + rng.normal(0, spread, dim))
            labels.append(label)
            paths.append(f"/data/{label}/{label}-{i:03d}.jpg")
    for i, filed in MISFILED:  # beagle-like vectors under another label (their rows: beagle rows i)
        labels[i] = filed
    row = lambda label, i: LABELS.index(label) * PER_LABEL + i  # noqa: E731
    exact_of, near_of = row(EXACT[0], EXACT[1]), row(NEAR[0], NEAR[1])
    vectors.append(vectors[exact_of].copy())
    labels.append(EXACT[2])
    paths.append(f"/data/{EXACT[2]}/copy-of-pug.jpg")
    vectors.append(vectors[near_of] + rng.normal(0, 1e-4, dim))
    labels.append(NEAR[2])
    paths.append(f"/data/{NEAR[2]}/almost-a-husky.jpg")
    hashes = [f"h{i}" for i in range(len(vectors))]
    hashes[-2] = hashes[exact_of]  # the same bytes
    planted = {"misfiled": {i for i, _ in MISFILED}, "exact": (exact_of, len(vectors) - 2),
               "near": (near_of, len(vectors) - 1)}
    return np.asarray(vectors, np.float32), labels, paths, hashes, planted


@pytest.fixture(scope="module")
def dirty():
    vectors, labels, paths, hashes, planted = dirty_set()
    results = quality.assess(vectors, labels, paths, QualityParams(k=8), hashes=hashes, backend="numpy")
    return results, planted, vectors, labels, paths, hashes


def test_planted_mislabels_and_copies_top_the_suspects(dirty):
    results, planted, *_ = dirty
    suspects = results.likely_mislabeled()
    dirt = planted["misfiled"] | {planted["exact"][1], planted["near"][1]}
    assert set(suspects["row"].head(len(dirt))) == dirt
    assert (suspects["agreement"].head(len(dirt)) <= 0.25).all()
    misfiled = suspects.set_index("row").loc[sorted(planted["misfiled"])]
    assert (misfiled["suggested"] == "beagle").all() and (misfiled["class"] == "border_collie").all()
    assert results.images.loc[planted["exact"][1], "suggested"] == "pug"
    clean = results.images.drop(index=list(dirt))
    assert (clean["suggested"] == clean["class"]).mean() > 0.95
    ranked = suspects[["agreement", "suggested_similarity"]].to_numpy()
    assert all((a[0], -a[1]) <= (b[0], -b[1]) for a, b in zip(ranked, ranked[1:]))


def test_planted_duplicates_come_first_and_once(dirty):
    results, planted, *_ = dirty
    top = results.duplicates.head(2)
    assert list(top["kind"]) == ["exact", "near"]
    assert [tuple(pair) for pair in top[["a", "b"]].to_numpy()] == [planted["exact"], planted["near"]]
    assert top["cross_label"].all() and (top["similarity"] > 0.9999).all()
    assert (results.duplicates["a"] < results.duplicates["b"]).all()
    assert not results.duplicates.duplicated(["a", "b"]).any()
    assert len(results.duplicates) == 2, "nothing else in these clusters is a near duplicate"
    assert 0.95 <= results.near_threshold < 1 and results.near_rule.startswith("auto")


def test_per_label_table_and_confusion_matrix(dirty):
    results, planted, *_ = dirty
    labels = results.labels.set_index("label")
    assert list(results.labels["label"]) == sorted(LABELS)
    assert labels.loc["border_collie", "confused_with"] == "beagle"
    assert labels.loc["border_collie", "images"] == PER_LABEL + len(MISFILED)
    assert labels.loc["beagle", "images"] == PER_LABEL - len(MISFILED) + 1  # + the near copy of a husky
    assert labels["purity"].between(0, 1).all() and labels.loc["pug", "purity"] > labels.loc["border_collie", "purity"]
    assert pd.isna(labels.loc["pug", "confused_with"])  # no pug is suggested elsewhere
    confusion = results.confusion()
    assert int(confusion.to_numpy().sum()) == len(results.images)
    assert list(confusion.index) == list(confusion.columns) == sorted(LABELS)
    assert confusion.loc["border_collie", "beagle"] == len(MISFILED)
    assert labels["likely_mislabeled"].sum() == len(results.likely_mislabeled())


def test_suggestion_ties_go_to_summed_similarity_then_name():
    vectors = np.eye(6, dtype=np.float32)
    labels, paths = ["a", "b", "c", "b", "c", "a"], ["/p/0", "/p/1", "/p/2", "/p/3", "/p/9", "/p/5"]
    indices = np.array([[1, 2], [0, 2], [3, 4], [0, 1], [1, 5], [1, 2]])
    similarities = np.array([[0.9, 0.8], [0.5, 0.5], [0.7, 0.7], [0.6, 0.6], [0.4, 0.4], [0.4, 0.4]], np.float32)
    results = quality.assess(vectors, labels, paths, QualityParams(k=2), neighbours=Neighbours(indices, similarities))
    images = results.images
    assert list(images["suggested"]) == ["b", "a", "b", "a", "a", "b"]
    # row 0: b (0.9) beats c (0.8); rows 1, 2, 3: one vote each at equal similarity, so the first name wins
    assert list(images["agreement"]) == [0.0, 0.0, 0.5, 0.5, 0.0, 0.0]
    assert images.loc[0, "suggested_similarity"] == pytest.approx(0.9)
    # ranked: lowest agreement, then the suggestion's similarity, then path (rows 4 and 5 tie until "/p/5" < "/p/9")
    assert list(results.likely_mislabeled()["row"]) == [0, 1, 5, 4, 2, 3]


def test_zero_shot_on_hand_made_vectors():
    images = np.array([[1, 0, 0], [0, 2, 0], [0, 0.1, 1]], np.float32)
    texts = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    probabilities = quality.zero_shot_probabilities(images, texts, logit_scale=0.0)  # scale exp(0) = 1
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(probabilities[0], np.exp([1, 0, 0]) / np.exp([1, 0, 0]).sum(), rtol=1e-6)
    result = quality.zero_shot(images, texts, logit_scale=math.log(100))  # CLIP's trained scale
    assert result.index.tolist() == [0, 1, 2]
    assert result.probability[0] == pytest.approx(1 / (1 + 2 * math.exp(-100)), rel=1e-6)
    with pytest.raises(ValueError, match="^text_vectors"):
        quality.zero_shot(images, texts[:, :2], 4.6)
    with pytest.raises(ValueError, match="^logit_scale"):
        quality.zero_shot(images, texts, float("nan"))


def test_prompts_read_separators_as_spaces_and_check_the_template():
    assert quality.prompts(["border_collie", "german-shepherd", "pug"]) == [
        "a photo of a border collie.", "a photo of a german shepherd.", "a photo of a pug."]
    assert quality.prompts(["x__y"], "{label}, a dog") == ["x y, a dog"]
    for bad in ("a photo", "{label} and {label}", "{labels}", None):
        with pytest.raises(ValueError, match="^template: must contain {label} exactly once"):
            quality.prompts(["a"], bad)
        with pytest.raises(ValueError, match="^template"):
            QualityParams(template=bad)


def test_params_validate_and_name_their_files():
    assert QualityParams() == QualityParams(10, quality.TEMPLATE, None)
    names = {QualityParams().name, QualityParams(k=5).name, QualityParams(template="{label}").name,
             QualityParams(near_threshold=0.99).name}
    assert len(names) == 4 and all(re.fullmatch(r"[A-Za-z0-9._-]+", name) for name in names)
    assert QualityParams(k=10.0).name == QualityParams().name
    for bad in (dict(k=0), dict(k=101), dict(k=1.5), dict(k=True)):
        with pytest.raises(ValueError, match="^k:"):
            QualityParams(**bad)
    for bad in (0, 1.5, -0.2, True, "0.9"):
        with pytest.raises(ValueError, match="^near_threshold:"):
            QualityParams(near_threshold=bad)


def test_a_run_smaller_than_k_plus_one_is_refused():
    with pytest.raises(ValueError, match=r"^k: .*\(10\).*at least 11 images"):
        quality.assess(np.ones((10, 4)), ["a"] * 10, [str(i) for i in range(10)], backend="numpy")


def test_strongest_suspects_need_zero_shot_to_disagree_too(dirty):
    results, planted, vectors, labels, paths, hashes = dirty
    names = quality.label_names(labels)
    predicted = np.array([names.index(label) for label in labels])
    misfiled = sorted(planted["misfiled"])
    predicted[misfiled[:2]] = names.index("beagle")  # zero-shot agrees with the neighbours for two of three
    with_zero_shot = quality.assess(vectors, labels, paths, results.params, hashes=hashes,
                                    zero_shot_result=ZeroShot(predicted, np.full(len(labels), 0.8, np.float32)),
                                    neighbours=results.neighbours)
    assert set(with_zero_shot.strongest_suspects()["row"]) == set(misfiled[:2])
    report = quality_step.report_json(with_zero_shot, top=5)
    assert [s["row"] for s in report["suspects"][:2]] == [r for r in with_zero_shot.likely_mislabeled()["row"]
                                                          if r in misfiled[:2]]
    assert [s["strongest"] for s in report["suspects"]] == [True, True, False, False, False]
    assert with_zero_shot.labels.set_index("label").loc["pug", "zero_shot_accuracy"] == 1.0
    assert results.zero_shot_accuracy is None and results.strongest_suspects().empty


def test_results_written_read_back_equal(dirty, tmp_path):
    results = dirty[0]
    folder = tmp_path / "quality"
    with pytest.raises(FileNotFoundError):
        quality_step.read_results(folder, results.params)
    summary_path = quality_step.write_results(folder, results.params, results)
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in quality_step.result_paths(folder, results.params))
    back = quality_step.read_results(folder, results.params)
    pd.testing.assert_frame_equal(back.images, results.images)
    pd.testing.assert_frame_equal(back.labels, results.labels)
    pd.testing.assert_frame_equal(back.duplicates, results.duplicates)
    np.testing.assert_array_equal(back.neighbours.indices, results.neighbours.indices)
    np.testing.assert_array_equal(back.neighbours.similarities, results.neighbours.similarities)
    assert (back.near_threshold, back.near_rule, back.exact_note, back.zero_shot_note) == \
        (results.near_threshold, results.near_rule, results.exact_note, results.zero_shot_note)
    summary = json.loads(summary_path.read_text(encoding="utf-8"), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert summary["counts"]["exact_duplicate_pairs"] == summary["counts"]["near_duplicate_pairs"] == 1
    assert summary["zero_shot"] == {"available": False, "accuracy": None, "reason": "zero-shot was not computed",
                                    "template": quality.TEMPLATE}
    schema = pq.read_schema(quality_step.result_paths(folder, results.params)[0])
    assert schema.field("neighbours").type == pa.list_(pa.int64(), 8)


def test_report_json_is_plain_json(dirty):
    report = quality_step.report_json(dirty[0], top=3)
    json.dumps(report, allow_nan=False)
    assert len(report["suspects"]) == 3 and len(report["duplicates"]) == 2 and len(report["labels"]) == 4
    assert {"path", "class", "suggested", "agreement", "zero_shot", "zero_shot_probability"} <= set(report["suspects"][0])
    assert report["duplicates"][0]["kind"] == "exact" and len(report["duplicates"][0]["paths"]) == 2
    assert set(report["labels"][0]) >= {"label", "images", "purity", "confused_with", "zero_shot_accuracy"}


def test_no_hashes_skips_exact_duplicates_with_a_note(dirty):
    results, planted, vectors, labels, paths, _ = dirty
    plain = quality.assess(vectors, labels, paths, results.params, neighbours=results.neighbours)
    assert "no content hashes" in plain.exact_note
    assert list(plain.duplicates["kind"]) == ["near", "near"]  # the identical copy is still found, as near
    assert quality_step.summary(plain)["exact_duplicates"]["checked"] is False


def test_auto_threshold_follows_a_crowded_random_weights_space():
    """All vectors ~0.997 apart, as a random-weights CLIP makes them: a fixed 0.98 calls everything a duplicate."""
    rng = np.random.default_rng(4)
    vectors = 10 + rng.normal(0, 0.3, (200, 16))
    vectors[199] = vectors[3] + rng.normal(0, 1e-4, 16)
    labels, paths = ["a"] * 100 + ["b"] * 100, [f"/p/{i}" for i in range(200)]
    neighbours = brute_force(vectors, 5)
    assert neighbours.similarities[:, 0].min() > 0.98
    auto = quality.assess(vectors, labels, paths, QualityParams(k=5), neighbours=neighbours)
    assert [tuple(pair) for pair in auto.duplicates[["a", "b"]].to_numpy()] == [(3, 199)]
    fixed = quality.assess(vectors, labels, paths, QualityParams(k=5, near_threshold=0.98), neighbours=neighbours)
    assert len(fixed.duplicates) > 150 and fixed.near_rule.startswith("fixed")


def test_assess_run_reads_a_runs_content_hashes(tmp_path):
    run = write_fake_run(tmp_path, labels={"a": 15, "b": 15})
    plain = quality_step.assess_run(run, QualityParams(k=4), backend="numpy")
    assert len(plain.images) == 30 and "no content hashes" in plain.exact_note
    part = sorted((run / "embeddings").glob("*.parquet"))[0]
    table = pq.read_table(part)
    hashes = [f"h{i}" for i in range(table.num_rows)]
    hashes[1] = hashes[0]
    pq.write_table(table.append_column(quality.HASH_COLUMN, pa.array(hashes)), part)
    for other in sorted((run / "embeddings").glob("*.parquet"))[1:]:
        table = pq.read_table(other)
        pq.write_table(table.append_column(quality.HASH_COLUMN, pa.array([None] * table.num_rows, pa.string())), other)
    hashed = quality_step.assess_run(run, QualityParams(k=4), backend="numpy")
    assert hashed.exact_note is None
    exact = hashed.duplicates[hashed.duplicates["kind"] == "exact"]
    assert [tuple(pair) for pair in exact[["a", "b"]].to_numpy()] == [(0, 1)]
    assert len(store.load_index(run)) == 30


@pytest.mark.ray
def test_the_quality_step_scores_zero_shot_with_the_runs_text_tower_or_says_why_not(ray_session, tiny_clip, tmp_path):
    """The step on Ray: with the run's model here, zero-shot equals the plain model's text and image features;
    with a model folder that is not here, neighbours and duplicates still come out and the report says why."""
    import torch
    from transformers import AutoTokenizer, CLIPModel

    from doggos.base.rundir import RunDir

    params = QualityParams(k=4)
    here = RunDir(write_fake_run(tmp_path / "a", labels={"beagle": 6, "pug": 6}, dim=32, model=tiny_clip))
    quality_step.QUALITY.run(here, params)
    results = quality_step.read_results(here.quality, params)
    assert results.zero_shot_note is None and results.images["zero_shot"].notna().all()
    vectors, meta = store.load_embeddings(here)
    clip, tokenizer = CLIPModel.from_pretrained(tiny_clip).eval(), AutoTokenizer.from_pretrained(tiny_clip)
    names = quality.label_names(meta["label"].tolist())
    with torch.inference_mode():
        text = clip.get_text_features(**tokenizer(quality.prompts(names), padding=True, return_tensors="pt")).pooler_output
    expected = quality.zero_shot(vectors, text.numpy(), clip.logit_scale.item())
    assert results.images.sort_values("row")["zero_shot"].tolist() == [names[i] for i in expected.index]
    assert np.allclose(results.images.sort_values("row")["zero_shot_probability"], expected.probability, atol=1e-4)

    away = RunDir(write_fake_run(tmp_path / "b", labels={"beagle": 6, "pug": 6}, dim=32, model=str(tmp_path / "gone")))
    quality_step.QUALITY.run(away, params)
    missing = quality_step.read_results(away.quality, params)
    assert missing.images["zero_shot"].isna().all() and "cannot be loaded here" in missing.zero_shot_note
    assert missing.images["agreement"].notna().all() and len(missing.labels) == 2

    # A run whose embedder actors embedded the prompts: the step uses those, and needs no text tower at all.
    from doggos.pipeline.dataset import write_prompt_features

    stored = RunDir(write_fake_run(tmp_path / "c", labels={"beagle": 6, "pug": 6}, dim=32, model=str(tmp_path / "gone")))
    vectors, meta = store.load_embeddings(stored)
    centres = np.stack([vectors[(meta["label"] == name).to_numpy()].mean(axis=0) for name in ("beagle", "pug")])
    # Each prompt gets the other label's centre (and an extra prompt is ignored): zero-shot must swap every label.
    write_prompt_features(stored, ["a photo of a pug.", "a photo of a beagle.", "a photo of an akita."],
                          np.concatenate([centres, -centres[:1]]))
    quality_step.QUALITY.run(stored, params)
    swapped = quality_step.read_results(stored.quality, params).images
    assert swapped["zero_shot"].tolist() == [{"beagle": "pug", "pug": "beagle"}[c] for c in swapped["class"]]
