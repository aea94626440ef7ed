"""The dashboard's shared page frame (the Streamlit side of dashboard.ui): session keys, the page start, cached run
data (with the label decisions in effect), the thumbnail grid with paging and selection, the image dialog and the
random-weights warning. Pages only draw with these."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import ui
from doggos.base import decisions, shelf, store, units

APP_DIR = Path(__file__).resolve().parents[1]  # where app.py and pages/ are

# Session-state keys that app.py and the pages share.
RUNS_ROOT = "runs_root"  # the runs folder; its presence means app.py has drawn the frame in this session
CURRENT_RUN = "current_run"  # RunInfo of the run Browse, Map, Search, Quality and Summary show (None: no finished run)
CURRENT_RUN_ID = "current_run_id"  # the sidebar picker's value
REQUEST_CURRENT_RUN = "request_current_run"  # a page asks app.py to make this run current (the picker is drawn first)
DEEP_LINK = "deep_link"  # the page a first request by URL asked for, while app.py draws the frame
WATCHED_RUN = "watched_run"  # the run launched from this session's Run page
SEARCH_REQUEST = "search_request"  # {"run": id, "row": n}: "More like this" from Browse or Map, read by Search
DECISION_NOTICE = "decision_notice"  # the last label decision in words (dashboard.decide), toasted once on the next page
QUALITY_PARAMS = "quality_params"  # the Quality page's applied QualityParams; the Map's "label agreement" reads them
LISTING_TTL_S = 10.0  # the finished runs are listed again after this long, whatever their stamp


def start_page(script: str, title: str, needs_run: bool = True):
    """Begin a page: send a first request by URL through app.py, draw the title, return the current run.

    A server's very first request for /browse runs pages/browse.py without app.py (Streamlit's pages/ folder quirk):
    remember the page, let app.py draw the frame, and it comes back here. A page that `needs_run` stops after saying
    so when there is no finished run yet.
    """
    if RUNS_ROOT not in st.session_state:
        st.session_state[DEEP_LINK] = Path(script).resolve().relative_to(APP_DIR).as_posix()
        st.switch_page("app.py")
    st.title(title)
    notice = st.session_state.pop(DECISION_NOTICE, None)
    if notice:  # a decision's rerun lands here, on whichever page it was made
        st.toast(notice, icon=":material/done:")
    run = st.session_state.get(CURRENT_RUN)
    if run is not None:
        _shelve(str(run.path), store.run_version(run.path))
    if needs_run and run is None:
        st.info("No finished run yet. Start one on the Run page (the demo kit works offline).")
        st.page_link("pages/run.py", label="Go to the Run page", icon=":material/rocket_launch:")
        st.stop()
    return run


def ready_step(step, run, params, what: str, working: str, verbs: tuple[str, str]):
    """The ready result of a post-run step (a map, a label check) for this page; otherwise draw why not and stop.

    Missing: started in a background process, so the page never waits on it. Running: said, with the time so far,
    polled every second (queued behind others for a machine-wide slot: said too). Failed: why, with **Try again**.
    `what` names the result ("UMAP (…)"), `working` is the running message ("{elapsed}" marks where the time goes),
    `verbs` the queued message's singular and plural ("UMAP computes", "UMAPs compute").
    """
    state = step.status(run.path, params)
    if state.state == "missing":
        state = step.start(run.path, params)
    if state.state == "running":

        @st.fragment(run_every=1.0)
        def wait() -> None:
            now = step.status(run.path, params)
            if now.state != "running":
                st.rerun(scope="app")
            elapsed = f" · {units.duration(time.time() - now.started)} so far" if now.started else ""
            if now.waiting:
                slots = step.slots()
                st.info(f"{what} is queued{elapsed}: at most {slots} {verbs[slots > 1]} at once on this machine, and "
                        "this one starts when another finishes. This page updates by itself.", icon=":material/pending:")
            else:
                stage = f" Now: {ui.markdown_literal(now.stage)}." if now.stage else ""  # what it says it is doing
                st.info(working.replace("{elapsed}", elapsed) + stage, icon=":material/hourglass_top:")

        wait()
        st.stop()
    if state.state == "failed":
        st.error(f"{what} failed: {ui.markdown_literal(state.error or 'unknown error')}")
        if st.button("Try again", icon=":material/refresh:", key=f"{step.name}-try-again"):
            step.start(run.path, params)
            st.rerun()
        st.stop()
    return state


def random_weights_warning(run, what: str, many: bool = False) -> None:
    """Say that `what` carries no meaning when the run's model has random weights (the demo kit's); `many`: `what`
    names several things ("suspects and duplicates show…")."""
    if run.manifest and run.manifest.random_weights:
        st.warning(ui.random_weights_text(what, many), icon=":material/casino:")


def finished_runs(root: str | Path) -> dict:
    """The succeeded runs under `root` with their manifests, newest first, as {id: RunInfo}: listed once per server
    and change of the runs folder (`doggos.runs.manager.listing_stamp`: a new, finished, failed, deleted or republished
    run shows on every session's next rerun), not on every rerun of every session. Shared: never modify."""
    from doggos.runs.manager import listing_stamp

    return _finished_runs(str(root), listing_stamp(root))


# The stamp's few stats per run stand in for reading every run's records on each rerun; the ttl is a backstop only
# (a file rewritten in place within one mtime tick keeps its stamp).
@st.cache_resource(max_entries=4, ttl=LISTING_TTL_S, show_spinner=False)
def _finished_runs(root: str, stamp: tuple) -> dict:
    from doggos.runs.manager import RunManager

    return {run.id: run for run in RunManager(root).list() if run.state == "succeeded" and run.manifest}


@st.cache_resource(max_entries=64, show_spinner=False)
def _shelve(run_path: str, version: int) -> threading.Thread:
    """Give a run made before thumbnail shelves (doggos.base.shelf) its shelf, once per server and run version, in a
    thread: pages read the Parquet meanwhile, and never wait for it."""
    thread = threading.Thread(target=shelf.ensure, args=(run_path,), name="doggos-shelf", daemon=True)
    thread.start()
    return thread


# The run's index and what is derived from it are st.cache_resource: one object per server, shared by every session
# and rerun without a copy (st.cache_data would pickle a 1,000,000-row index and unpickle it on every call). Nothing
# may modify them: pages and helpers only read, select and slice them (the arrays are made read-only).
# Everything that depends on labels is keyed by the run's version and its label decisions' (`labels_version`): a
# decision made in any session shows on the next rerun of every page.
@st.cache_resource(max_entries=4, show_spinner="Reading the run's table…")
def _folder_index(run_path: str, version: int) -> pd.DataFrame:
    return store.folder_index(run_path)


@st.cache_resource(max_entries=4, show_spinner=False)
def _index(run_path: str, version: int, labels: tuple[int, int]) -> pd.DataFrame:
    # Only the label columns are new: the rest is shared with the folder index (a decision costs no re-read).
    return store.with_decisions(_folder_index(run_path, version), decisions.state(run_path))


def labels_version(run) -> tuple[int, int]:
    """The version of the run's label decisions (`doggos.base.decisions.version`): part of every label cache key."""
    return decisions.version(run.path)


def _keys(run) -> tuple[str, int, tuple[int, int]]:
    return str(run.path), store.run_version(run.path), labels_version(run)


def run_index(run) -> pd.DataFrame:
    """One row per image of the run (row, path, label, name, width, height, folder_label, excluded: `store.load_index`),
    with the label decisions in effect, cached per run and decisions version. Shared by every session: read it, never
    modify it."""
    return _index(*_keys(run))


@st.cache_resource(max_entries=8, show_spinner=False)
def _label_counts(run_path: str, version: int, labels: tuple[int, int], include_excluded: bool) -> pd.DataFrame:
    return store.label_counts(_index(run_path, version, labels), include_excluded)


def label_counts(run, include_excluded: bool = False) -> pd.DataFrame:
    """Images per effective label (columns label, images), most frequent first: the images in the dataset (excluded
    ones too with `include_excluded`). Once per run and decisions version; shared: never modify."""
    return _label_counts(*_keys(run), include_excluded)


@st.cache_resource(max_entries=4, show_spinner=False)
def _label_names(run_path: str, version: int, labels_version: tuple[int, int]) -> tuple[str, ...]:
    index = _index(run_path, version, labels_version)
    labels = index["label"][~index["excluded"].to_numpy(dtype=bool)]
    counted = set(_label_counts(run_path, version, labels_version, False)["label"])
    return tuple(sorted(counted | ({""} if labels.isna().any() else set())))


def label_names(run) -> tuple[str, ...]:
    """The labels of the run's images in the dataset, sorted, a missing one as "" (as doggos.explore.search names
    them), once per run and decisions version: a label made by relabelling is one of them."""
    return _label_names(*_keys(run))


@st.cache_data(max_entries=16, show_spinner=False)
def _row_count(run_path: str, version: int) -> int:
    return store.row_count(run_path)


def row_count(run) -> int:
    """How many images the run has, from its Parquet footers: no need to read its index."""
    return _row_count(str(run.path), store.run_version(run.path))


@st.cache_resource(max_entries=4, show_spinner="Sorting the run's images…")
def _browse_order(run_path: str, version: int, labels: tuple[int, int]) -> np.ndarray:
    return _read_only(store.browse_order(_index(run_path, version, labels)))


@st.cache_resource(max_entries=8, show_spinner=False)  # up to 8 MB each for 1,000,000 rows
def _matching(run_path: str, version: int, labels_version: tuple[int, int], labels: tuple[str, ...],
              name_contains: str, include_excluded: bool) -> np.ndarray | None:
    return _read_only(store.matching_rows(_index(run_path, version, labels_version), labels, name_contains,
                                          include_excluded))


def _read_only(array: np.ndarray | None) -> np.ndarray | None:
    if array is not None:
        array.flags.writeable = False
    return array


def matching_rows(run, labels=(), name_contains: str = "", include_excluded: bool = False) -> np.ndarray | None:
    """Row positions matching Browse's filters (`store.matching_rows`: excluded images left out unless
    `include_excluded`; None: every row), cached per run and decisions version and filters, so paging through them
    costs no filtering."""
    return _matching(*_keys(run), tuple(labels), name_contains.strip().lower(), include_excluded)


def ordered_page(run, chosen: np.ndarray | None, window: slice) -> pd.DataFrame:
    """The index's rows of `window` in the label, path order of the `chosen` rows (`matching_rows`). The whole sort
    is made (once per run and decisions version) only for windows past store.SELECT_MAX of more than
    store.SORT_ALONE_MAX rows: the first pages are picked without it, and a few labels' rows are sorted alone."""
    keys = _keys(run)
    index = _index(*keys)
    whole = window.stop > store.SELECT_MAX and (chosen is None or len(chosen) > store.SORT_ALONE_MAX)
    order = _browse_order(*keys) if whole else None
    return index.iloc[store.ordered_rows(index, chosen, window, order)]


# A resource, not data: st.cache_data would pickle a page's 48 JPEGs in and out on every call of every session.
@st.cache_resource(max_entries=64, show_spinner=False)
def _thumbnails(run_path: str, version: int, rows: tuple[int, ...]) -> dict[int, bytes]:
    return dict(zip(rows, store.load_thumbnails(run_path, rows)))


def thumbnails(run, rows) -> dict[int, bytes]:
    """Stored JPEG thumbnails of these rows only (a page's worth), cached per run version. Shared: never modify."""
    return _thumbnails(str(run.path), store.run_version(run.path), tuple(int(r) for r in rows))


@st.cache_data(max_entries=32, show_spinner=False)
def _detail(path: str, thumbnail: bytes) -> tuple[bytes, str, tuple[int, int]]:
    return store.detail_image(path, thumbnail)


def detail_image(run, row: int) -> bytes:
    """One image larger than its thumbnail: a local original (up to store.DETAIL_MAX_SIDE) when it is still there."""
    path = run_index(run)["path"].iloc[int(row)]
    return _detail(path, thumbnails(run, (int(row),))[int(row)])[0]


def page_window(total: int, key: str, page_size: int) -> slice:
    """The rows of the page the pager under `key` shows (back to the first when a filter change left it too high)."""
    if st.session_state.get(key, 1) > ui.page_count(total, page_size):
        first_page(key)
    return ui.page_slice(total, st.session_state.get(key, 1), page_size)


def first_page(key: str) -> None:
    """Send the pager under `key` back to page 1. Removing its value, rather than setting it, lets the widget take its
    default: a widget given a value both ways makes Streamlit print a warning."""
    st.session_state.pop(key, None)


def pager(total: int, key: str, page_size: int) -> None:
    if ui.page_count(total, page_size) > 1:
        st.pagination(ui.page_count(total, page_size), key=key, max_visible_pages=9)


def thumbnail_grid(run, items: pd.DataFrame, captions: list[str] | None = None,
                   on_view: Callable[[int], None] | None = None, key: str = "grid", selectable: bool = False) -> None:
    """Thumbnails of `items` (columns row, label, path; from the run's index also folder_label and excluded) in a
    responsive grid, each captioned (default: `ui.thumbnail_captions`: "label · file name", "husky · was beagle ·
    file name", "excluded · file name") and, given `on_view`, with a View button that calls it with the row.
    `selectable`: a checkbox on each, kept in `selection(run, key)`."""
    shown = thumbnails(run, items["row"])
    if captions is None:
        captions = ui.thumbnail_captions(items)
    chosen = selection(run, key) if selectable else None
    gallery = st.grid(columns="auto", min_column_width=130, gap="small", border=True)
    for row, caption in zip(items["row"], captions):
        with gallery.cell():
            # Thumbnails are JPEGs: saying so spares Streamlit opening each one to guess its format.
            st.image(shown[int(row)], caption=caption, width="stretch", output_format="JPEG")
            if chosen is not None:
                box = f"{key}-pick-{run.id}-{row}"
                st.session_state[box] = int(row) in chosen  # the set decides: Select page, Clear, another page's picks
                st.checkbox("Select", key=box, on_change=_pick, args=(chosen, int(row), box))
            if on_view is not None and st.button("View", key=f"{key}-view-{row}", type="tertiary",
                                                 icon=":material/zoom_in:"):
                on_view(int(row))


def selection(run, key: str) -> set[int]:
    """The rows this session has selected in the grid under `key` (a set to change in place), kept per run: another
    run, or this one republished, starts empty."""
    held = st.session_state.get(f"{key}_selection")
    stamp = (run.id, store.run_version(run.path))
    if not held or held["run"] != stamp:
        held = st.session_state[f"{key}_selection"] = {"run": stamp, "rows": set()}
    return held["rows"]


def _pick(chosen: set[int], row: int, box: str) -> None:
    if st.session_state.get(box):
        chosen.add(row)
    else:
        chosen.discard(row)


def more_like_this(run, row: int) -> None:
    """Open Search with this run's image as the query."""
    st.session_state[SEARCH_REQUEST] = {"run": run.id, "row": int(row)}
    st.switch_page("pages/search.py")


@st.dialog("Image", width="large")
def image_dialog(run, row: int, neighbours: int = 0) -> None:
    """One image larger, with its effective label ("was X" when relabelled) and full path: a local original when it
    is still there, else the thumbnail; the label decisions' actions (`dashboard.decide.image_actions`); with
    `neighbours`, that many nearest neighbours below it (images in the dataset only)."""
    from dashboard import decide  # it draws with this module's helpers: imported when first needed

    item = run_index(run).iloc[row]
    image, origin, size = _detail(item["path"], thumbnails(run, (row,))[row])
    picture, facts = st.columns(2, gap="medium")
    picture.image(image, width=ui.detail_width(size))
    with facts:
        st.markdown("**Label**")
        st.text(ui.label_words(item["label"], item["folder_label"]) + (" · excluded" if item["excluded"] else ""))
        st.markdown("**Full path**")
        st.code(item["path"], language=None, wrap_lines=True)
        st.caption(f"Original size {item['width']} × {item['height']} px · shown: {origin}")
        if st.button("More like this", icon=":material/image_search:", key="dialog-more-like-this"):
            more_like_this(run, row)
        decide.image_actions(run, row, key="dialog")
    if neighbours:
        from doggos.explore import search

        with st.spinner("Finding its nearest neighbours…"):  # the first time, the run's embeddings are read
            hits = search.by_row(search.load_index(run.path), row, k=neighbours)
        st.markdown(f"**Nearest neighbours** · {ui.markdown_literal(search.label_summary(hits))}")
        thumbnail_grid(run, run_index(run).iloc[[hit.row for hit in hits]], key="dialog-neighbours",
                       captions=[ui.caption_for(f"{units.score(hit.score)} · {hit.label}", store.file_name(hit.path))
                                 for hit in hits])
