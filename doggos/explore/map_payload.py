"""The Map's points as one binary buffer for the browser (typed arrays, no per-point JSON), and one point's facts.

A million points cost 8 MB this way (two quantized coordinates, a label code and an agreement byte each), where
Plotly's JSON took ~90 bytes a point and was sent again on every rerun. The browser fetches the buffer once per run,
map and colouring (its URL carries the versions) and keeps it; `doggos.explore.map_payload.unpack` reads it back the
way the component's JavaScript does, so tests check the format on both sides.

Layout, little-endian: a 32-byte header (magic `DGMAP1\\0\\0`, uint32 points, uint32 labels, uint32 flags, 12 bytes
reserved), then uint16 x[n], uint16 y[n], uint16 label[n] and, when flags has AGREEMENT, uint8 agreement[n] (0–200
is a share in half-percent steps, 255 none) and uint8 suspect[n] (1: the neighbours say another label), then, when
flags has LEFT_OUT, uint8 left_out[n] (1: an image a label decision excluded, which the map leaves out: not drawn,
hovered or selected; its label code may be any).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MAGIC = b"DGMAP1\0\0"
HEADER = np.dtype([("magic", "S8"), ("points", "<u4"), ("labels", "<u4"), ("flags", "<u4"), ("reserved", "V12")])
AGREEMENT = 1  # flags bit: agreement and suspect columns follow
LEFT_OUT = 2  # flags bit: the left_out column follows
GRID = 65535  # coordinates are quantized to 0..GRID: 1/65,535 of the map's extent, far below a screen pixel
NO_AGREEMENT = 255
AGREEMENT_STEPS = 200  # an agreement share is stored in half-percent steps
MAX_LABELS = 65535  # label codes are uint16


def label_codes(labels: pd.Series, counted: np.ndarray | None = None) -> tuple[list[str], np.ndarray]:
    """The distinct labels, sorted, and each point's index into them (the component's colours follow that order).

    `counted` (booleans): only those points' labels are named; another point whose label is not among them gets
    code 0 (the map leaves such points out, so their code is never read)."""
    # Hashing, then sorting only the distinct names: np.unique sorts every string (1.7 s at a million points).
    first_seen, names = pd.factorize(labels.fillna("").astype(str), sort=False)  # a missing label is "", as in search
    named = np.ones(len(names), dtype=bool)
    if counted is not None:
        named = np.bincount(first_seen[counted], minlength=len(names)) > 0
    if named.sum() > MAX_LABELS:
        raise ValueError(f"labels: the map can colour at most {MAX_LABELS:,} distinct labels (got {named.sum():,})")
    kept = np.flatnonzero(named)
    order = kept[np.argsort(np.asarray(names, dtype=object)[kept], kind="stable")]
    rank = np.zeros(len(names), np.int64)
    rank[order] = np.arange(len(order))
    return [str(names[i]) for i in order], rank[first_seen].astype(np.uint16)


def quantize(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x and y onto 0..GRID with one scale for both (the map keeps its aspect), centred on the shorter side."""
    x, y = np.nan_to_num(np.asarray(x, np.float64)), np.nan_to_num(np.asarray(y, np.float64))
    if len(x) == 0:
        return np.zeros(0, np.uint16), np.zeros(0, np.uint16)
    low = np.array([x.min(), y.min()])
    span = np.array([x.max(), y.max()]) - low
    scale = GRID / span.max() if span.max() > 0 else 0.0
    offset = (GRID - span * scale) / 2  # a lone point, or a line, sits in the middle
    qx = np.rint((x - low[0]) * scale + offset[0])
    qy = np.rint((y - low[1]) * scale + offset[1])
    return qx.astype(np.uint16), qy.astype(np.uint16)


def pack(points: pd.DataFrame, agreement: pd.DataFrame | None = None,
         left_out: np.ndarray | None = None) -> tuple[bytes, list[str]]:
    """The buffer for `points` (columns row, x, y, label; row i must be row id i) and its label names.

    `agreement` (columns row, agreement, suggested; rows may be missing) adds the label-agreement colouring.
    `left_out` (a boolean per point: excluded images the map leaves out) adds the LEFT_OUT column, when it leaves out
    any; their labels are not named (unless a shown point has the same).
    """
    rows = len(points)
    if rows and not np.array_equal(points["row"].to_numpy(), np.arange(rows)):
        raise ValueError("points: the rows must be the run's row ids 0..n-1, in order")
    if left_out is not None and len(left_out) != rows:
        raise ValueError(f"left_out: expected one flag per point ({rows:,}), got {len(left_out):,}")
    if left_out is not None and not np.any(left_out):
        left_out = None
    shown = None if left_out is None else ~np.asarray(left_out, dtype=bool)
    names, codes = label_codes(points["label"], shown) if rows else ([], np.zeros(0, np.uint16))
    qx, qy = quantize(points["x"].to_numpy(), points["y"].to_numpy())
    header = np.zeros(1, HEADER)
    header["magic"], header["points"], header["labels"] = MAGIC, rows, len(names)
    parts = [qx.astype("<u2").tobytes(), qy.astype("<u2").tobytes(), codes.astype("<u2").tobytes()]
    if agreement is not None:
        header["flags"] |= AGREEMENT
        share = np.full(rows, NO_AGREEMENT, np.uint8)
        suspect = np.zeros(rows, np.uint8)
        known = agreement[agreement["row"].between(0, rows - 1) & agreement["agreement"].notna()]
        where = known["row"].to_numpy(np.int64)
        share[where] = np.rint(np.clip(known["agreement"].to_numpy(float), 0, 1) * AGREEMENT_STEPS).astype(np.uint8)
        filed = np.asarray(names, dtype=object)[codes[where]] if len(names) else np.array([], dtype=object)
        suggested = known["suggested"].to_numpy(dtype=object)
        suspect[where] = (pd.notna(suggested) & (suggested != filed)).astype(np.uint8)
        parts += [share.tobytes(), suspect.tobytes()]
    if left_out is not None:
        header["flags"] |= LEFT_OUT
        parts.append((~shown).astype(np.uint8).tobytes())
    return header.tobytes() + b"".join(parts), names


def unpack(buffer: bytes) -> dict[str, np.ndarray | int]:
    """The columns of a buffer made by `pack` (what the component reads): x, y, label and, when present, agreement
    (float, NaN for none), suspect (bool) and left_out (bool)."""
    if len(buffer) < HEADER.itemsize or buffer[:8] != MAGIC:
        raise ValueError("not a doggos map buffer (the magic bytes DGMAP1 are missing)")
    header = np.frombuffer(buffer[:HEADER.itemsize], HEADER)[0]
    rows = int(header["points"])
    expected = HEADER.itemsize + 6 * rows + (2 * rows if header["flags"] & AGREEMENT else 0) \
        + (rows if header["flags"] & LEFT_OUT else 0)
    if len(buffer) != expected:
        raise ValueError(f"a map buffer of {rows:,} points must be {expected:,} bytes (got {len(buffer):,})")
    at = HEADER.itemsize
    out: dict[str, np.ndarray | int] = {"labels": int(header["labels"])}
    for name in ("x", "y", "label"):
        out[name] = np.frombuffer(buffer, "<u2", rows, at)
        at += 2 * rows
    if header["flags"] & AGREEMENT:
        share = np.frombuffer(buffer, np.uint8, rows, at)
        out["agreement"] = np.where(share == NO_AGREEMENT, np.nan, share / AGREEMENT_STEPS)
        out["suspect"] = np.frombuffer(buffer, np.uint8, rows, at + rows).astype(bool)
        at += 2 * rows
    if header["flags"] & LEFT_OUT:
        out["left_out"] = np.frombuffer(buffer, np.uint8, rows, at).astype(bool)
    return out


def point_facts(path: str, label: str, row: int, agreement: float | None = None, suggested: str | None = None,
                folder_label: str | None = None, excluded: bool = False) -> dict:
    """What the hover card says about one point: its (effective) label, file name, full path and, when known, the
    verdict: what a label decision did ("was beagle": its folder label; "excluded"), then the label check's."""
    from doggos.base import units
    from doggos.base.store import file_name

    facts = {"row": int(row), "label": label, "name": file_name(path), "path": path}
    verdict = []
    if excluded:
        verdict.append("excluded")
    if folder_label is not None and folder_label != label:
        verdict.append(f"was {folder_label or '(no label)'}")
    if agreement is not None and agreement == agreement:  # NaN: not computed for this row
        verdict.append(f"agreement {units.share(agreement)}")  # as the Quality page writes it
        if suggested is not None and suggested == suggested and suggested != label:
            verdict[-1] += f" · neighbours say {suggested}"
    if verdict:
        facts["verdict"] = " · ".join(verdict)
    return facts
