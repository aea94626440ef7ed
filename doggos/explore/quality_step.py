"""The label-quality post-run step (`QUALITY`): `doggos.explore.quality` on a run, zero-shot from its text tower, files.

Files in `<run>/quality/`, per `QualityParams.name` NAME, each written atomically, the JSON last (its presence means the
results are complete): `NAME.parquet`, one row per image: row (int64), path, class, agreement (float64), suggested,
suggested_similarity (float64), neighbours (fixed_size_list<int64>[k], row ids, best first), similarities
(fixed_size_list<float32>[k]), zero_shot (string, null when unavailable), zero_shot_probability (float32, null when
unavailable). `NAME.json`: {"version", "name", "params": {k, template, near_threshold}, "counts": {images, labels,
likely_mislabeled, strongest_suspects, exact_duplicate_pairs, near_duplicate_pairs, cross_label_duplicate_pairs},
"near_threshold": {"value", "rule"}, "exact_duplicates": {"checked", "note"}, "zero_shot": {"available", "accuracy",
"reason", "template"}, "labels": [{label, images, purity, confused_with, likely_mislabeled, zero_shot_accuracy}],
"duplicates": [{a, b, path_a, path_b, class_a, class_b, kind, similarity, cross_label}]}.
`prompt_features.parquet` (`RunDir.prompt_features`, written by the run's driver): the zero-shot prompts' text features
as the run's embedder actors computed them; the step uses them instead of loading a text tower when they cover its
prompts.
"""

from __future__ import annotations

import logging
import math
import threading
import weakref
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from doggos.base import store
from doggos.base.processes import return_free_memory
from doggos.base.rundir import RunDir, atomic_output, read_json, run_dir_of, write_json_atomic
from doggos.explore.neighbours import Neighbours, check_k, plan, put_tiles
from doggos.explore.quality import (DEFAULT_PARAMS, DUPLICATE_COLUMNS, HASH_COLUMN, LABEL_COLUMNS, VERSION,
                                    QualityParams, QualityResults, _images_frame, _labels_frame, _typed_duplicates,
                                    assess, label_names, prompts, zero_shot)
from doggos.runs.steps import Step, slots_from_env

log = logging.getLogger("doggos")


def compute(run: RunDir, params: QualityParams, out: Path) -> None:
    """The step's work: zero-shot text features first (from the run, else the model's text tower, loaded and let go),
    then the embeddings into Ray's object store a tile at a time, neighbours and zero-shot scores read from there, the
    files. Peak memory is one copy of the matrix (in the store) plus the tasks' tiles: never the matrix in this process."""
    from doggos.base.records import read_manifest
    from doggos.pipeline.cluster import ray_connection

    manifest = read_manifest(run)
    model = manifest.model if manifest else (read_json(run.config, {}) or {}).get("model")
    labels, paths, hashes = run_rows(run)
    check_k(params.k, len(labels))
    names = label_names(labels)
    texts, scale, note = text_features(run, names, model, params.template)
    with ray_connection(None):
        stored = put_tiles(store.embedding_chunks(run, plan(len(labels))[1]))
        try:
            scored = None if texts is None else zero_shot(stored, texts, scale)
            results = assess(stored, labels, paths, params, hashes=hashes, zero_shot_result=scored,
                             zero_shot_labels=names, zero_shot_note=note)
        finally:
            del stored  # the store's copy goes with the last reference
    return_free_memory()  # before the files are built: what reading and scoring freed
    write_results(run.quality, params, results)
    if Path(out) != result_paths(run.quality, params)[1]:
        raise RuntimeError(f"the quality step wrote {result_paths(run.quality, params)[1]}, expected {out}")


def run_prompts(paths: list[str], params: QualityParams = DEFAULT_PARAMS) -> list[str]:
    """The zero-shot prompts of a run about to embed these files (one per label, as the step will ask for them)."""
    from doggos.pipeline.sources import label_of

    return prompts(label_names([label_of(path) for path in paths]), params.template)


def text_features(run: RunDir, names: list[str], model: str | None, template: str):
    """(text features of the labels' prompts, the model's logit scale, None), or (None, None, why zero-shot is not
    available).

    The embedder actors computed them during the run when it ran the step (`run.prompt_features`); otherwise (an older
    run, another template) the model's text tower is loaded here, used and let go before the matrix is read."""
    from doggos.pipeline.encoders import EncoderUnavailable, TextEncoder

    texts = prompts(names, template)
    found, scale = stored_prompt_features(run, texts)
    if found is not None:
        log.info("zero-shot: %d prompts embedded by the run's embedder actors", len(texts))
        return found, scale if scale is not None else logit_scale(model), None
    if not model:
        return None, None, "the run does not record its model"
    log.info("zero-shot: loading the text tower of %s for %d prompts", model, len(texts))
    try:
        features = TextEncoder(model).encode(texts)  # not encoders.text_encoder's cache: a step needs it once
    except EncoderUnavailable as error:
        return None, None, f"the model's text tower cannot be loaded here: {error.why}"
    except ValueError as error:  # a prompt the model cannot read whole (a very long label)
        return None, None, str(error)
    return features, logit_scale(model), None


def stored_prompt_features(run: RunDir, texts: list[str]) -> tuple[np.ndarray | None, float | None]:
    """(the run's stored text features of exactly these prompts, in their order, and the logit scale stored with them);
    (None, None) unless it holds all of them."""
    path = run_dir_of(run).prompt_features
    if not path.exists():
        return None, None
    table = pq.read_table(path)
    scale = (table.schema.metadata or {}).get(b"logit_scale")
    matrix = store.vector_matrix(table.column("features").combine_chunks())
    row_of = {prompt: row for row, prompt in enumerate(table.column("prompt").to_pylist())}
    if not all(text in row_of for text in texts):
        return None, None
    return matrix[[row_of[text] for text in texts]], None if scale is None else float(scale)


def logit_scale(model: str) -> float:
    """CLIP's learned temperature (log scale) from the model's weights; CLIP's initial value when they do not say."""
    from transformers import CLIPConfig

    from doggos.pipeline.encoders import local_path

    weights, folder = None, local_path(model) if model else None
    if folder is not None:  # a model folder (that may not be on this machine)
        weights = folder / "model.safetensors"
    elif model:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "model.safetensors")
        weights = Path(cached) if isinstance(cached, str) else None
    if weights is not None and weights.exists():
        from safetensors import safe_open

        with safe_open(str(weights), framework="np") as handle:
            if "logit_scale" in handle.keys():
                return float(np.asarray(handle.get_tensor("logit_scale")).reshape(-1)[0])
    return float(CLIPConfig().logit_scale_init_value)


def assess_run(run, params: QualityParams = DEFAULT_PARAMS, **options) -> QualityResults:
    """`assess` on a finished run's embeddings (loaded whole), with its content hashes when it recorded them."""
    vectors, _ = store.load_embeddings(run)
    labels, paths, hashes = run_rows(run)
    return assess(vectors, labels, paths, params, hashes=hashes, **options)


def run_rows(run) -> tuple[list[str], list[str], list | None]:
    """(label, path, content hash) per row of a run, in row-id order; hashes None when the run has none (HASH_COLUMN)."""
    files = store.embedding_files(run)
    columns = ["class", "path"] + ([HASH_COLUMN] if files and HASH_COLUMN in pq.read_schema(files[0]).names else [])
    table = store.read_columns(run, columns)
    hashes = table.column(HASH_COLUMN).to_pylist() if HASH_COLUMN in columns else None
    return table.column("class").to_pylist(), table.column("path").to_pylist(), hashes


def result_paths(folder, params: QualityParams) -> tuple[Path, Path]:
    """(NAME.parquet, NAME.json) in `folder`; the JSON is written last, so it says the results are complete."""
    return Path(folder) / f"{params.name}.parquet", Path(folder) / f"{params.name}.json"


def write_results(folder, params: QualityParams, results: QualityResults) -> Path:
    """Write the per-image Parquet, then the JSON summary, each atomically; returns the JSON's path."""
    if params != results.params:
        raise ValueError(f"params: {params} differ from the results' {results.params}")
    table_path, summary_path = result_paths(folder, params)
    images, k = results.images, params.k
    table = pa.table({
        "row": pa.array(images["row"], pa.int64()), "path": pa.array(images["path"], pa.string()),
        "class": pa.array(images["class"], pa.string()), "agreement": pa.array(images["agreement"], pa.float64()),
        "suggested": pa.array(images["suggested"], pa.string()),
        "suggested_similarity": pa.array(images["suggested_similarity"], pa.float64()),
        "neighbours": pa.FixedSizeListArray.from_arrays(pa.array(results.neighbours.indices.ravel(), pa.int64()), k),
        "similarities": pa.FixedSizeListArray.from_arrays(
            pa.array(results.neighbours.similarities.ravel(), pa.float32()), k),
        "zero_shot": pa.array(images["zero_shot"], pa.string(), from_pandas=True),
        "zero_shot_probability": pa.array(images["zero_shot_probability"], pa.float32(), from_pandas=True),
    })
    with atomic_output(table_path) as tmp:
        pq.write_table(table, tmp)
    write_json_atomic(summary_path, summary(results))
    return summary_path


def read_results(folder, params: QualityParams) -> QualityResults:
    """What `write_results` wrote; FileNotFoundError until both files are there."""
    table_path, summary_path = result_paths(folder, params)
    info = read_json(summary_path)
    if info is None or not table_path.exists():
        raise FileNotFoundError(f"no quality results {params.name} in {folder}")
    if info.get("version") != VERSION:
        raise ValueError(f"{summary_path}: layout version {info.get('version')!r}, this doggos reads {VERSION}")
    neighbours = StoredNeighbours(table_path)  # read when first asked for: most views never look at them
    columns = [name for name in pq.read_schema(neighbours.file).names if name not in StoredNeighbours.COLUMNS]
    table = pq.read_table(neighbours.file, columns=columns)  # the same file as the neighbours, whatever happens
    # Text stays in Arrow (pandas' default string type): no Python string per row, ~1 s less for 1,000,000 rows.
    text, numbers = store.text_series, lambda name: table.column(name).to_numpy(zero_copy_only=False)
    images = _images_frame(numbers("row"), text(table.column("path")), text(table.column("class")),
                           numbers("agreement"), text(table.column("suggested")), numbers("suggested_similarity"),
                           text(table.column("zero_shot")), numbers("zero_shot_probability"))
    labels = _labels_frame(*([row[c] for row in info["labels"]] for c in LABEL_COLUMNS))
    duplicates = _typed_duplicates(pd.DataFrame(info["duplicates"], columns=DUPLICATE_COLUMNS))
    return QualityResults(params, images, neighbours, labels, duplicates, info["near_threshold"]["value"],
                          info["near_threshold"]["rule"], info["exact_duplicates"]["note"], info["zero_shot"]["reason"])


class StoredNeighbours:
    """A results file's neighbours (`Neighbours`' indices, similarities and k), read from it the first time they are
    asked for: the Quality page shows them only in a suspect's dialog, and they are 40 % of the file (1,000,000 rows
    × k=10: 120 MB, ~0.2 s). The file stays open until then, so results written again meanwhile (a new file renamed
    over it) never mix with these. Thread-safe: one read, whichever session asks first."""

    COLUMNS = ("neighbours", "similarities")

    def __init__(self, path):
        self.path = Path(path)
        self.file = pa.OSFile(str(self.path), "r")  # a native handle (read_results reads the rest of the table from it)
        self._close = weakref.finalize(self, self.file.close)  # never read: closed when these results go
        self._loaded: Neighbours | None = None
        self._lock = threading.Lock()

    def load(self) -> Neighbours:
        with self._lock:
            if self._loaded is None:
                table = pq.read_table(self.file, columns=list(self.COLUMNS))
                k, rows = table.schema.field("neighbours").type.list_size, table.num_rows
                flat = {name: table.column(name).combine_chunks().flatten().to_numpy() for name in self.COLUMNS}
                self._loaded = Neighbours(flat["neighbours"].astype(np.int64).reshape(rows, k),
                                          flat["similarities"].astype(np.float32).reshape(rows, k))
                self._close()
            return self._loaded

    @property
    def indices(self) -> np.ndarray:
        return self.load().indices

    @property
    def similarities(self) -> np.ndarray:
        return self.load().similarities

    @property
    def k(self) -> int:
        return self.load().k


def summary(results: QualityResults) -> dict:
    """The JSON summary written beside the per-image table (its layout is in the module docstring)."""
    duplicates = results.duplicates
    return {
        "version": VERSION, "name": results.params.name, "params": asdict(results.params),
        "counts": {
            "images": len(results.in_dataset()), "labels": len(results.labels),
            "likely_mislabeled": len(results.likely_mislabeled()), "strongest_suspects": len(results.strongest_suspects()),
            "exact_duplicate_pairs": int((duplicates["kind"] == "exact").sum()),
            "near_duplicate_pairs": int((duplicates["kind"] == "near").sum()),
            "cross_label_duplicate_pairs": int(duplicates["cross_label"].sum()),
        },
        "near_threshold": {"value": results.near_threshold, "rule": results.near_rule},
        "exact_duplicates": {"checked": results.exact_note is None, "note": results.exact_note},
        "zero_shot": {"available": results.zero_shot_note is None, "accuracy": results.zero_shot_accuracy,
                      "reason": results.zero_shot_note, "template": results.params.template},
        "label_checks": {"available": results.label_checks_note is None, "reason": results.label_checks_note},
        "labels": [_plain(row) for row in results.labels.to_dict("records")],
        "duplicates": [_plain(pair) for pair in duplicates.to_dict("records")],
    }


def report_json(results: QualityResults, top: int = 50, decisions: int = 0) -> dict:
    """The findings for people and tools: the `top` suspects and duplicates, every label (schema: module docstring).
    Counts also say how many images were reviewed and excluded by label decisions (re-checked results,
    `doggos.explore.label_review`), and how many `decisions` are in effect."""
    full = summary(results)
    images = results.images
    full["counts"].update(
        reviewed=int((images["reviewed"].to_numpy(bool) & ~images["excluded"].to_numpy(bool)).sum())
        if "reviewed" in images else 0,
        excluded=int(images["excluded"].to_numpy(bool).sum()) if "excluded" in images else 0,
        decisions=int(decisions))
    suspects = results.likely_mislabeled()
    strongest = suspects["zero_shot"].notna() & (suspects["zero_shot"] != suspects["class"])
    suspects = pd.concat([suspects[strongest], suspects[~strongest]]).head(top)
    return {
        "suspects": [_plain({"row": s["row"], "path": s["path"], "class": s["class"], "suggested": s["suggested"],
                             "agreement": s["agreement"], "suggested_similarity": s["suggested_similarity"],
                             "zero_shot": s["zero_shot"], "zero_shot_probability": s["zero_shot_probability"],
                             "strongest": bool(flag)})
                     for s, flag in zip(suspects.to_dict("records"), strongest.reindex(suspects.index))],
        "duplicates": [{"paths": [d["path_a"], d["path_b"]], "classes": [d["class_a"], d["class_b"]],
                        "similarity": d["similarity"], "kind": d["kind"], "cross_label": d["cross_label"]}
                       for d in full["duplicates"][:top]],
        "labels": full["labels"],
        **{key: full[key] for key in ("counts", "near_threshold", "exact_duplicates", "zero_shot", "label_checks")},
        **({"zero_shot": {**full["zero_shot"], "available": False, "reason": results.label_checks_note}}
           if results.label_checks_note else {}),  # one label: zero-shot cannot miss, so it says nothing
    }


def _plain(record: dict) -> dict:
    """JSON-ready: numpy scalars as Python numbers, NaN as None."""
    out = {}
    for key, value in record.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and math.isnan(value):
            value = None
        out[key] = value
    return out


def _default_slots() -> int:
    # The neighbour search already spreads over every core (Ray tasks): two at once would only fight for them.
    return 1


quality_slots = slots_from_env("DOGGOS_QUALITY_SLOTS", _default_slots)
QUALITY = Step(name="quality", home=f"{__name__}:QUALITY", folder="quality", phase="checking labels",
               params_type=QualityParams, compute=compute, suffix=".json", slots=quality_slots, prompts=run_prompts)
