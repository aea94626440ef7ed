"""explore.label_review on the planted dirty set of test_quality: the re-check with decisions, accept, the queue."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_quality import LABELS, PER_LABEL, dirty_set

from doggos.base import decisions, units
from doggos.base.rundir import RunDir
from doggos.explore import label_review, quality, quality_step
from doggos.explore.quality import QualityParams

PARAMS = QualityParams(k=8)


@pytest.fixture(scope="module")
def first_check():
    vectors, labels, paths, hashes, planted = dirty_set()
    return quality.assess(vectors, labels, paths, PARAMS, hashes=hashes, backend="numpy"), planted


@pytest.fixture
def run(first_check, tmp_path):
    """A run folder with the first check's stored results (no embeddings: the re-check never reads them)."""
    quality_step.write_results(RunDir(tmp_path).quality, PARAMS, first_check[0])
    return tmp_path


def dirt(planted) -> set[int]:
    return planted["misfiled"] | {planted["exact"][1], planted["near"][1]}


def images(first, rows) -> list[decisions.Image]:
    frame = first.images
    return [decisions.Image(int(r), str(frame.at[r, "path"]), str(frame.at[r, "class"])) for r in rows]


def labels_table(results) -> pd.DataFrame:
    return results.labels.set_index("label")


def agreement_by_hand(results) -> np.ndarray:
    """Each image's share of voting (not excluded) neighbours filed under its effective label."""
    indices = np.asarray(results.neighbours.indices)
    labels = results.images["class"].to_numpy(dtype=object)
    votes = ~results.images["excluded"].to_numpy(bool)[indices]
    same = (labels[indices] == labels[:, None]) & votes
    return np.where(votes.any(axis=1), same.sum(axis=1) / np.maximum(votes.sum(axis=1), 1), 1.0)


def test_without_decisions_the_recheck_is_the_first_check(run, first_check):
    computed, planted = first_check
    first, now, state = label_review.load(run, PARAMS)
    assert not state.effects and state.decisions == 0
    assert list(now.likely_mislabeled()["row"]) == list(computed.likely_mislabeled()["row"])
    assert set(now.likely_mislabeled()["row"]) == dirt(planted)
    pd.testing.assert_frame_equal(now.labels, computed.labels)
    pd.testing.assert_frame_equal(now.confusion(), computed.confusion())
    pd.testing.assert_frame_equal(now.duplicates, computed.duplicates)
    assert label_review.purity(now) == label_review.purity(first) == pytest.approx(computed.images["agreement"].mean())
    assert (now.images["folder_label"] == now.images["class"]).all()
    assert not now.images["excluded"].any() and not now.images["reviewed"].any()
    figures = label_review.review(first, now, state)
    assert figures.purity_text() == f"purity {units.share(label_review.purity(first))}"


def test_a_decision_that_changes_no_label_recomputes_the_same_agreement(run, first_check):
    """With a decision in effect the re-check recomputes votes from the stored neighbours: a keep changes no label,
    so every image's agreement and suggestion must come out as the first check stored them."""
    first = label_review.load(run, PARAMS)[0]
    decisions.record(run, "keep", images(first, [0]))
    _, now, _ = label_review.load(run, PARAMS)
    np.testing.assert_allclose(now.images["agreement"], first.images["agreement"])
    assert (now.images["suggested"] == first.images["suggested"]).all()
    np.testing.assert_allclose(now.images["suggested_similarity"], first.images["suggested_similarity"], rtol=1e-6)
    pd.testing.assert_frame_equal(now.confusion(), first.confusion())


def test_accepting_the_suggestions_relabels_exactly_the_planted_dirt(run, first_check):
    _, planted = first_check
    first, now, _ = label_review.load(run, PARAMS)
    action, chosen = label_review.accept(run, now, source="cli")
    assert action is not None and set(chosen["row"]) == dirt(planted)
    expected = {planted["exact"][1]: "pug", planted["near"][1]: "husky"} | dict.fromkeys(planted["misfiled"], "beagle")
    assert dict(zip(chosen["row"], chosen["suggested"])) == expected
    assert (chosen["support"] == 1.0).all()
    assert decisions.describe(run, action) == "relabel 5 images under 3 labels"
    assert {e.source for e in decisions.read_log(run)} == {"cli"}

    _, after, state = label_review.load(run, PARAMS)
    assert state.decisions == 5 and {e.label for e in state.effects.values()} == {"beagle", "pug", "husky"}
    planted_rows = after.images.loc[sorted(dirt(planted))]
    assert (planted_rows["class"] == planted_rows["suggested"]).all(), "not suspects even if nobody had reviewed them"
    assert (planted_rows["agreement"] >= 0.75).all()
    assert after.likely_mislabeled().empty
    before_table, after_table = labels_table(first), labels_table(after)
    assert (after_table["purity"] > before_table["purity"]).all(), "every label held planted dirt or lost some"
    # each copy joins its original's label: one more husky and one more pug
    assert after_table["images"].to_dict() == {"beagle": PER_LABEL, "border_collie": PER_LABEL,
                                               "husky": PER_LABEL + 1, "pug": PER_LABEL + 1}
    assert not after.duplicates["cross_label"].any(), "each copy now carries its original's label"
    assert after.confusion().to_numpy().trace() == len(after.images)
    figures = label_review.review(first, after, state)
    assert figures.purity_now > figures.purity_before
    assert figures.purity_text() == (f"purity {units.share(figures.purity_before)} → {units.share(figures.purity_now)} "
                                     "after 5 decisions")
    assert (figures.queue, figures.queue_done, figures.progress_text()) == (5, 5, "5 of 5 reviewed")
    again, none = label_review.accept(run, after)
    assert again is None and none.empty and decisions.state(run).decisions == 5


def test_accept_takes_the_top_of_the_ranking_or_the_well_supported(run, first_check):
    _, now, _ = label_review.load(run, PARAMS)
    ranking = list(label_review.suggestions(now)["row"])
    assert list(now.likely_mislabeled()["row"]) == ranking  # no zero-shot here: the plain ranking
    _, chosen = label_review.accept(run, now, top=2)
    assert list(chosen["row"]) == ranking[:2]
    assert set(decisions.state(run).effects) == set(chosen["path"])
    assert label_review.suggestions(now, min_agreement=1.0)["row"].tolist() == ranking
    assert label_review.accept(run, now, min_agreement=1.0, top=1)[1]["row"].tolist() == ranking[:1]


def test_exclude_leaves_an_image_out_of_votes_counts_confusion_and_pairs(run, first_check):
    _, planted = first_check
    original, copy = planted["exact"]  # pug-003 and its identical copy filed under husky
    first, before, _ = label_review.load(run, PARAMS)
    assert copy in set(first.neighbours.indices[original])
    decisions.record(run, "exclude", images(first, [copy]))
    _, now, state = label_review.load(run, PARAMS)
    assert state.excluded == 1 and bool(now.images.at[copy, "excluded"])
    np.testing.assert_allclose(now.images["agreement"], agreement_by_hand(now))
    assert before.images.at[original, "agreement"] < 1 and now.images.at[original, "agreement"] == 1.0
    assert copy not in set(now.likely_mislabeled()["row"]) and copy not in set(now.in_dataset()["row"])
    counts_before, counts_now = labels_table(before)["images"], labels_table(now)["images"]
    assert counts_now["husky"] == counts_before["husky"] - 1 and counts_now.drop("husky").equals(
        counts_before.drop("husky"))
    assert int(now.confusion().to_numpy().sum()) == len(now.images) - 1
    assert now.confusion().loc["husky", "pug"] == before.confusion().loc["husky", "pug"] - 1
    assert [tuple(p) for p in now.duplicates[["a", "b"]].to_numpy()] == [planted["near"]]
    # kept back in: everything as before, the copy now reviewed
    decisions.record(run, "keep", images(first, [copy]))
    _, back, _ = label_review.load(run, PARAMS)
    assert labels_table(back)["images"].equals(counts_before)
    assert [tuple(p) for p in back.duplicates[["a", "b"]].to_numpy()] == [planted["exact"], planted["near"]]


def test_keep_takes_an_image_off_the_suspects_and_keeps_its_label(run, first_check):
    _, planted = first_check
    kept = min(planted["misfiled"])
    first = label_review.load(run, PARAMS)[0]
    decisions.record(run, "keep", images(first, [kept]))
    _, now, state = label_review.load(run, PARAMS)
    assert kept not in set(now.likely_mislabeled()["row"])
    assert set(now.likely_mislabeled()["row"]) == dirt(planted) - {kept}
    assert now.images.at[kept, "class"] == "border_collie" and now.images.at[kept, "suggested"] == "beagle"
    assert labels_table(now).at["border_collie", "likely_mislabeled"] == len(planted["misfiled"]) - 1
    waiting = label_review.queue(first, now)
    assert list(waiting["row"]) == list(first.likely_mislabeled()["row"])  # still in the queue, done
    assert waiting.set_index("row")["decided"].to_dict() == {r: r == kept for r in waiting["row"]}
    assert state.reviewed == 1


def test_keep_both_copies_takes_their_pair_off_the_duplicates(run, first_check):
    _, planted = first_check
    first = label_review.load(run, PARAMS)[0]
    decisions.record(run, "keep", images(first, planted["near"]))
    _, now, _ = label_review.load(run, PARAMS)
    assert [tuple(p) for p in now.duplicates[["a", "b"]].to_numpy()] == [planted["exact"]]


def test_a_relabel_to_a_new_label_adds_it_to_the_tables(run, first_check):
    _, planted = first_check
    first = label_review.load(run, PARAMS)[0]
    copy = planted["near"][1]
    decisions.record(run, "relabel", images(first, [copy]), "siberian husky")
    _, now, _ = label_review.load(run, PARAMS)
    table = labels_table(now)
    assert list(now.labels["label"]) == sorted([*LABELS, "siberian husky"])
    assert table.at["siberian husky", "images"] == 1 and table.at["beagle", "images"] == labels_table(first).at[
        "beagle", "images"] - 1
    confusion = now.confusion()
    assert "siberian husky" in confusion.index and "siberian husky" in confusion.columns
    assert confusion.loc["siberian husky"].sum() == 1
    assert now.images.at[copy, "folder_label"] == "beagle" and now.images.at[copy, "class"] == "siberian husky"


def test_the_queue_keeps_the_first_suspects_then_adds_new_ones(run, first_check):
    _, planted = first_check
    first, now, state = label_review.load(run, PARAMS)
    waiting = label_review.queue(first, now)
    assert list(waiting["row"]) == list(first.likely_mislabeled()["row"]) and not waiting["decided"].any()
    assert list(waiting.columns) == ["row", "path", "label", "folder_label", "suggested", "agreement", "zero_shot",
                                     "zero_shot_probability", "strongest", "decided"]
    figures = label_review.review(first, now, state)
    assert (figures.decisions, figures.reviewed, figures.excluded, figures.queue, figures.queue_done) == (0, 0, 0, 5, 0)
    assert figures.progress_text() == "0 of 5 reviewed"

    pugs = [LABELS.index("pug") * PER_LABEL + i for i in range(PER_LABEL)]
    moved, left = pugs[:20], pugs[20:]  # most pugs refiled as huskies: the pugs left now disagree with their neighbours
    decisions.record(run, "relabel", images(first, moved), "husky")
    decisions.record(run, "exclude", images(first, [planted["exact"][1]]))
    decisions.record(run, "keep", images(first, [min(planted["misfiled"])]))
    _, now, state = label_review.load(run, PARAMS)
    waiting = label_review.queue(first, now)
    rows = list(waiting["row"])
    assert rows[:5] == list(first.likely_mislabeled()["row"])
    assert rows[5:] and set(rows[5:]) <= set(left) and len(set(rows)) == len(rows)
    assert (waiting.set_index("row").loc[rows[5:], "label"] == "pug").all()
    assert not waiting["decided"].iloc[5:].any()
    figures = label_review.review(first, now, state, waiting)
    assert (figures.decisions, figures.reviewed, figures.excluded) == (22, 21, 1)
    assert (figures.queue, figures.queue_done) == (len(rows), 2)
    assert figures.progress_text() == f"2 of {len(rows)} reviewed"
    assert figures.purity_text().endswith("after 22 decisions")


def test_suggestions_check_top_and_min_agreement(run):
    _, now, _ = label_review.load(run, PARAMS)
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="^top: must be a whole number"):
            label_review.suggestions(now, top=bad)
    for bad in (-0.1, 1.5, True, "0.5", float("nan")):
        with pytest.raises(ValueError, match="^min-agreement: must be a share from 0 to 1"):
            label_review.suggestions(now, min_agreement=bad)
    with pytest.raises(ValueError, match="^top: "):
        label_review.accept(run, now, top=0)
    assert not decisions.log_path(run).exists()
    assert len(label_review.suggestions(now, top=np.int64(2), min_agreement=0)) == 2


def test_load_without_results_names_the_run(tmp_path):
    with pytest.raises(ValueError, match="^run: .*has no label-check results"):
        label_review.load(tmp_path, PARAMS)


def test_a_label_all_excluded_leaves_the_tables_and_an_image_without_voters_is_no_suspect(run, first_check):
    _, planted = first_check
    first = label_review.load(run, PARAMS)[0]
    pugs = first.images.index[first.images["class"] == "pug"]
    decisions.record(run, "exclude", images(first, pugs))
    _, now, state = label_review.load(run, PARAMS)
    assert "pug" not in set(now.labels["label"]) and "pug" not in set(now.confusion().columns)
    copy = planted["exact"][1]  # filed under husky, all its neighbours pugs: nobody votes on it now
    assert now.images.at[copy, "agreement"] == 1.0 and now.images.at[copy, "suggested"] == "husky"
    assert set(now.likely_mislabeled()["row"]) == dirt(planted) - {copy}
    assert label_review.review(first, now, state).excluded == len(pugs)
