"""Compare two finished runs: their settings, their speed, and how far their embeddings agree on the images both hold.

Agreement is measured on the images both runs embedded, matched by `path` (an image only one run holds says nothing
about the other), less those a label decision excluded from either (`doggos.base.decisions`); labels are each run's
effective ones. In each run, each shared image's k nearest shared images are found (cosine, itself excluded,
`doggos.explore.neighbours`), with k = min(K, shared images − 1):

- `neighbour_overlap`: the mean, over the shared images, of |neighbours in A ∩ neighbours in B| / k. 1.0 when the two
  runs see the same neighbourhoods (identical embeddings give exactly 1.0); near 0 when they have nothing in common.
- label purity, per run: as `doggos.explore.quality` defines it, an image's agreement is the share of its k neighbours
  filed under its own label, and a label's purity is the mean agreement of its images; `overall` is the mean over all
  the shared images. Both runs are scored on the same images with the same k, so their purities compare fairly.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doggos.base import units
from doggos.base.config import ConfigError, RunConfig, raise_all, user_message
from doggos.base.plan import ResourcePlan
from doggos.base.records import Manifest
from doggos.base.rundir import RunDir, run_dir_of
from doggos.pipeline import figures
from doggos.runs.manager import finished_manifest, resolve_run  # noqa: F401  (compare.resolve_run: the CLI's, tests')

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# numpy, pandas and pyarrow (doggos.base.store) are imported where they are used: cli.build_parser imports this module
# for add_parser, and every other command would otherwise pay about a second to load them.

K = 10  # neighbours per image for the overlap: a screenful, as doggos.explore.quality uses
SIDES = ("a", "b")
RUN_FIELDS = {"a": "run_a", "b": "run_b"}  # how the command line and errors name each run
# Settings that say nothing about how two runs differ: the output folder always does, by construction.
SKIPPED_CONFIG = ("output",)
CLUSTER_FIELDS = ("address", "nodes", "cpus", "gpus")  # what describes the cluster; its dashboard URL and node ids do not
# The per-label table: images in both runs, purity in each, b − a, and the mean neighbour overlap of the label's images.
LABEL_COLUMNS = ("label", "images", "purity_a", "purity_b", "difference", "overlap")
SETTING_COLUMNS = ("setting", "a", "b", "differs")  # the settings table: values as text, and whether they differ


# ---- which runs ----------------------------------------------------------------------------------------------------

# ---- settings ------------------------------------------------------------------------------------------------------

def settings_of(manifest: Manifest) -> dict[str, Any]:
    """Everything that may explain a difference between runs, as JSON values: the settings asked for (RunConfig names),
    what ran (`plan.*`: the resolved batch size, actors, device…), the model (`model.*`), the cluster (`ray.*`) and
    the library versions (`versions.*`)."""
    values: dict[str, Any] = {f.name: getattr(manifest.config, f.name) for f in fields(RunConfig)
                              if f.name not in SKIPPED_CONFIG}
    values.update({f"plan.{f.name}": getattr(manifest.plan, f.name) for f in fields(ResourcePlan)})
    values.update({"model.embedding_dim": manifest.embedding_dim, "model.random_weights": manifest.random_weights})
    values.update({f"ray.{name}": getattr(manifest.ray, name) for name in CLUSTER_FIELDS})
    values.update({f"versions.{name}": version for name, version in sorted(manifest.versions.items())})
    return values


def settings_table(a: Manifest, b: Manifest) -> pd.DataFrame:
    """One row per setting of either run: setting, a, b (as text), differs (bool); in settings_of's order."""
    import pandas as pd

    values_a, values_b = settings_of(a), settings_of(b)
    names = list(values_a) + [name for name in values_b if name not in values_a]
    missing = object()  # a setting one run's record does not have (an older doggos wrote it)
    rows = []
    for name in names:
        value_a, value_b = values_a.get(name, missing), values_b.get(name, missing)
        rows.append({"setting": name, "a": _shown(name, value_a, missing), "b": _shown(name, value_b, missing),
                     "differs": value_a != value_b})
    return pd.DataFrame(rows, columns=list(SETTING_COLUMNS))


def settings_diff(a: Manifest, b: Manifest) -> dict[str, list]:
    """The settings that differ: name -> [value in a, value in b] (JSON values; None where a run lacks it)."""
    values_a, values_b = settings_of(a), settings_of(b)
    names = list(values_a) + [name for name in values_b if name not in values_a]
    return {name: [values_a.get(name), values_b.get(name)] for name in names
            if name not in values_a or name not in values_b or values_a[name] != values_b[name]}


def _shown(name: str, value: Any, missing: object) -> str:
    if value is missing:
        return "(not recorded)"
    if value is None:
        return {"batch_size": "auto", "concurrency": "auto", "limit": "all", "ray_address": "local",
                "s3_endpoint": "AWS"}.get(name, "–")
    return str(value)


# ---- agreement -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Agreement:
    """How the two runs' embeddings agree on the images both hold (see the module docstring for each measure)."""

    images_in_both: int
    only_in_a: int  # images run A embedded and run B did not
    only_in_b: int
    k: int  # neighbours per image: min(K, images_in_both − 1)
    neighbour_overlap: float
    overall_purity_a: float  # mean agreement over the shared images in run A
    overall_purity_b: float
    labels: pd.DataFrame  # LABEL_COLUMNS: label, images, purity_a, purity_b, difference (b − a), overlap; by label

    def label_purity(self, side: str) -> dict[str, float]:
        """label -> purity in run `side` ("a" or "b"), for the labels that run has among the shared images."""
        column = self.labels[f"purity_{side}"]
        return {label: float(p) for label, p in zip(self.labels["label"], column) if not math.isnan(p)}


def agreement(run_a, run_b, k: int = K, threads: int | None = None) -> Agreement:
    """Neighbour overlap and label purity of two finished runs (folders, RunDirs or RunInfos) on their shared images.

    Raises ConfigError naming run_b when the runs share fewer than 2 images (neighbours need at least one other image).
    `threads` is the numpy neighbour search's (default: one per core).
    """
    from doggos.base import store
    from doggos.explore.neighbours import check_k, nearest_neighbours

    k = check_k(k)
    vectors_a, meta_a = _decided(run_a, *store.load_embeddings(run_a))
    vectors_b, meta_b = _decided(run_b, *store.load_embeddings(run_b))
    rows_a, rows_b = _rows_by_path(meta_a), _rows_by_path(meta_b)
    shared = rows_a.index.intersection(rows_b.index).sort_values()
    only_a, only_b = len(rows_a) - len(shared), len(rows_b) - len(shared)
    if len(shared) < 2:
        found = "no images" if len(shared) == 0 else f"only 1 image ({shared[0]})"
        raise ConfigError(RUN_FIELDS["b"], f"shares {found} with run_a (matched by path; "
                                           f"{units.count(len(rows_a), 'image')} in run_a, {units.count(len(rows_b))} "
                                           "in run_b): comparing neighbours needs at least 2 "
                                           "images that both runs embedded")
    k = min(k, len(shared) - 1)  # each image needs k neighbours besides itself among the shared ones
    picks = {"a": rows_a[shared].to_numpy(), "b": rows_b[shared].to_numpy()}
    vectors = {"a": vectors_a[picks["a"]], "b": vectors_b[picks["b"]]}
    labels = {"a": meta_a["label"].to_numpy()[picks["a"]], "b": meta_b["label"].to_numpy()[picks["b"]]}
    found = {side: nearest_neighbours(vectors[side], k, backend="numpy", threads=threads).indices for side in SIDES}
    # Neighbour ids are distinct within a row, so matching pairs count the intersection exactly (n × k × k booleans).
    overlap = (found["a"][:, :, None] == found["b"][:, None, :]).any(axis=2).sum(axis=1) / k
    image_agreement = {side: _agreement(found[side], labels[side]) for side in SIDES}
    return Agreement(
        images_in_both=len(shared), only_in_a=only_a, only_in_b=only_b, k=k,
        neighbour_overlap=float(overlap.mean()),
        overall_purity_a=float(image_agreement["a"].mean()), overall_purity_b=float(image_agreement["b"].mean()),
        labels=_label_table(labels, image_agreement, overlap),
    )


def _decided(run, vectors: np.ndarray, meta: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """A run's embeddings and path/label rows with its label decisions in effect: effective labels, excluded images
    left out."""
    from doggos.base import decisions

    applied = decisions.state(run).apply(meta["path"], meta["label"])
    if not applied.excluded.any() and not applied.changed.any():
        return vectors, meta
    kept = ~applied.excluded
    meta = meta.assign(label=applied.labels)[kept].reset_index(drop=True)
    return vectors[kept], meta


def _rows_by_path(meta: pd.DataFrame) -> pd.Series:
    """path -> row id; a path listed twice (never written by doggos) counts once, at its first row."""
    import numpy as np
    import pandas as pd

    rows = pd.Series(np.arange(len(meta)), index=pd.Index(meta["path"], dtype=object))
    return rows[~rows.index.duplicated()]


def _agreement(indices: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each image's share of its neighbours filed under its own label (doggos.explore.quality's `agreement`)."""
    import numpy as np

    _, codes = np.unique(labels.astype(str), return_inverse=True)
    return (codes[indices] == codes[:, None]).mean(axis=1)


def _label_table(labels: dict[str, np.ndarray], image_agreement: dict[str, np.ndarray],
                 overlap: np.ndarray) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    # Images and overlap go by run A's labels; each run's purity by its own (the same, unless a path changed label).
    by_a = pd.DataFrame({"label": labels["a"].astype(str), "purity_a": image_agreement["a"], "overlap": overlap})
    by_b = pd.DataFrame({"label": labels["b"].astype(str), "purity_b": image_agreement["b"]})
    table = by_a.groupby("label").agg(images=("overlap", "size"), purity_a=("purity_a", "mean"),
                                      overlap=("overlap", "mean"))
    table = table.join(by_b.groupby("label")["purity_b"].mean(), how="outer")
    table["images"] = table["images"].fillna(0).astype(np.int64)
    table["difference"] = table["purity_b"] - table["purity_a"]
    return table.reset_index()[list(LABEL_COLUMNS)].sort_values("label", ignore_index=True)


# ---- the whole comparison ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Comparison:
    """Two finished runs side by side: their manifests, every setting, and how their embeddings agree."""

    a: RunDir
    b: RunDir
    manifest_a: Manifest
    manifest_b: Manifest
    agreement: Agreement

    @property
    def settings(self) -> pd.DataFrame:
        return settings_table(self.manifest_a, self.manifest_b)

    @property
    def settings_diff(self) -> dict[str, list]:
        return settings_diff(self.manifest_a, self.manifest_b)

    def to_json(self) -> dict:
        """The comparison as JSON values (what `compare --json` prints)."""
        ma, mb, found = self.manifest_a, self.manifest_b, self.agreement
        return {
            "runs": {side: {"id": run.id, "path": str(run.path), "model": m.model_description, "images": m.rows,
                            "random_weights": m.random_weights}
                     for side, run, m in (("a", self.a, ma), ("b", self.b, mb))},
            "images_in_both": found.images_in_both,
            "only_in_a": found.only_in_a,
            "only_in_b": found.only_in_b,
            "throughput": {"a": ma.images_per_s, "b": mb.images_per_s},  # images/s, start to Parquet (figures.RUN_RATE)
            "throughput_ratio": speedup(ma, mb),
            "duration_s": {"a": ma.duration_s, "b": mb.duration_s},
            "embed_s": {"a": ma.embed_s, "b": mb.embed_s},
            "settings_diff": self.settings_diff,
            "k": found.k,
            "neighbour_overlap": found.neighbour_overlap,
            "label_purity": {side: found.label_purity(side) for side in SIDES},
            "overall_purity": {"a": found.overall_purity_a, "b": found.overall_purity_b},
        }


def compare_runs(run_a, run_b, k: int = K) -> Comparison:
    """Compare two finished runs (folders, RunDirs or RunInfos); ConfigErrors name run_a / run_b (all at once where
    both are unfinished)."""
    manifests, problems = {}, []
    for side, run in (("a", run_a), ("b", run_b)):
        try:
            manifests[side] = finished_manifest(run, RUN_FIELDS[side])
        except ConfigError as problem:
            problems.append(problem)
    raise_all(problems)
    return Comparison(run_dir_of(run_a), run_dir_of(run_b), manifests["a"], manifests["b"], agreement(run_a, run_b, k))


def speedup(a: Manifest, b: Manifest) -> float | None:
    """B's embedding throughput over A's (2.0: B embedded twice as many images per second); None without a rate."""
    return b.images_per_s / a.images_per_s if a.images_per_s else None


def metric_delta(difference: str) -> str | None:
    """A difference as a metric's delta: as written ('+12.5', '-1 min 06 s'), or None where it reads as no change
    ('±0 points', '±0 s', '+0.0'): Streamlit draws a rising arrow for any delta not led by '-', so a zero would
    read as a gain."""
    figure = difference.split(" (", 1)[0]  # a note after the figure ('(2.00× A)') is no part of it
    return difference if any(digit in figure for digit in "123456789") else None


# ---- plain text ----------------------------------------------------------------------------------------------------

def format_comparison(comparison: Comparison) -> str:
    """The comparison as readable text: runs, settings (* marks what differs), speed, overlap, purity per label."""
    ma, mb, found = comparison.manifest_a, comparison.manifest_b, comparison.agreement
    lines = [f"{side}: {run.id}  {units.count(m.rows, 'image')}  {m.model_description}  ({run.path})"
             for side, run, m in (("A", comparison.a, ma), ("B", comparison.b, mb))] + [""]
    table = comparison.settings
    differing = int(table["differs"].sum())
    lines.append(f"settings ({differing} of {len(table)} differ, marked *)")
    lines += _columns([["", "setting", "A", "B"]] + [["*" if row.differs else "", row.setting, row.a,
                                                      row.b if row.differs else "(same)"] for row in table.itertuples()])
    ratio = speedup(ma, mb)
    lines += ["",
              f"throughput: A {units.rate(ma.images_per_s)}, B {units.rate(mb.images_per_s)} images/s "
              f"({figures.WHOLE_RUN})"
              + (f"  (B/A {units.factor(ratio)})" if ratio is not None else ""),
              f"duration:   A {units.duration(ma.duration_s)}, B {units.duration(mb.duration_s)}"
              f"  (embedding: A {units.duration(ma.embed_s)}, B {units.duration(mb.embed_s)})",
              f"images:     {units.count(found.images_in_both)} in both, {units.count(found.only_in_a)} only in A, "
              f"{units.count(found.only_in_b)} only in B",
              "",
              f"neighbour overlap: {units.share(found.neighbour_overlap)}  (mean share of each shared image's "
              f"{found.k} "
              f"nearest neighbours that both runs agree on; k = min({K}, {units.count(found.images_in_both)} shared "
              "images − 1); cosine, itself excluded; 100 %: the same neighbours)",
              "",
              f"label purity (mean share of an image's {found.k} neighbours with its own label, on the shared images)"]
    rows = [["label", "images", "A", "B", "B−A", "overlap"]]
    for row in found.labels.itertuples():
        rows.append([row.label, units.count(row.images), units.share(row.purity_a), units.share(row.purity_b),
                     units.points(row.difference), units.share(row.overlap)])
    rows.append(["(all shared images)", units.count(found.images_in_both), units.share(found.overall_purity_a),
                 units.share(found.overall_purity_b), units.points(found.overall_purity_b - found.overall_purity_a),
                 units.share(found.neighbour_overlap)])
    lines += _columns(rows, numeric_from=1)
    if ma.random_weights or mb.random_weights:
        lines += ["", "warning: a model with RANDOM WEIGHTS made " + ("both runs" if ma.random_weights and mb.random_weights
                  else "run A" if ma.random_weights else "run B") + ": its neighbours and purity carry no meaning"]
    return "\n".join(lines)


def label_table_in_percent(labels: pd.DataFrame) -> pd.DataFrame:
    """The per-label table (LABEL_COLUMNS) for a page: purities and overlap in percent, the difference in percentage
    points, so that units.SHARE_COLUMN / units.POINTS_COLUMN show them as every other share reads ('23 %')."""
    shares = ["purity_a", "purity_b", "difference", "overlap"]
    return labels.assign(**{column: units.percent(labels[column]) for column in shares})


def _columns(rows: list[list[str]], numeric_from: int | None = None) -> list[str]:
    """Rows of text cells as aligned columns; cells from column `numeric_from` on are right-aligned."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [str(cell).rjust(width) if numeric_from is not None and i >= numeric_from else str(cell).ljust(width)
                 for i, (cell, width) in enumerate(zip(row, widths))]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


# ---- the command line ----------------------------------------------------------------------------------------------

def add_parser(commands) -> argparse.ArgumentParser:
    """Add `compare RUN_A RUN_B [--json] [--runs-dir DIR]` to an argparse subparsers object; its handler is run_command."""
    parser = commands.add_parser("compare", help="compare two finished runs: settings, speed, how their embeddings agree")
    for name, side in (("run_a", "A: the baseline"), ("run_b", "B: the run to judge against A")):
        parser.add_argument(name, metavar=name.upper(), help=f"run {side}; a run folder (as embed --out writes), "
                                                              "or a run under --runs-dir: its id, a part of it only "
                                                              "that run's id has, or its name (or the start of it)")
    parser.add_argument("--runs-dir", help="where run ids are looked up (default: $DOGGOS_RUNS_DIR or ./runs in the project)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.set_defaults(handler=run_command)
    return parser


def run_command(args: argparse.Namespace) -> int:
    """The `compare` command: 0 with the comparison on stdout; 2 with `error: …` on stderr for input to fix."""
    from doggos.runs.manager import default_root  # here: it pulls in the launcher, which the rest never needs

    root = Path(args.runs_dir).expanduser() if args.runs_dir else default_root()
    try:
        runs, problems = {}, []
        for field in RUN_FIELDS.values():
            try:
                runs[field] = resolve_run(getattr(args, field), root, field)
            except ConfigError as problem:
                problems.append(problem)
        raise_all(problems)  # both runs' problems at once
        comparison = compare_runs(runs["run_a"], runs["run_b"])
    except ValueError as error:
        print(f"error: {user_message(error)}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(comparison.to_json(), indent=2, ensure_ascii=False))
    else:
        print(format_comparison(comparison))
    return 0
