"""What the Quality page and the Map's "label agreement" colour show from a run's label-quality results (no Streamlit).

Tables, captions and CSV worklists come from a `doggos.explore.quality.QualityResults`; the figures are plain
Plotly, so every decision the pages make can be tested without a browser. Text here is plain: the pages escape it
where they show it.
"""

from __future__ import annotations

import csv
import io
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from dashboard.ui import plotly_literal
from doggos.explore.neighbours import check_k
from doggos.explore.quality import QualityParams, QualityResults

SUSPECT_CSV_COLUMNS = ("path", "filed_label", "suggested_label", "agreement", "zero_shot_label", "strongest")
DUPLICATE_CSV_COLUMNS = ("path_a", "path_b", "label_a", "label_b", "kind", "similarity", "cross_label")
# Low agreement in a strong red, high agreement in a quiet blue-grey: suspects stand out on a busy map.
AGREEMENT_SCALE = [[0.0, "#c0181b"], [0.35, "#f07d22"], [0.7, "#c9d6e3"], [1.0, "#9db4cc"]]
CONFUSION_SCALE = "Blues"  # a cell's share of its filed label: one hue, darker is more
CELL_TEXT_MAX_LABELS = 25  # above this many labels the counts no longer fit inside the heatmap's cells


def params_from_form(k, template: str, rows: int | None = None) -> QualityParams:
    """The form's values as QualityParams; a ValueError names the field ("k", "template"). With `rows`, k must also be
    smaller than the run's image count (each image needs k neighbours besides itself)."""
    params = QualityParams(k=k, template=(template or "").strip())
    if rows is not None:
        check_k(params.k, rows)
    return params


def label_table(results: QualityResults) -> pd.DataFrame:
    """One row per label for st.dataframe, least pure first: label, images, purity, zero-shot accuracy (NaN when
    zero-shot is unavailable), most confused with ("" when never), likely mislabeled."""
    labels = results.labels
    table = pd.DataFrame({
        "label": labels["label"].astype(str), "images": labels["images"], "purity": labels["purity"],
        "zero-shot accuracy": labels["zero_shot_accuracy"],
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


def confusion_figure(results: QualityResults):
    """The confusion heatmap (rows: filed label, columns: neighbours' suggestion; colour: share of the filed label).

    Plotly's heatmaps report no click to Streamlit, so an invisible marker sits on every non-empty cell and carries
    [filed index, suggested index] as customdata: clicking a cell selects its marker (`cell_from_selection`).
    """
    import plotly.graph_objects as go

    matrix = results.confusion()
    names = [plotly_literal(name) for name in matrix.index]
    counts = matrix.to_numpy()
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    hover = "filed as <b>%{y}</b><br>neighbours say <b>%{x}</b><br>%{meta}<extra></extra>"
    heatmap = go.Heatmap(
        z=shares, x=names, y=names, customdata=counts, colorscale=CONFUSION_SCALE, zmin=0, zmax=1, xgap=1, ygap=1,
        colorbar={"title": {"text": "share of<br>filed label"}, "tickformat": ".0%"},
        hovertemplate=hover.replace("%{meta}", "%{customdata:,} images (%{z:.0%})"),
    )
    if len(names) <= CELL_TEXT_MAX_LABELS:
        heatmap.update(text=np.where(counts > 0, counts, "").astype(str), texttemplate="%{text}")
    cells = confusion_cells(results)
    clickable = go.Scatter(
        x=[names[j] for j in cells["suggested_index"]], y=[names[i] for i in cells["filed_index"]], mode="markers",
        # It must take the hover (a click selects the hovered point); it says what the heatmap would.
        customdata=cells[["filed_index", "suggested_index"]].to_numpy().tolist(), showlegend=False,
        hovertext=[f"{count:,} image{'s' if count != 1 else ''} ({share:.0%})"
                   for count, share in zip(cells["images"], cells["share"])],
        hovertemplate=hover.replace("%{meta}", "%{hovertext}"),
        marker={"symbol": "square", "size": max(8, min(40, 560 // max(1, len(names)))), "opacity": 0},
        # A clicked cell gets a faint mark; the rest stay invisible (Plotly would otherwise dim them).
        selected={"marker": {"opacity": 0.35, "color": "#f07d22"}}, unselected={"marker": {"opacity": 0}},
    )
    figure = go.Figure([heatmap, clickable])
    side = max(360, min(900, 160 + 28 * len(names)))
    figure.update_layout(
        height=side, margin={"l": 10, "r": 10, "t": 30, "b": 10}, hovermode="closest", clickmode="event+select",
        xaxis={"title": {"text": "neighbours say"}, "side": "top", "type": "category", "tickangle": -45},
        yaxis={"title": {"text": "filed as"}, "autorange": "reversed", "type": "category"},
    )
    return figure


def cell_from_selection(points: Iterable[dict], names: Sequence[str]) -> tuple[str, str] | None:
    """(filed, suggested) of the clicked confusion cell, from a Plotly selection's points; None when there is none."""
    for point in points or []:
        data = point.get("customdata")
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
    images = results.images
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


def suspects_csv(results: QualityResults) -> str:
    """The relabel worklist, strongest suspects first: path, filed_label, suggested_label, agreement, zero_shot_label
    (empty when unavailable), strongest (true/false)."""
    rows = [(s["path"], s["label"], s["suggested"], f"{s['agreement']:.4f}",
             s["zero_shot"] if _present(s["zero_shot"]) else "", "true" if s["strongest"] else "false")
            for s in suspects(results).to_dict("records")]
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
    kind = "exact copy (identical files)" if pair["kind"] == "exact" else f"near duplicate, similarity {pair['similarity']:.4f}"
    where = (f"filed under different labels: {pair['class_a']} and {pair['class_b']}" if pair["cross_label"]
             else f"both filed as {pair['class_a']}")
    return f"{kind} · {where}"


def neighbours_of(results: QualityResults, row: int) -> pd.DataFrame:
    """Row `row`'s stored neighbours, best first: row, path, label, similarity, same_label (filed as `row` is)."""
    rows = results.neighbours.indices[int(row)]
    images = results.images
    labels = images["class"].to_numpy()[rows]
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
