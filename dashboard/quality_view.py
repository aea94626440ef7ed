"""What the Quality page and the Map's "label agreement" colour show from a run's label-quality results (no Streamlit).

Tables, captions and CSV worklists come from a `doggos.explore.quality.QualityResults`; the confusion chart is a
plain Vega-Lite spec, so every decision the pages make can be tested without a browser. Text here is plain: the pages
escape it where they show it (Vega draws the chart's labels as text: nothing to escape there).
"""

from __future__ import annotations

import csv
import io
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from doggos.base import units
from doggos.explore.neighbours import check_k
from doggos.explore.quality import QualityParams, QualityResults

SUSPECT_CSV_COLUMNS = ("path", "filed_label", "suggested_label", "agreement", "zero_shot_label", "strongest")
DUPLICATE_CSV_COLUMNS = ("path_a", "path_b", "label_a", "label_b", "kind", "similarity", "cross_label")
# Low agreement in a strong red, high agreement in a quiet blue-grey: suspects stand out on a busy map.
AGREEMENT_SCALE = [[0.0, "#c0181b"], [0.35, "#f07d22"], [0.7, "#c9d6e3"], [1.0, "#9db4cc"]]
CONFUSION_SCALE = "blues"  # a cell's share of its filed label: one hue, darker is more (a Vega scheme)
CELL_PARAM = "cell"  # the confusion chart's selection parameter: the clicked cell
SELECTED_CELL = "#f07d22"  # the clicked cell's outline
CELL_TEXT_MAX_LABELS = 25  # above this many labels the counts no longer fit inside the heatmap's cells


def params_from_form(k, template: str, rows: int | None = None) -> QualityParams:
    """The form's values as QualityParams; a ValueError names the field ("k", "template"). With `rows`, k must also be
    smaller than the run's image count (each image needs k neighbours besides itself)."""
    params = QualityParams(k=k, template=(template or "").strip())
    if rows is not None:
        check_k(params.k, rows)
    return params


def label_checks_off(results: QualityResults) -> str | None:
    """What the Quality page says in place of its label checks for a run of one label (a sentence); None when they
    apply. Its figures then read '–', never '100 %' or '0 suspects'."""
    note = results.label_checks_note
    return None if note is None else f"{note[:1].upper()}{note[1:]}."


def label_table(results: QualityResults) -> pd.DataFrame:
    """One row per label for st.dataframe, least pure first: label, images, purity, zero-shot accuracy (NaN when
    zero-shot is unavailable), most confused with ("" when never), likely mislabeled. Purity and accuracy are in
    percent (`units.percent`), for a column formatted with units.SHARE_COLUMN: '28 %', as every share reads."""
    labels = results.labels
    table = pd.DataFrame({
        "label": labels["label"].astype(str), "images": labels["images"], "purity": units.percent(labels["purity"]),
        "zero-shot accuracy": units.percent(labels["zero_shot_accuracy"]),
        "most confused with": labels["confused_with"].fillna("").astype(str),
        "likely mislabeled": labels["likely_mislabeled"],
    })
    return table.sort_values(["purity", "label"], kind="mergesort", ignore_index=True)


def confusion_cells(results: QualityResults) -> pd.DataFrame:
    """The confusion matrix's non-empty cells: filed, suggested (names and their positions on the axes), images, and
    share (of the filed label's images)."""
    matrix = results.confusion()
    counts = matrix.to_numpy()
    totals = counts.sum(axis=1, keepdims=True)
    filed, suggested = np.nonzero(counts)
    names = list(matrix.index)
    return pd.DataFrame({
        "filed": [names[i] for i in filed], "suggested": [names[j] for j in suggested],
        "filed_index": filed.astype(np.int64), "suggested_index": suggested.astype(np.int64),
        "images": counts[filed, suggested].astype(np.int64),
        "share": (counts[filed, suggested] / np.maximum(totals[filed, 0], 1)).astype(np.float64),
    })


def confusion_chart(results: QualityResults, cells: pd.DataFrame | None = None) -> dict:
    """The confusion heatmap as a Vega-Lite spec (rows: filed label, columns: neighbours' suggestion; colour: share of
    the filed label), for st.vega_lite_chart with on_select.

    Vega-Lite, not Plotly: Streamlit's Plotly element makes the browser load and compile 4.7 MB of JavaScript, ~1.5 s
    of a page's first render on a 2-core machine; Vega's is 0.8 MB. Each non-empty cell is a rect (an empty cell
    shows the background, as a zero share would); clicking one selects it as {filed_index, suggested_index} under
    CELL_PARAM (`cell_from_selection`). Labels are data, drawn as text: no markup is read in them. `cells`: the
    results' `confusion_cells`, when already at hand.
    """
    names = [str(name) for name in results.labels["label"]]
    cells = confusion_cells(results) if cells is None else cells
    values = [{"filed": filed, "suggested": suggested, "filed_index": int(i), "suggested_index": int(j),
               "images": int(count), "share": float(share)}
              for filed, suggested, i, j, count, share in zip(
                  cells["filed"], cells["suggested"], cells["filed_index"], cells["suggested_index"], cells["images"],
                  cells["share"])]
    selected = {"param": CELL_PARAM, "empty": False}
    rect = {
        "mark": {"type": "rect", "cursor": "pointer"},
        "params": [{"name": CELL_PARAM, "select": {"type": "point", "fields": ["filed_index", "suggested_index"]}}],
        "encoding": {
            "color": {"field": "share", "type": "quantitative", "title": ["share of", "filed label"],
                      "scale": {"scheme": CONFUSION_SCALE, "domain": [0, 1]}, "legend": {"format": ".0%"}},
            # A clicked cell gets an orange outline; the rest none.
            "stroke": {"condition": {**selected, "value": SELECTED_CELL}, "value": None},
            "strokeWidth": {"condition": {**selected, "value": 2}, "value": 0},
        },
    }
    layers = [rect]
    if len(names) <= CELL_TEXT_MAX_LABELS:  # the counts fit inside the cells
        layers.append({
            "mark": {"type": "text", "fontSize": 11},
            "encoding": {"text": {"field": "images", "type": "quantitative", "format": ","},
                         "color": {"condition": {"test": "datum.share > 0.5", "value": "white"}, "value": "black"}},
        })
    axis = {"type": "nominal", "scale": {"domain": names}, "sort": None}
    return {
        "data": {"values": values},
        "height": max(360, min(900, 160 + 28 * len(names))),
        "encoding": {
            "x": {"field": "suggested", **axis, "axis": {"title": "neighbours say", "orient": "top", "labelAngle": -45,
                                                          "labelLimit": 160}},
            "y": {"field": "filed", **axis, "axis": {"title": "filed as", "labelLimit": 160}},
            "tooltip": [{"field": "filed", "title": "filed as"}, {"field": "suggested", "title": "neighbours say"},
                        {"field": "images", "type": "quantitative", "format": ","},
                        {"field": "share", "type": "quantitative", "format": ".0%", "title": "share of filed label"}],
        },
        "layer": layers,
        "config": {"axis": {"grid": False}, "view": {"stroke": None}},
    }


def cell_from_selection(points: Iterable[dict], names: Sequence[str]) -> tuple[str, str] | None:
    """(filed, suggested) of the clicked confusion cell, from a chart selection's points; None when there is none.

    A point is what `confusion_chart`'s CELL_PARAM holds ({"filed_index", "suggested_index"}), or a Plotly point
    whose customdata is [filed index, suggested index]."""
    for point in points or []:
        if not isinstance(point, dict):
            continue
        data = point.get("customdata")
        if "filed_index" in point:
            data = [point.get("filed_index"), point.get("suggested_index")]
        if isinstance(data, dict):  # a row of a typed array comes back as {"0": filed, "1": suggested}
            data = [data.get("0"), data.get("1")]
        if isinstance(data, (list, tuple)) and len(data) == 2:
            try:
                filed, suggested = int(data[0]), int(data[1])
            except (TypeError, ValueError):
                continue
            if 0 <= filed < len(names) and 0 <= suggested < len(names):
                return names[filed], names[suggested]
    return None


def cell_images(results: QualityResults, filed: str, suggested: str) -> pd.DataFrame:
    """The images behind one confusion cell (filed under `filed`, neighbours say `suggested`), least agreement first;
    columns row, path, label, suggested, agreement, zero_shot (thumbnail_grid's row/label/path included)."""
    images = results.in_dataset()  # as the confusion matrix counts them
    chosen = images[(images["class"] == filed) & (images["suggested"] == suggested)]
    chosen = chosen.sort_values(["agreement", "path"], kind="mergesort")
    return _as_items(chosen)


def suspects(results: QualityResults) -> pd.DataFrame:
    """The likely mislabeled, strongest first (neighbours and zero-shot both disagree with the folder), each part in
    the results' ranking; columns row, path, label, suggested, agreement, suggested_similarity, zero_shot,
    zero_shot_probability, strongest."""
    ranked = results.likely_mislabeled()
    strongest = (ranked["zero_shot"].notna() & (ranked["zero_shot"] != ranked["class"])).to_numpy(bool)
    ordered = pd.concat([ranked[strongest], ranked[~strongest]])
    items = _as_items(ordered)
    items["strongest"] = np.concatenate([np.ones(strongest.sum(), bool), np.zeros((~strongest).sum(), bool)])
    return items


def suspect_caption(item) -> str:
    """"filed as X · neighbours say Y · zero-shot says Z" (the zero-shot part only when there is one)."""
    parts = [f"filed as {item['label']}", f"neighbours say {item['suggested']}"]
    if _present(item.get("zero_shot")):
        parts.append(f"zero-shot says {item['zero_shot']}")
    return " · ".join(parts)


def suspects_csv(results: QualityResults, ranked: pd.DataFrame | None = None) -> str:
    """The relabel worklist, strongest suspects first: path, filed_label, suggested_label, agreement, zero_shot_label
    (empty when unavailable), strongest (true/false). `ranked`: the results' `suspects`, when already at hand."""
    ranked = suspects(results) if ranked is None else ranked
    rows = [(s["path"], s["label"], s["suggested"], f"{s['agreement']:.4f}",
             s["zero_shot"] if _present(s["zero_shot"]) else "", "true" if s["strongest"] else "false")
            for s in ranked.to_dict("records")]
    return _csv(SUSPECT_CSV_COLUMNS, rows)


def duplicates_csv(results: QualityResults) -> str:
    """Every duplicate pair, cross-label ones first: path_a, path_b, label_a, label_b, kind (exact/near), similarity,
    cross_label (true/false)."""
    rows = [(d["path_a"], d["path_b"], d["class_a"], d["class_b"], d["kind"], f"{d['similarity']:.6f}",
             "true" if d["cross_label"] else "false") for d in results.duplicates.to_dict("records")]
    return _csv(DUPLICATE_CSV_COLUMNS, rows)


def duplicate_caption(pair) -> str:
    """One pair in words: "exact copy (identical files)" or "near duplicate, similarity 0.9987", and whether its two
    images are filed under different labels."""
    kind = ("exact copy (identical files)" if pair["kind"] == "exact"
            else f"near duplicate, similarity {units.score(pair['similarity'], digits=4)}")
    where = (f"filed under different labels: {pair['class_a']} and {pair['class_b']}" if pair["cross_label"]
             else f"both filed as {pair['class_a']}")
    return f"{kind} · {where}"


def neighbours_of(results: QualityResults, row: int) -> pd.DataFrame:
    """Row `row`'s stored neighbours, best first: row, path, label, similarity, same_label (filed as `row` is). After
    label decisions, an excluded neighbour's label reads "excluded": it no longer votes."""
    rows = results.neighbours.indices[int(row)]
    images = results.images
    labels = images["class"].to_numpy()[rows]
    if "excluded" in images:
        labels = np.where(images["excluded"].to_numpy(bool)[rows], "excluded", labels)
    return pd.DataFrame({
        "row": rows.astype(np.int64), "path": images["path"].to_numpy()[rows], "label": labels,
        "similarity": results.neighbours.similarities[int(row)].astype(np.float64),
        "same_label": labels == images["class"].iloc[int(row)],
    })


def _as_items(images: pd.DataFrame) -> pd.DataFrame:
    """Per-image results with `class` as `label` (what frame.thumbnail_grid reads), a fresh index."""
    columns = ["row", "path", "class", "suggested", "agreement", "suggested_similarity", "zero_shot",
               "zero_shot_probability"]
    return images[columns].rename(columns={"class": "label"}).reset_index(drop=True)


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and value != value)


def _csv(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def queue_position(queue: pd.DataFrame, row) -> int:
    """Where the review queue stands: the position of `row` (the image on show) when it is still queued, else the
    first image without a decision, else the first."""
    rows = queue["row"].to_numpy()
    if row is not None:
        found = np.flatnonzero(rows == int(row))
        if len(found):
            return int(found[0])
    open_ = np.flatnonzero(~queue["decided"].to_numpy(bool))
    return int(open_[0]) if len(open_) else 0


def next_open(queue: pd.DataFrame, position: int) -> int:
    """The next position after `position` (wrapping round) whose image has no decision; position + 1 when none has."""
    decided = queue["decided"].to_numpy(bool)
    count = len(decided)
    for step in range(1, count):
        candidate = (position + step) % count
        if not decided[candidate]:
            return candidate
    return (position + 1) % max(count, 1)


def queue_facts(item) -> str:
    """What the checks say about a queued image, in one line: its folder label, its label now when a decision changed
    it, the neighbours' suggestion with their agreement, and zero-shot's opinion when there is one."""
    parts = [f"filed as {item['folder_label']}"]
    if item["label"] != item["folder_label"]:
        parts.append(f"now {item['label']}")
    parts.append(f"neighbours say {item['suggested']} (agreement {units.share(item['agreement'])})")
    if _present(item.get("zero_shot")):
        parts.append(f"zero-shot says {item['zero_shot']} ({units.share(item['zero_shot_probability'])})")
    return " · ".join(parts)
