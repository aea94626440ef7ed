"""The label check seen through the label decisions: a re-check from the stored neighbours, the review queue, accept.

`recheck` re-reads what the quality step stored (each image's k neighbours and their similarities) with the effective
labels (`doggos.base.decisions`): agreement, suggestions, purity, confusion and duplicates again, without embeddings,
Ray or a neighbour search (measured in docs/performance.md: well under a second at 2,880 images). Excluded images
neither vote nor count; reviewed images (a relabel or a keep) are no longer suspects. The first check's files stay as
they are: the page and the CLI say how purity moved since then.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from doggos.base import decisions, units
from doggos.explore.quality import QualityParams, QualityResults, _per_label, _suggest, _typed_duplicates, label_names


def recheck(first: QualityResults, state: decisions.LabelState) -> QualityResults:
    """`first` (the stored results) with the effective labels of `state`; `images` gains folder_label, excluded and
    reviewed. Without decisions, `first` comes back as it is (plus those columns)."""
    images = first.images
    applied = state.apply(images["path"], images["class"])
    folder = images["class"]
    labels = applied.labels
    voters = ~applied.excluded
    names = label_names(labels[voters]) or label_names(labels)
    name_array = np.array(names, dtype=object)
    codes = np.searchsorted(name_array, labels).astype(np.int64)
    known = codes < len(names)
    known[known] = name_array[codes[known]] == labels[known]  # not np.isin: it sorts the strings (0.37 s at 100,000)
    codes[~known] = 0  # an excluded image's label may be gone from the table: it never votes
    neighbours = first.neighbours
    if state.effects:
        suggested, similarity = _suggest(neighbours, codes, len(names), voters)
        indices = neighbours.indices
        votes = voters[indices]
        same = (codes[indices] == codes[:, None]) & votes
        counted = votes.sum(axis=1)
        agreement = np.where(counted > 0, same.sum(axis=1) / np.maximum(counted, 1), 1.0)
        suggested_names = name_array[suggested]
    else:
        agreement, suggested_names = images["agreement"].to_numpy(), images["suggested"]
        similarity = images["suggested_similarity"].to_numpy()
    frame = images.assign(**{
        "class": pd.Series(labels, dtype=folder.dtype) if state.effects else folder,
        "agreement": np.asarray(agreement, np.float64),
        "suggested": pd.Series(suggested_names, dtype=images["suggested"].dtype) if state.effects
        else images["suggested"],
        "suggested_similarity": np.asarray(similarity, np.float64),
        "folder_label": folder, "excluded": applied.excluded, "reviewed": applied.reviewed,
    })
    results = QualityResults(first.params, frame, neighbours, pd.DataFrame(), _duplicates(first, labels, applied),
                             first.near_threshold, first.near_rule, first.exact_note, first.zero_shot_note)
    results.labels = _per_label(results, names)
    return results


def _duplicates(first: QualityResults, labels: np.ndarray, applied: decisions.Applied) -> pd.DataFrame:
    """The first check's pairs with effective labels; a pair leaves the list once one side is excluded or both were
    reviewed ("keep both"). Cross-label pairs first, as `assess` orders them."""
    pairs = first.duplicates
    if pairs.empty:
        return pairs
    a, b = pairs["a"].to_numpy(np.int64), pairs["b"].to_numpy(np.int64)
    keep = ~(applied.excluded[a] | applied.excluded[b] | (applied.reviewed[a] & applied.reviewed[b]))
    frame = pairs.assign(class_a=labels[a], class_b=labels[b], cross_label=labels[a] != labels[b])[keep]
    frame = frame.assign(_near=frame["kind"] != "exact").sort_values(
        ["cross_label", "_near", "similarity", "a", "b"], ascending=[False, True, False, True, True], kind="mergesort")
    return _typed_duplicates(frame)


def purity(results: QualityResults) -> float:
    """The dataset's purity: the mean agreement of the images still in it (NaN when none are)."""
    agreement = results.in_dataset()["agreement"]
    return float(agreement.mean()) if len(agreement) else float("nan")


@dataclass(frozen=True)
class Review:
    """Where the review stands: purity at the first check and now, decisions, the queue and how much of it is done."""

    purity_before: float
    purity_now: float
    decisions: int
    reviewed: int  # images with a relabel or keep in effect (excluded ones not counted)
    excluded: int
    queue: int  # images in the queue: suspects at the first check or now
    queue_done: int  # of them, those with a decision in effect

    def purity_text(self) -> str:
        """"purity 81 % → 93 % after 42 decisions" (just "purity 81 %" before any): shares as every screen shows."""
        if not self.decisions:
            return f"purity {units.share(self.purity_before)}"
        return (f"purity {units.share(self.purity_before)} → {units.share(self.purity_now)} after "
                f"{units.count(self.decisions, 'decision')}")

    def progress_text(self) -> str:
        return f"{units.count(self.queue_done)} of {units.count(self.queue)} reviewed"


def queue(first: QualityResults, now: QualityResults) -> pd.DataFrame:
    """The review queue: the first check's suspects in its ranking (strongest first: zero-shot disagrees too), then
    images that became suspects since; columns row, path, label (effective), folder_label, suggested (now), agreement
    (now), zero_shot, zero_shot_probability, strongest, decided (a decision in effect: reviewed or excluded)."""
    def ranked(results: QualityResults) -> np.ndarray:
        found = results.likely_mislabeled()
        strongest = (found["zero_shot"].notna() & (found["zero_shot"] != found["class"])).to_numpy(bool)
        return np.concatenate([found["row"].to_numpy()[strongest], found["row"].to_numpy()[~strongest]])

    before = ranked(first)
    after = ranked(now)
    rows = np.concatenate([before, after[~np.isin(after, before)]]).astype(np.int64)
    images = now.images.iloc[rows]
    decided = (images["reviewed"].to_numpy(bool) | images["excluded"].to_numpy(bool)) if "reviewed" in images \
        else np.zeros(len(rows), bool)
    zero_shot = images["zero_shot"]
    return pd.DataFrame({
        "row": rows, "path": images["path"].to_numpy(), "label": images["class"].to_numpy(),
        "folder_label": (images["folder_label"] if "folder_label" in images else images["class"]).to_numpy(),
        "suggested": images["suggested"].to_numpy(), "agreement": images["agreement"].to_numpy(),
        "zero_shot": zero_shot.to_numpy(), "zero_shot_probability": images["zero_shot_probability"].to_numpy(),
        "strongest": (zero_shot.notna() & (zero_shot != images["class"])).to_numpy(bool), "decided": decided,
    })


def review(first: QualityResults, now: QualityResults, state: decisions.LabelState,
           waiting: pd.DataFrame | None = None) -> Review:
    """The figures the Quality page and `quality` print (`waiting`: the `queue`, when already at hand)."""
    waiting = queue(first, now) if waiting is None else waiting
    return Review(purity(first), purity(now), state.decisions, state.reviewed, state.excluded, len(waiting),
                  int(waiting["decided"].sum()))


def suggestions(now: QualityResults, top: int | None = None, min_agreement: float | None = None) -> pd.DataFrame:
    """The suspects whose suggestion `accept` would take: the top `top` (None: all) in the ranking, optionally only
    those whose neighbours agree on the suggestion at least `min_agreement` (the share of voting neighbours that carry
    the suggested label); columns row, path, label, folder_label, suggested, support."""
    if top is not None and (isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1):
        raise ValueError(f"top: must be a whole number of suspects, 1 or more (got {top!r})")
    if min_agreement is not None and (isinstance(min_agreement, bool) or not isinstance(min_agreement, (int, float))
                                      or not 0 <= min_agreement <= 1):
        raise ValueError(f"min-agreement: must be a share from 0 to 1, such as 0.6 (got {min_agreement!r})")
    found = now.likely_mislabeled()
    strongest = (found["zero_shot"].notna() & (found["zero_shot"] != found["class"])).to_numpy(bool)
    found = pd.concat([found[strongest], found[~strongest]])
    support = suggestion_support(now, found["row"].to_numpy(np.int64), found["suggested"].to_numpy(dtype=object))
    frame = pd.DataFrame({
        "row": found["row"].to_numpy(np.int64), "path": found["path"].to_numpy(), "label": found["class"].to_numpy(),
        "folder_label": (found["folder_label"] if "folder_label" in found else found["class"]).to_numpy(),
        "suggested": found["suggested"].to_numpy(), "support": support,
    })
    if min_agreement is not None:
        frame = frame[frame["support"] >= min_agreement]
    return frame.head(top) if top is not None else frame.reset_index(drop=True)


def suggestion_support(now: QualityResults, rows: np.ndarray, suggested: np.ndarray) -> np.ndarray:
    """Per row: the share of its voting neighbours filed (effectively) under `suggested`."""
    if not len(rows):
        return np.zeros(0)
    indices = now.neighbours.indices[rows]
    labels = now.images["class"].to_numpy(dtype=object)
    voters = ~now.images["excluded"].to_numpy(bool) if "excluded" in now.images else np.ones(len(labels), bool)
    votes = voters[indices]
    carries = (labels[indices] == suggested[:, None]) & votes
    return carries.sum(axis=1) / np.maximum(votes.sum(axis=1), 1)


def accept(run, now: QualityResults, top: int | None = None, min_agreement: float | None = None,
           source: str = "cli") -> tuple[int | None, pd.DataFrame]:
    """Relabel the `suggestions` to their suggested labels, as one action; (its number or None when none qualified,
    the images accepted)."""
    chosen = suggestions(now, top, min_agreement)
    if chosen.empty:
        return None, chosen
    images = [decisions.Image(int(r), str(p), str(f)) for r, p, f in
              zip(chosen["row"], chosen["path"], chosen["folder_label"])]
    return decisions.record(run, "relabel", images, [str(x) for x in chosen["suggested"]], source=source), chosen


def load(run, params: QualityParams) -> tuple[QualityResults, QualityResults, decisions.LabelState]:
    """(the stored first check, the re-check with the decisions in effect now, those decisions) of a run.

    A ValueError naming "run" when the run has no results for `params` (the quality step makes them)."""
    from doggos.base.rundir import run_dir_of
    from doggos.explore.quality_step import read_results

    try:
        first = read_results(run_dir_of(run).quality, params)
    except FileNotFoundError:
        raise ValueError(f"run: {run_dir_of(run).id} has no label-check results ({params.describe()}) yet: run "
                         "`python -m doggos quality RUN` or open its Quality page first") from None
    state = decisions.state(run)
    return first, recheck(first, state), state
