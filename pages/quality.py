"""Quality page: which labels hold together, which images look misfiled, which are duplicates (explore.quality)."""

import functools

import streamlit as st

from dashboard import decide, frame, quality_view, ui
from doggos.base import decisions, units
from doggos.base.rundir import run_dir_of
from doggos.base.store import file_name
from doggos.explore import label_review
from doggos.explore.neighbours import check_k
from doggos.explore.quality import DEFAULT_PARAMS, QualityParams
from doggos.explore.quality_step import QUALITY, read_results

GRID_PAGE_SIZE = 24  # suspects or cell images per page: two screens of thumbnails
PAIRS_PAGE_SIZE = 8  # duplicate pairs per page, each a row of two images
PARAMS_KEY = frame.QUALITY_PARAMS
CELL_KEY = "quality_cell"  # the clicked confusion cell: {"run", "params", "filed", "suggested"}

run = frame.start_page(__file__, "Quality")
frame.random_weights_warning(run, "label agreement, suspects and duplicates", many=True)
rows = frame.row_count(run)


@st.cache_resource(max_entries=4, show_spinner="Reading the quality results…")
def results_of(folder: str, params: QualityParams, mtime_ns: int):
    # Shared, not copied, between sessions (a 100k-image run's neighbours are large): nothing below modifies them.
    return read_results(folder, params)


@st.cache_resource(max_entries=4, show_spinner="Re-checking with your label decisions…")
def rechecked_of(folder: str, params: QualityParams, mtime_ns: int, run_path: str, labels_version: tuple) -> tuple:
    # The stored results seen through the label decisions in effect (label_review.recheck: from the stored
    # neighbours, no Ray), once per results and log version: (results, queue, review). Shared, never modified.
    first = results_of(folder, params, mtime_ns)
    state = decisions.state(run_path)
    now = label_review.recheck(first, state)
    waiting = label_review.queue(first, now)
    return now, waiting, label_review.review(first, now, state, waiting)


@st.cache_resource(max_entries=4, show_spinner=False)
def views_of(folder: str, params: QualityParams, mtime_ns: int, run_path: str, labels_version: tuple) -> tuple:
    # What the page draws from the results, derived once per results and decisions rather than on every rerun (a
    # 1,000,000-image run's suspects are a sort of the whole table): (suspects, label table, confusion chart). Shared
    # by every session like the results themselves: nothing below modifies them.
    results = rechecked_of(folder, params, mtime_ns, run_path, labels_version)[0]
    return quality_view.suspects(results), quality_view.label_table(results), quality_view.confusion_chart(results)


params = st.session_state.get(PARAMS_KEY, DEFAULT_PARAMS)
with st.form("quality_params_form"):
    k_col, template_col, apply_col = st.columns([1, 3, 0.8], vertical_alignment="bottom")
    k = k_col.number_input("k (neighbours per image)", min_value=1, max_value=100, value=params.k, step=1,
                           key="quality_k", help="Each image is judged by the labels of its k nearest images.")
    template = template_col.text_input("Zero-shot template", value=params.template, key="quality_template",
                                       help="The prompt CLIP's text tower reads for each label; {label} is replaced.")
    if apply_col.form_submit_button("Apply", type="primary", width="stretch"):
        try:
            params = quality_view.params_from_form(k, template, rows)
            st.session_state[PARAMS_KEY] = params
        except ValueError as error:
            st.error(ui.markdown_literal(error))

try:
    check_k(params.k, rows)
except ValueError as error:  # the parameters were applied on a larger run: this one has k images or fewer
    st.error(ui.markdown_literal(error))
    st.stop()

what = ui.markdown_literal(params.describe())
state = frame.ready_step(
    QUALITY, run, params, what=f"The label check ({what})",
    working=f"Checking labels ({what}) in the background{{elapsed}}: nearest neighbours of every image, then zero-shot "
            "with the run's model. This page updates by itself when the results are ready; they are kept per run and "
            "parameters.",
    verbs=("label check runs", "label checks run"))

results_key = (str(run_dir_of(run).quality), params, state.path.stat().st_mtime_ns, str(run.path),
               decisions.version(run.path))
results, review_queue, review = rechecked_of(*results_key)
ranked, label_table, confusion_chart = views_of(*results_key)
duplicates = results.duplicates
accuracy = results.zero_shot_accuracy
cross_label = int(duplicates["cross_label"].sum())
checks_off = quality_view.label_checks_off(results)  # one label: nothing to doubt it with

images_col, suspects_col, strongest_col, pairs_col, zero_col = st.columns(5)
kept = len(results.in_dataset())
left_out = len(results.images) - kept
images_col.metric("Images", units.count(kept), help="In the dataset: " + (
    f"{units.count(left_out)} excluded by a label decision are left out" if left_out else "every image of the run"))
suspects_col.metric("Likely mislabeled", units.DASH if checks_off else units.count(len(ranked)),
                    help="Images whose neighbours' majority label is another.")
strongest_col.metric("Strongest suspects",
                     units.DASH if checks_off else units.count(ranked['strongest'].sum()),
                     help="Likely mislabeled that zero-shot also puts under another label.")
pairs_col.metric("Duplicate pairs", units.count(len(duplicates)),
                 help=f"{units.count(cross_label)} filed under different labels")
zero_col.metric("Zero-shot accuracy", units.share(accuracy),
                help="How often CLIP's text tower picks the folder's label.")
st.caption(f"{ui.markdown_literal(params.describe())} · kept per run and parameters: change them above · "
           f"{review.purity_text()}" + (f" ({units.count(review.reviewed)} reviewed, "
                                         f"{units.count(review.excluded)} excluded)"
                                         if review.decisions else ""))
if checks_off:
    st.warning(ui.markdown_literal(checks_off), icon=":material/info:")
if results.zero_shot_note:
    st.info(f"No zero-shot check: {ui.markdown_literal(results.zero_shot_note)}", icon=":material/info:")

# ---- review queue ------------------------------------------------------------------------------------------------
QUEUE_KEY = f"quality_queue-{run.id}-{params.name}"  # the row on show in the queue: stays put when the queue changes
st.subheader("Review queue")
st.caption(f"{review.progress_text()} · the suspects of the first check, strongest first, then any the re-check "
           "found since · keys: **A** accept the suggestion · **L** relabel to the label picked · **K** label is right "
           "· **X** exclude · **U** undo the last decision · **←** / **→** previous / next")
if review.queue:
    st.progress(review.queue_done / review.queue)
if review_queue.empty and checks_off:
    st.info("Nothing to review: with one label, no image's label can be doubted.", icon=":material/info:")
elif review_queue.empty:
    st.success("Nothing to review: no image's neighbours disagree with its label.", icon=":material/check_circle:")
else:
    queued = review_queue["row"].to_numpy()
    position = quality_view.queue_position(review_queue, st.session_state.get(QUEUE_KEY))
    item = review_queue.iloc[position]

    def go_to(target: int) -> None:
        st.session_state[QUEUE_KEY] = int(queued[target % len(queued)])

    def next_open() -> None:
        go_to(quality_view.next_open(review_queue, position))

    back_col, where_col, undo_col, forward_col = st.columns([1, 2.2, 1.2, 1], vertical_alignment="center")
    back_col.button("Previous", icon=":material/arrow_back:", key="queue-previous", shortcut="Left", width="stretch",
                    on_click=go_to, args=(position - 1,))
    newest = decide.label_state(run).actions
    if undo_col.button("Undo last", icon=":material/undo:", key="queue-undo-last", shortcut="U", width="stretch",
                       disabled=not newest, help=f"Take back: {decisions.describe(run.path, newest[-1])}" if newest
                       else "Nothing to undo yet"):
        undone = [line.row for line in decisions.lines_of(run.path, newest[-1]) if line.row is not None]
        decide.undo(run, newest[-1], then=lambda: st.session_state.update({QUEUE_KEY: undone[0]} if undone else {}))
    where_col.markdown(f"Image **{units.count(position + 1)}** of {units.count(len(review_queue))} in the queue"
                       + (" · decided" if item["decided"] else ""), text_alignment="center")
    forward_col.button("Next", icon=":material/arrow_forward:", key="queue-next", shortcut="Right", width="stretch",
                       on_click=go_to, args=(position + 1,))
    picture_col, facts_col = st.columns([2, 3], gap="medium")
    with picture_col:
        st.image(frame.detail_image(run, int(item["row"])), width="stretch")
    with facts_col:
        st.markdown(ui.markdown_literal(quality_view.queue_facts(item)))
        st.code(item["path"], language=None, wrap_lines=True)
        decide.image_actions(run, int(item["row"]), suggested=item["suggested"], key="queue", shortcuts=True,
                             then=next_open)
    near = quality_view.neighbours_of(results, int(item["row"]))
    st.markdown(f"**Its {len(near)} nearest neighbours**, best first")
    frame.thumbnail_grid(run, near, key="queue-neighbours", captions=[
        ui.markdown_literal(f"{label} · {units.score(similarity)}")
        for label, similarity in zip(near["label"], near["similarity"])])

# ---- per label ---------------------------------------------------------------------------------------------------
st.subheader("Labels")
st.caption("Purity: the mean share of an image's neighbours filed under its own label. Least pure first; click a "
           "column to sort.")
st.dataframe(label_table, hide_index=True, column_config={
    "purity": st.column_config.ProgressColumn("purity", min_value=0.0, max_value=100.0, format=units.SHARE_COLUMN),
    "zero-shot accuracy": st.column_config.NumberColumn("zero-shot accuracy", format=units.SHARE_COLUMN),
})

# ---- confusion ---------------------------------------------------------------------------------------------------
st.subheader("Confusion")
st.caption("Rows: the label an image is filed under; columns: the label its neighbours give it. Off the diagonal are "
           "the disagreements: click a cell to see its images.")
names = list(results.labels["label"])


def remember_cell(chart_key: str) -> None:
    event = st.session_state.get(chart_key) or {}
    cell = quality_view.cell_from_selection((event.get("selection") or {}).get(quality_view.CELL_PARAM, []), names)
    st.session_state[CELL_KEY] = (
        {"run": run.id, "params": params.name, "filed": cell[0], "suggested": cell[1]} if cell else None)
    frame.first_page("quality_cell_page")


chart_key = f"quality_confusion-{st.session_state.get('quality_chart_generation', 0)}"  # new key: selection cleared
st.vega_lite_chart(spec=confusion_chart, key=chart_key, on_select=functools.partial(remember_cell, chart_key),
                   selection_mode=quality_view.CELL_PARAM, width="stretch")
cell = st.session_state.get(CELL_KEY) or {}
if cell.get("run") == run.id and cell.get("params") == params.name and cell.get("filed") in names:
    behind = quality_view.cell_images(results, cell["filed"], cell["suggested"])
    head_col, clear_col = st.columns([4, 1], vertical_alignment="center")
    head_col.markdown(f"**{units.count(len(behind), 'image')}** filed as "
                      f"**{ui.markdown_literal(cell['filed'])}** whose neighbours say "
                      f"**{ui.markdown_literal(cell['suggested'])}**")
    if clear_col.button("Clear cell", icon=":material/deselect:", width="stretch"):
        st.session_state.pop(CELL_KEY, None)
        st.session_state["quality_chart_generation"] = st.session_state.get("quality_chart_generation", 0) + 1
        st.rerun()
    window = frame.page_window(len(behind), "quality_cell_page", GRID_PAGE_SIZE)
    frame.thumbnail_grid(run, behind.iloc[window], key="quality-cell",
                         captions=[ui.markdown_literal(f"{file_name(p)} · agreement {units.share(a)}")
                                   for p, a in zip(behind["path"].iloc[window], behind["agreement"].iloc[window])],
                         on_view=lambda row: frame.image_dialog(run, row))
    frame.pager(len(behind), "quality_cell_page", GRID_PAGE_SIZE)


# ---- suspects ----------------------------------------------------------------------------------------------------
@st.dialog("Suspect and its neighbours", width="large")
def suspect_dialog(row: int) -> None:
    """The suspect larger, what each check says about it, and its stored neighbours (the evidence)."""
    item = results.images.iloc[row]
    picture, facts = st.columns([1, 2], gap="medium")  # a small picture: the neighbours below are the point
    picture.image(frame.thumbnails(run, (row,))[row], width="stretch")
    with facts:
        st.markdown(f"Filed as **{ui.markdown_literal(item['class'])}** · neighbours say "
                    f"**{ui.markdown_literal(item['suggested'])}** · agreement {units.share(item['agreement'])}")
        if isinstance(item["zero_shot"], str):
            st.markdown(f"Zero-shot says **{ui.markdown_literal(item['zero_shot'])}** "
                        f"({units.share(item['zero_shot_probability'])})")
        st.code(item["path"], language=None, wrap_lines=True)
        if (frame.APP_DIR / "pages" / "search.py").exists() and st.button(
                "More like this", icon=":material/image_search:", key="quality-more-like-this"):
            frame.more_like_this(run, row)
        decide.image_actions(run, row, suggested=item["suggested"], key="suspect")
    near = quality_view.neighbours_of(results, row)
    st.markdown(f"**Its {len(near)} nearest neighbours**, best first")
    frame.thumbnail_grid(run, near, key="quality-neighbours", captions=[
        ui.markdown_literal(f"{label} · {units.score(similarity)}")
        for label, similarity in zip(near["label"], near["similarity"])])


st.subheader("Suspects")
if ranked.empty and checks_off:
    st.info("No suspects can be found: label checks need two or more labels.", icon=":material/info:")
elif ranked.empty:
    st.success("Every image's neighbours agree with its folder: no suspects.", icon=":material/check_circle:")
else:
    text_col, download_col = st.columns([4, 1], vertical_alignment="center")
    text_col.caption("Images whose neighbours mostly carry another label, strongest first (zero-shot disagrees with the "
                     "folder too), then least agreement. Press **View** to see an image's neighbours.")
    # The worklists are made when a button is pressed (a deferred download), not on every first render: a
    # 1,000,000-image run's suspects are tens of thousands of rows.
    download_col.download_button("Suspects CSV", functools.partial(quality_view.suspects_csv, results, ranked),
                                 file_name=f"suspects-{run.id}.csv", mime="text/csv", icon=":material/download:",
                                 width="stretch",
                                 help="A relabel worklist: path, filed label, suggested label, agreement, zero-shot label")
    window = frame.page_window(len(ranked), "quality_suspects_page", GRID_PAGE_SIZE)
    shown = ranked.iloc[window]
    frame.thumbnail_grid(run, shown, key="quality-suspects", on_view=suspect_dialog,
                         captions=[ui.markdown_literal(quality_view.suspect_caption(s)) for s in shown.to_dict("records")])
    frame.pager(len(ranked), "quality_suspects_page", GRID_PAGE_SIZE)

# ---- duplicates --------------------------------------------------------------------------------------------------
st.subheader("Duplicates")
notes = [f"near duplicates: {results.near_rule}"] + ([results.exact_note] if results.exact_note else [])
if duplicates.empty:
    st.success("No duplicate pairs.", icon=":material/check_circle:")
    st.caption(ui.markdown_literal(" · ".join(notes)))
    st.stop()
text_col, download_col = st.columns([4, 1], vertical_alignment="center")
text_col.caption(f"{units.count(len(duplicates), 'pair')}, {units.count(cross_label)} of them filed under different "
                 "labels (listed first), "
                 "then exact copies, then by similarity · " + ui.markdown_literal(" · ".join(notes)))
download_col.download_button("Duplicates CSV", functools.partial(quality_view.duplicates_csv, results),
                             file_name=f"duplicates-{run.id}.csv", mime="text/csv", icon=":material/download:",
                             width="stretch",
                             help="Every pair: path_a, path_b, labels, kind, similarity")
window = frame.page_window(len(duplicates), "quality_duplicates_page", PAIRS_PAGE_SIZE)
pairs = duplicates.iloc[window]
shown = frame.thumbnails(run, list(pairs["a"]) + list(pairs["b"]))
for pair in pairs.to_dict("records"):
    with st.container(border=True):
        left, right, words = st.columns([1, 1, 2], vertical_alignment="center")
        left.image(shown[pair["a"]], caption=ui.caption_for(pair["class_a"], file_name(pair["path_a"])), width="stretch")
        right.image(shown[pair["b"]], caption=ui.caption_for(pair["class_b"], file_name(pair["path_b"])), width="stretch")
        words.markdown((":material/warning: " if pair["cross_label"] else "")  # an icon font: no emoji font needed
                       + ui.markdown_literal(quality_view.duplicate_caption(pair)))
        words.caption(ui.markdown_literal(f"{pair['path_a']}  ·  {pair['path_b']}"))
        pair_key = f"pair-{pair['a']}-{pair['b']}"
        keep_left, keep_right, keep_both = words.columns(3)
        if keep_left.button("Keep left", key=f"{pair_key}-left", icon=":material/west:", width="stretch",
                            help="Exclude the right one: the left stays in the dataset"):
            decide.apply(run, "exclude", [pair["b"]])
        if keep_right.button("Keep right", key=f"{pair_key}-right", icon=":material/east:", width="stretch",
                             help="Exclude the left one: the right stays in the dataset"):
            decide.apply(run, "exclude", [pair["a"]])
        if keep_both.button("Keep both", key=f"{pair_key}-both", icon=":material/done_all:", width="stretch",
                            help="Both belong: mark both reviewed, and the pair leaves this list"):
            decide.apply(run, "keep", [pair["a"], pair["b"]])
frame.pager(len(duplicates), "quality_duplicates_page", PAIRS_PAGE_SIZE)
