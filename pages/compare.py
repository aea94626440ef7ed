"""Compare page: two finished runs side by side: settings (what differs highlighted), speed, and how far their
embeddings agree on the images both embedded (neighbour overlap, label purity in each)."""

import pandas as pd
import streamlit as st

from dashboard import frame, ui
from doggos.base import decisions, store, units
from doggos.base.config import ConfigError, user_message
from doggos.explore import compare
from doggos.pipeline import figures
from doggos.runs.manager import RunManager

DIFFERS_STYLE = "background-color: rgba(255, 189, 69, 0.35)"  # Streamlit's amber, see-through: readable in both themes


@st.cache_data(max_entries=8, show_spinner="Finding each shared image's neighbours in both runs…")
def _agreement(path_a: str, version_a: tuple, path_b: str, version_b: tuple) -> compare.Agreement | str:
    # The versions (the run's and its label decisions') are in the key so that a re-published run or a new decision
    # is never served stale. A problem is returned, not raised, so that it is cached too (st.cache_data keeps no
    # exceptions).
    try:
        return compare.agreement(path_a, path_b)
    except ConfigError as error:
        return user_message(error, "ui")


def _highlight(row: pd.Series) -> list[str]:
    return [DIFFERS_STYLE if row["differs"] else ""] * len(row)


current = frame.start_page(__file__, "Compare")
finished = {run.id: run for run in RunManager(st.session_state[frame.RUNS_ROOT]).list()
            if run.state == "succeeded" and run.manifest}  # newest first, as the sidebar lists them
if len(finished) < 2:
    st.info("Comparing needs two finished runs, and this runs folder holds one. Launch another on the Run page (with "
            "more actors, another batch size or another model), then compare the two here.")
    st.page_link("pages/run.py", label="Go to the Run page", icon=":material/rocket_launch:")
    st.stop()

ids = list(finished)
here = ids.index(current.id) if current.id in finished else 0
# By default B is the current run and A the run before it (the next older one; the next newer for the oldest).
defaults = {"compare_a": ids[here + 1] if here + 1 < len(ids) else ids[here - 1], "compare_b": ids[here]}
for key, default in defaults.items():
    if st.session_state.get(key) not in finished:
        st.session_state[key] = default
pick_a, pick_b = st.columns(2)
choice_labels = ui.run_choice_labels(finished)
a_id = pick_a.selectbox("Run A (the baseline)", ids, key="compare_a", format_func=choice_labels.get)
b_id = pick_b.selectbox("Run B (compared with A)", ids, key="compare_b", format_func=choice_labels.get)
run_a, run_b = finished[a_id], finished[b_id]
manifest_a, manifest_b = run_a.manifest, run_b.manifest
if a_id == b_id:
    st.caption("A and B are the same run: every setting matches and the neighbours agree by definition.")
random = [side for side, m in (("A", manifest_a), ("B", manifest_b)) if m.random_weights]
if random:
    st.warning(f"The model of run {' and run '.join(random)} has **random weights** (the demo kit's): speed and "
               "settings compare as usual, but its neighbours and label purity carry no meaning.",
               icon=":material/casino:")

st.subheader("Speed")
rate_col, duration_col, embed_col = st.columns(3)
ratio = compare.speedup(manifest_a, manifest_b)
rate_col.metric(f"{figures.RUN_RATE} · A", units.rate(manifest_a.images_per_s))
rate_col.metric(f"{figures.RUN_RATE} · B", units.rate(manifest_b.images_per_s),
                delta=compare.metric_delta(
                    units.rate(manifest_b.images_per_s - manifest_a.images_per_s, signed=True)
                    + (f" ({units.factor(ratio)} A)" if ratio is not None else "")),
                help="Images embedded per second of embedding time (post-run steps left out); the delta is B − A")
for column, label, seconds_a, seconds_b, text in (
        (duration_col, "Duration", manifest_a.duration_s, manifest_b.duration_s,
         "The whole run: listing, Ray's start, embedding and the post-run steps"),
        (embed_col, "Embedding time", manifest_a.embed_s, manifest_b.embed_s,
         "From the start to the published Parquet: listing, Ray's start, model loading and embedding")):
    column.metric(f"{label} · A", units.duration(seconds_a), help=text)
    both = seconds_a is not None and seconds_b is not None
    column.metric(f"{label} · B", units.duration(seconds_b),
                  delta=compare.metric_delta(units.duration(seconds_b - seconds_a, signed=True)) if both else None,
                  delta_color="inverse", help=f"{text}; the delta is B − A (less is better)")

st.subheader("Settings")
settings = compare.settings_table(manifest_a, manifest_b)
differing = int(settings["differs"].sum())
only_differing = st.toggle("Only what differs", key="compare_only_differing", disabled=not differing)
st.caption(f"{units.count(differing)} of {units.count(len(settings), 'setting')} differ (highlighted): what was "
           "asked for, what ran (`plan.*`), "
           "the model, the cluster (`ray.*`) and the library versions.")
shown = settings[settings["differs"]] if only_differing and differing else settings
st.dataframe(shown.style.apply(_highlight, axis=1), hide_index=True,
             column_config={"setting": "Setting", "a": st.column_config.TextColumn("A", width="large"),
                            "b": st.column_config.TextColumn("B", width="large"),
                            "differs": st.column_config.CheckboxColumn("Differs", width="small")})

st.subheader("Do the embeddings agree?")
found = _agreement(str(run_a.path), (store.run_version(run_a.path), decisions.version(run_a.path)),
                   str(run_b.path), (store.run_version(run_b.path), decisions.version(run_b.path)))
if isinstance(found, str):
    st.warning(ui.markdown_literal(found), icon=":material/join_inner:")
    st.stop()
shared_col, overlap_col, purity_a_col, purity_b_col = st.columns(4)
shared_col.metric("Images in both", units.count(found.images_in_both),
                  help=f"Matched by path; {units.count(found.only_in_a)} only in A, {units.count(found.only_in_b)} "
                       "only in B")
overlap_col.metric("Neighbour overlap", units.share(found.neighbour_overlap),
                   help="The mean share of each shared image's nearest neighbours that both runs agree on; "
                        "100 %: the same neighbourhoods")
purity_a_col.metric("Label purity · A", units.share(found.overall_purity_a))
purity_b_col.metric("Label purity · B", units.share(found.overall_purity_b),
                    delta=compare.metric_delta(units.points(found.overall_purity_b - found.overall_purity_a)),
                    help="The mean share of an image's neighbours filed under its own label; the delta is B − A")
st.caption(f"Each run's {found.k} nearest neighbours (cosine, itself excluded) of each image, among the "
           f"{units.count(found.images_in_both, 'image')} both runs embedded (k = the smaller of {compare.K} and the "
           f"shared images − 1). {units.count(found.only_in_a, 'image')} only in A and "
           f"{units.count(found.only_in_b)} only in B are left out, as are images a label decision excluded; labels "
           "are as decided (each run's label decisions in effect).")

st.markdown("**Label purity per label**")
st.caption("Click a column to sort: by **B − A** to see where B groups a label better (positive) or worse.")
st.dataframe(compare.label_table_in_percent(found.labels), hide_index=True, column_config={
    "label": st.column_config.TextColumn("Label", width="large"),
    "images": st.column_config.NumberColumn("Images in both"),
    "purity_a": st.column_config.NumberColumn("Purity A", format=units.SHARE_COLUMN),
    "purity_b": st.column_config.NumberColumn("Purity B", format=units.SHARE_COLUMN),
    "difference": st.column_config.NumberColumn("B − A (points)", format=units.POINTS_COLUMN),
    "overlap": st.column_config.NumberColumn("Neighbour overlap", format=units.SHARE_COLUMN),
})
