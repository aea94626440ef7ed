"""Label quality from the embeddings alone: neighbour agreement, suggested labels, duplicates and zero-shot checks.

Labels come from folder names and are dirty. `assess` finds each image's k nearest neighbours (cosine, itself
excluded; `doggos.explore.neighbours`) and reads the labels around it:

- `agreement`: the share of its k neighbours filed under its own label.
- `suggested`: the neighbours' majority label; ties go to the higher summed similarity, then the label name (A→Z).
  `suggested_similarity` is the mean similarity of the neighbours that carry the suggested label.
- likely mislabeled: the images whose suggested label is not their own, ranked most suspicious first by
  (lowest agreement, then highest `suggested_similarity`, then path).
- strongest suspects: the likely mislabeled whose zero-shot label (the CLIP text tower) disagrees with the folder too.
- per label: images, purity (the mean agreement of its images), `confused_with` (the suggested label other than itself
  that its images get most often, ties by name; None if never), and a confusion matrix (rows: filed label, columns:
  suggested label, counts; it sums to the number of images).
- duplicates: "exact" pairs share a content hash (identical bytes; a run without hashes skips them, with a note);
  "near" pairs are neighbours at or above the near threshold. A pair is listed once (a < b), exact ones not again as
  near; `cross_label` pairs (filed under different labels: the most urgent) come first, then exact, then by similarity.
  A group of more than MAX_GROUP_PAIRS (20) identical files lists each copy with the group's first row only.

Files, in a folder such as `<run>/quality/`, per `QualityParams.name` NAME, each written atomically:
`NAME.parquet`, one row per image: row (int64), path, class, agreement (float64), suggested, suggested_similarity
(float64), neighbours (fixed_size_list<int64>[k], row ids, best first), similarities (fixed_size_list<float32>[k]),
zero_shot (string, null when unavailable), zero_shot_probability (float32, null when unavailable).
`NAME.json`, written last: {"version", "name", "params": {k, template, near_threshold}, "counts": {images, labels,
likely_mislabeled, strongest_suspects, exact_duplicate_pairs, near_duplicate_pairs, cross_label_duplicate_pairs},
"near_threshold": {"value", "rule"}, "exact_duplicates": {"checked", "note"}, "zero_shot": {"available", "accuracy",
"reason", "template"}, "label_checks": {"available", "reason"} (not with fewer than MIN_LABELS labels), "labels":
[{label, images, purity, confused_with, likely_mislabeled, zero_shot_accuracy}], "duplicates": [{a, b, path_a, path_b,
class_a, class_b, kind, similarity, cross_label}]}.
`report_json(results, top)` gives {"suspects": [{row, path, class, suggested, agreement, suggested_similarity,
zero_shot, zero_shot_probability, strongest}], "duplicates": [{paths, classes, similarity, kind, cross_label}],
"labels": [as above], "counts", "near_threshold", "exact_duplicates", "zero_shot", "label_checks"}: suspects strongest
first, then by the ranking above (zero_shot unavailable, with label_checks' reason, for a run of one label).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from doggos.base import units
from doggos.explore.neighbours import (Neighbours, StoredTiles, check_k, nearest_neighbours, neighbours_of_tiles,
                                       normalise)

VERSION = 1  # of the files' layout
TEMPLATE = "a photo of a {label}."  # CLIP's own zero-shot prompt
HASH_COLUMN = "content_hash"  # a run's per-file content hash column, when the pipeline wrote one
# The near-duplicate rule (see near_threshold): a pair is "near" when its cosine distance is at most NEAR_RATIO × the
# run's median 1st-neighbour distance, clamped to [NEAR_NOISE, 1 − NEAR_MIN_SIMILARITY].
NEAR_RATIO = 0.05
NEAR_MIN_SIMILARITY = 0.95  # never call a pair below this similarity a duplicate, whatever the spread
NEAR_NOISE = 1e-6  # float32 rounding of a unit dot product: identical embeddings are always near duplicates
MIN_LABELS = 2  # a label can only be doubted when there is another one to suggest
LABEL_COLUMNS = ("label", "images", "purity", "confused_with", "likely_mislabeled", "zero_shot_accuracy")
DUPLICATE_COLUMNS = ("a", "b", "path_a", "path_b", "class_a", "class_b", "kind", "similarity", "cross_label")
MAX_GROUP_PAIRS = 20  # a group of more identical files than this lists (first, copy) pairs: n, not n²/2
ZERO_SHOT_ROWS = 8192  # images scored at once: their rows × labels float64 logits stay a few MB, whatever the run's size


def check_template(template) -> str:
    if not isinstance(template, str) or template.count("{label}") != 1:
        raise ValueError(f"template: must contain {{label}} exactly once, as in {TEMPLATE!r} (got {template!r})")
    return template


@dataclass(frozen=True)
class QualityParams:
    """What changes the results: neighbours per image, the zero-shot prompt, and a fixed near threshold (None: auto)."""

    k: int = 10  # neighbours per image: enough for a majority, few enough to stay local
    template: str = TEMPLATE
    near_threshold: float | None = None  # a cosine similarity in (0, 1]; None: derived from the run (near_threshold)

    def __post_init__(self) -> None:
        object.__setattr__(self, "k", check_k(self.k))
        check_template(self.template)
        if self.near_threshold is not None:
            value = self.near_threshold
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise ValueError(f"near_threshold: must be a similarity above 0 and at most 1, or None (got {value!r})")
            object.__setattr__(self, "near_threshold", round(float(value), 6))

    def describe(self) -> str:
        """How people read the parameters, e.g. "k=10, template 'a photo of a {label}.'"."""
        near = "" if self.near_threshold is None else f", near duplicates at similarity ≥ {self.near_threshold:g}"
        return f"k={self.k}, template {self.template!r}{near}"

    @property
    def name(self) -> str:
        """The result files' stem: k, the near threshold and a hash of the template; filesystem-safe."""
        near = "auto" if self.near_threshold is None else f"{self.near_threshold:g}"
        template = hashlib.sha256(self.template.encode("utf-8")).hexdigest()[:10]
        return f"k{self.k}-near-{near}-t{template}"


DEFAULT_PARAMS = QualityParams()


@dataclass(frozen=True)
class ZeroShot:
    """Per image: the best label's position among the text vectors (`index`) and its softmax `probability`."""

    index: np.ndarray
    probability: np.ndarray


@dataclass
class QualityResults:
    """What `assess` found; `images` has one row per image (see the module docstring for every column)."""

    params: QualityParams
    images: pd.DataFrame
    neighbours: Neighbours  # read back: a quality_step.StoredNeighbours, the same attributes, read when first used
    labels: pd.DataFrame
    duplicates: pd.DataFrame
    near_threshold: float
    near_rule: str
    exact_note: str | None = None  # why exact duplicates were not checked; None when they were
    zero_shot_note: str | None = None  # why zero-shot is missing; None when it is there

    @property
    def label_checks_note(self) -> str | None:
        """Why the label checks (purity, suspects, zero-shot accuracy) say nothing about this run: fewer than
        MIN_LABELS labels, so every neighbour and every zero-shot guess agrees by construction; None when they apply.
        The duplicates are found all the same."""
        count = len(self.labels)
        if count >= MIN_LABELS:
            return None
        only = f" ({self.labels['label'].iloc[0]})" if count else ""
        return (f"this run has {units.count(count, 'label')}{only}: label checks need two or more labels, "
                "since with one label every neighbour and every zero-shot guess agrees with it (100 %, no suspects, "
                "whatever the images). Duplicates are still checked")

    @property
    def zero_shot_accuracy(self) -> float | None:
        """How often zero-shot picks the filed label; None without zero-shot, or with one label (it cannot miss)."""
        if self.label_checks_note is not None:
            return None
        images = self.in_dataset()
        predicted = images["zero_shot"]
        return None if predicted.isna().all() else float((predicted == images["class"]).mean())

    def confusion(self) -> pd.DataFrame:
        """Counts of (filed label, suggested label): rows filed, columns suggested, every label on both axes."""
        names = list(self.labels["label"])
        # Label codes and one bincount: ~0.05 s for 1,000,000 images, where pd.crosstab took ~0.15 s.
        images = self.in_dataset()
        filed, suggested = (_codes(images[column], names) for column in ("class", "suggested"))
        known = (filed >= 0) & (suggested >= 0)  # a label outside the table (none in results `assess` made): left out
        counts = np.bincount(filed[known] * len(names) + suggested[known], minlength=len(names) ** 2)
        return pd.DataFrame(counts.reshape(len(names), len(names)).astype(np.int64),
                            index=pd.Index(names, name="filed"), columns=pd.Index(names, name="suggested"))

    def in_dataset(self) -> pd.DataFrame:
        """The images still in the dataset: all, unless label decisions (`doggos.explore.label_review.recheck`)
        excluded some."""
        images = self.images
        return images[~images["excluded"].to_numpy(bool)] if "excluded" in images else images

    def likely_mislabeled(self) -> pd.DataFrame:
        """Images whose suggested label is not their own, most suspicious first (see the module docstring); after
        label decisions, neither excluded nor reviewed ones."""
        images = self.in_dataset()
        if "reviewed" in images:
            images = images[~images["reviewed"].to_numpy(bool)]
        frame = images[images["suggested"] != images["class"]]
        return frame.sort_values(["agreement", "suggested_similarity", "path"], ascending=[True, False, True],
                                 kind="mergesort")

    def strongest_suspects(self) -> pd.DataFrame:
        """The likely mislabeled that zero-shot also puts elsewhere (empty without zero-shot)."""
        frame = self.likely_mislabeled()
        return frame[frame["zero_shot"].notna() & (frame["zero_shot"] != frame["class"])]


def _codes(values: pd.Series, names: list[str]) -> np.ndarray:
    """Each value's position in `names` (int64; -1 where it is not there, or missing), by an Arrow hash lookup."""
    found = pc.index_in(pa.array(values, pa.string(), from_pandas=True), value_set=pa.array(names, pa.string()))
    return found.fill_null(-1).to_numpy().astype(np.int64)


def prompts(labels: Sequence[str], template: str = TEMPLATE) -> list[str]:
    """One prompt per label; `_` and `-` read as spaces ("border_collie" → "a photo of a border collie.")."""
    check_template(template)
    return [template.replace("{label}", " ".join(re.sub(r"[_\-]+", " ", str(label)).split())) for label in labels]


def label_names(labels: Sequence[str]) -> list[str]:
    """The distinct labels, sorted: the order of the per-label tables, and of the prompts `assess` expects."""
    return sorted({str(label) for label in labels})


def zero_shot_probabilities(image_vectors: np.ndarray, text_vectors: np.ndarray, logit_scale: float) -> np.ndarray:
    """CLIP's zero-shot: softmax over labels of cosine(image, text) × exp(logit_scale); rows × labels, float32."""
    images, texts = np.asarray(image_vectors), np.asarray(text_vectors)
    if images.ndim != 2:
        raise ValueError(f"image_vectors: expected a 2-D array (images × dim), got shape {images.shape}")
    if texts.ndim != 2 or texts.shape[1] != images.shape[1] or len(texts) == 0:
        raise ValueError(f"text_vectors: expected at least one row of dimension {images.shape[1]}, got shape {texts.shape}")
    if isinstance(logit_scale, bool) or not math.isfinite(float(logit_scale)):
        raise ValueError(f"logit_scale: must be a finite number (CLIP's is about 4.6), got {logit_scale!r}")
    logits = (normalise(images) @ normalise(texts).T).astype(np.float64) * math.exp(float(logit_scale))
    logits -= logits.max(axis=1, keepdims=True)  # stable: exp never overflows
    weights = np.exp(logits)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def zero_shot(image_vectors, text_vectors: np.ndarray, logit_scale: float) -> ZeroShot:
    """Per image, the most probable label (its row in `text_vectors`; ties: the first) and its probability.

    image_vectors: an array, or rows already in Ray's object store (`doggos.explore.neighbours.StoredTiles`); scored
    ZERO_SHOT_ROWS at a time, so the work never holds more than a slice of the probabilities."""
    tiles = image_vectors.chunks() if isinstance(image_vectors, StoredTiles) else [np.asarray(image_vectors)]
    indices, best = [], []
    for tile in tiles:
        for start in range(0, max(len(tile), 1), ZERO_SHOT_ROWS):
            probabilities = zero_shot_probabilities(tile[start:start + ZERO_SHOT_ROWS], text_vectors, logit_scale)
            index = probabilities.argmax(axis=1) if len(probabilities) else np.zeros(0, np.int64)
            indices.append(index.astype(np.int64))
            best.append(probabilities[np.arange(len(index)), index])
    return ZeroShot(np.concatenate(indices), np.concatenate(best).astype(np.float32))


def near_threshold(first_similarities: np.ndarray, fixed: float | None = None) -> tuple[float, str]:
    """The similarity at or above which two neighbours are near duplicates, and how it was chosen.

    A fixed similarity fails on untrained models: the random-weights tiny CLIP on the demo digits puts every pair at
    about 0.997 cosine, and its median 1st-neighbour distance (1 − similarity) is 2.6e-4. So the rule is relative to
    the run: distance ≤ NEAR_RATIO (0.05) × the median 1st-neighbour distance, clamped to [1e-6, 0.05]. Measured:
    tiny random CLIP on 300 digits: JPEG q85 / 90 % resize copies at 0.001–0.002 × the median, the closest distinct
    pair at 0.20 × (1 % quantile 0.31 ×); fake runs (tests/_dashboard_fixtures, 600 rows, dim 16 / 512): copies with 1 %
    noise at 0.001–0.002 ×, the closest distinct pair at 0.36 × / 0.86 ×. 0.05 leaves a margin of 4× or more on both
    sides. Robust while fewer than half the images have a copy (the median then still measures distinct images).
    Edited copies (brightness +10 %, a 4 px crop) land at 1.4–3.2 × the median under random weights: indistinguishable
    from other images there, whatever the rule; a trained model separates them.
    """
    if fixed is not None:
        return float(fixed), f"fixed: similarity ≥ {fixed:g}"
    distances = 1.0 - np.asarray(first_similarities, dtype=np.float64)
    median = float(np.median(distances)) if len(distances) else 0.0
    distance = min(max(NEAR_RATIO * median, NEAR_NOISE), 1.0 - NEAR_MIN_SIMILARITY)
    return 1.0 - distance, (f"auto: similarity ≥ 1 − {NEAR_RATIO:g} × the median 1st-neighbour distance "
                            f"({median:.3g}), clamped to [{NEAR_MIN_SIMILARITY:g}, {1 - NEAR_NOISE:g}]")


def assess(vectors: np.ndarray | StoredTiles, labels: Sequence[str], paths: Sequence[str],
           params: QualityParams = DEFAULT_PARAMS, *, hashes: Sequence | None = None,
           zero_shot_result: ZeroShot | None = None, zero_shot_labels: Sequence[str] | None = None,
           zero_shot_note: str | None = None,
           neighbours: Neighbours | None = None, backend: str = "ray", ray_address: str | None = None,
           progress=None) -> QualityResults:
    """Label quality of a run's rows from their embeddings (see the module docstring for every measure).

    hashes: a content hash per row (None, or None entries: exact duplicates not checked). zero_shot_result: from
    `zero_shot`, with `zero_shot_labels` naming its text vectors (default: `label_names(labels)`); without it,
    `zero_shot_note` says why. neighbours: precomputed ones, else `nearest_neighbours(vectors, k, backend=...)`.
    vectors may be rows already in Ray's object store (`doggos.explore.neighbours.StoredTiles`): the neighbours are then
    found by Ray tasks on the connected Ray, and this process never holds the whole matrix.
    """
    if not isinstance(vectors, StoredTiles):
        vectors = np.asarray(vectors)
    rows = len(vectors)
    labels, paths = [str(x) for x in labels], [str(x) for x in paths]
    if len(labels) != rows or len(paths) != rows:
        raise ValueError(f"labels: expected one label and path per row ({rows}), got {len(labels)} and {len(paths)}")
    check_k(params.k, rows)
    if neighbours is None and isinstance(vectors, StoredTiles):
        neighbours = neighbours_of_tiles(vectors, params.k, progress=progress)
    elif neighbours is None:
        neighbours = nearest_neighbours(vectors, params.k, backend=backend, ray_address=ray_address, progress=progress)
    elif neighbours.indices.shape != (rows, params.k):
        raise ValueError(f"neighbours: expected shape {(rows, params.k)}, got {neighbours.indices.shape}")
    names = label_names(labels)
    codes = np.searchsorted(np.array(names, dtype=object), np.array(labels, dtype=object)).astype(np.int64)
    suggested, mean_similarity = _suggest(neighbours, codes, len(names))
    if zero_shot_result is not None:
        if len(zero_shot_result.index) != rows:
            raise ValueError(f"zero_shot_result: expected one answer per row ({rows}), got {len(zero_shot_result.index)}")
        named = label_names(labels) if zero_shot_labels is None else [str(x) for x in zero_shot_labels]
        predicted, probability = [named[i] for i in zero_shot_result.index], zero_shot_result.probability
        zero_shot_note = None
    else:
        predicted, probability = [None] * rows, np.full(rows, np.nan)
        zero_shot_note = zero_shot_note or "zero-shot was not computed"
    images = _images_frame(np.arange(rows), paths, labels, (codes[neighbours.indices] == codes[:, None]).mean(axis=1),
                           [names[i] for i in suggested], mean_similarity, predicted, probability)
    threshold, rule = near_threshold(neighbours.similarities[:, 0], params.near_threshold)
    duplicates, exact_note = _duplicates(vectors, neighbours, codes, paths, labels, hashes, threshold)
    results = QualityResults(params, images, neighbours, pd.DataFrame(), duplicates, threshold, rule, exact_note,
                             zero_shot_note)
    results.labels = _per_label(results, names)
    return results


def _images_frame(row, path, label, agreement, suggested, suggested_similarity, zero_shot, probability) -> pd.DataFrame:
    """The per-image table with the same dtypes whether just computed or read back (text: pandas' default string type)."""
    return pd.DataFrame({
        "row": np.asarray(row, np.int64), "path": _texts(path), "class": _texts(label),
        "agreement": np.asarray(agreement, np.float64), "suggested": _texts(suggested),
        "suggested_similarity": np.asarray(suggested_similarity, np.float64),
        "zero_shot": _texts(zero_shot, series=True),  # all None: object; else a string column
        "zero_shot_probability": np.asarray(probability, np.float32),
    })


def _texts(values, series: bool = False) -> pd.Series | list:
    """A text column for `_images_frame`: a Series as it is (read back from Arrow: `doggos.base.store.text_series`),
    anything else as a list, or with `series` a Series of it (pandas picks its default string type, or object)."""
    if isinstance(values, pd.Series):
        return values.reset_index(drop=True)
    return pd.Series(list(values), dtype=None) if series else list(values)


def _suggest(neighbours: Neighbours, codes: np.ndarray, count: int,
             voters: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the neighbours' majority label code (ties: summed similarity, then code, which is name order) and
    the mean similarity of the neighbours that carry it. `voters`: which rows may vote (excluded images do not); a row
    none of whose neighbours votes is suggested its own label, with similarity NaN."""
    rows, k = neighbours.indices.shape
    if rows == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    owner = np.repeat(np.arange(rows), k)
    flat, similarities = neighbours.indices.ravel(), neighbours.similarities.ravel()
    if voters is not None:
        votes_of = voters[flat]
        owner, flat, similarities = owner[votes_of], flat[votes_of], similarities[votes_of]
    keys = (owner * count + codes[flat]).astype(np.int64)
    unique, inverse = np.unique(keys, return_inverse=True)
    votes = np.bincount(inverse)
    summed = np.bincount(inverse, weights=similarities.astype(np.float64))
    row, code = unique // count, unique % count
    order = np.lexsort((code, -summed, -votes, row))
    first = order[np.concatenate([[0], np.nonzero(np.diff(row[order]))[0] + 1])] if len(order) else order
    if voters is None:
        return code[first], summed[first] / votes[first]
    suggested, similarity = codes.astype(np.int64).copy(), np.full(rows, np.nan)
    suggested[row[first]], similarity[row[first]] = code[first], summed[first] / votes[first]
    return suggested, similarity


def _duplicates(vectors, neighbours, codes, paths, labels, hashes, threshold) -> tuple[pd.DataFrame, str | None]:
    """Exact pairs (shared hash) and near pairs (neighbours at or above `threshold`), each once, urgent first."""
    rows, k = neighbours.indices.shape
    close = neighbours.similarities.ravel() >= threshold
    one, other = np.repeat(np.arange(rows), k)[close], neighbours.indices.ravel()[close]
    near = pd.DataFrame({"a": np.minimum(one, other), "b": np.maximum(one, other),
                         "similarity": neighbours.similarities.ravel()[close].astype(np.float64)})
    near = near.groupby(["a", "b"], as_index=False)["similarity"].max()  # a pair seen from both sides: once
    near["kind"] = "near"
    exact, note = _exact_pairs(hashes, rows)
    if len(exact):
        exact = exact.merge(near[["a", "b", "similarity"]], on=["a", "b"], how="left")
        missing = exact["similarity"].isna().to_numpy()  # copies that were not each other's neighbours
        if missing.any():
            side_a = normalise(_rows(vectors, exact["a"].to_numpy()[missing]))
            side_b = normalise(_rows(vectors, exact["b"].to_numpy()[missing]))
            exact.loc[missing, "similarity"] = (side_a * side_b).sum(axis=1).astype(np.float64)
        exact["kind"] = "exact"
        near = near[~near.set_index(["a", "b"]).index.isin(exact.set_index(["a", "b"]).index)]
    frame = pd.concat([exact, near], ignore_index=True) if len(exact) else near
    a, b = frame["a"].to_numpy(np.int64), frame["b"].to_numpy(np.int64)
    frame = frame.assign(path_a=[paths[i] for i in a], path_b=[paths[i] for i in b], class_a=[labels[i] for i in a],
                         class_b=[labels[i] for i in b], cross_label=codes[a] != codes[b], _near=frame["kind"] != "exact")
    frame = frame.sort_values(["cross_label", "_near", "similarity", "a", "b"], ascending=[False, True, False, True, True],
                              kind="mergesort")
    return _typed_duplicates(frame), note


def _rows(vectors, rows: np.ndarray) -> np.ndarray:
    return vectors.take(rows) if isinstance(vectors, StoredTiles) else vectors[rows]


def _exact_pairs(hashes, rows: int) -> tuple[pd.DataFrame, str | None]:
    """(a, b) pairs of rows with the same content hash; rows with no hash (None) take no part."""
    if hashes is None:
        return pd.DataFrame({"a": [], "b": []}, dtype="int64"), \
            "this run has no content hashes (made before they were recorded): exact duplicates were not checked"
    if len(hashes) != rows:
        raise ValueError(f"hashes: expected one per row ({rows}), got {len(hashes)}")
    known = pd.Series(list(hashes), dtype=object)
    known = known[known.notna()]
    pairs = []
    for members in known.groupby(known, sort=False).indices.values():
        members = sorted(int(known.index[m]) for m in members)
        pairs += [(members[0], m) for m in members[1:]] if len(members) > MAX_GROUP_PAIRS \
            else list(itertools.combinations(members, 2))
    return pd.DataFrame(pairs or None, columns=["a", "b"], dtype="int64"), None


def _typed_duplicates(frame: pd.DataFrame) -> pd.DataFrame:
    """The duplicates table with the same dtypes whether just computed or read back."""
    types = dict(zip(DUPLICATE_COLUMNS, (np.int64, np.int64, None, None, None, None, None, np.float64, bool)))
    return pd.DataFrame({c: pd.Series(frame[c].tolist(), dtype=t) for c, t in types.items()})


def _labels_frame(label, images, purity, confused_with, likely_mislabeled, zero_shot_accuracy) -> pd.DataFrame:
    """The per-label table with the same dtypes whether just computed or read back."""
    return pd.DataFrame({
        "label": list(label), "images": np.asarray(images, np.int64), "purity": np.asarray(purity, np.float64),
        "confused_with": pd.Series(list(confused_with), dtype=None),  # None where a label is never confused
        "likely_mislabeled": np.asarray(likely_mislabeled, np.int64),
        "zero_shot_accuracy": np.asarray([math.nan if v is None else v for v in zero_shot_accuracy], np.float64),
    })


def _per_label(results: QualityResults, names: list[str]) -> pd.DataFrame:
    images = results.in_dataset()
    by_label = images.groupby("class")
    wrong = results.likely_mislabeled()
    confused = {}
    for label, counts in wrong.groupby("class")["suggested"]:
        counts = counts.value_counts()
        confused[label] = sorted(counts[counts == counts.max()].index)[0]  # ties: the first name
    zero_shot_right = (images["zero_shot"] == images["class"]).groupby(images["class"]).mean()
    has_zero_shot = images["zero_shot"].notna().any()
    return _labels_frame(
        names, by_label.size().reindex(names, fill_value=0), by_label["agreement"].mean().reindex(names),
        [confused.get(n) for n in names], wrong.groupby("class").size().reindex(names, fill_value=0),
        zero_shot_right.reindex(names) if has_zero_shot else [None] * len(names))
