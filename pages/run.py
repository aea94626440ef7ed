"""Run page: launch a background embedding run (or an update of a finished one), watch it live, cancel it, resume a
failed one, and manage the history of runs; in host mode, a participant's form offers only what the host allows."""

import time

import streamlit as st

from dashboard import frame, host, ui, workshop
from doggos.base import units
from doggos.base.config import DEFAULT_MODEL, DEVICES
from doggos.pipeline import figures
from doggos.runs import access
from doggos.runs.manager import RunManager

manager = RunManager()
visitor = host.visitor()  # passed to every start, cancel, resume and delete: the manager checks it again
policy = visitor.policy
participant = not visitor.is_host
machine = ui.machine_summary()
demo_folder = ui.demo_kit_folder(manager.root)
runs = manager.list()
active_now = any(run.active for run in runs)

frame.start_page(__file__, "Run", needs_run=False)
st.caption("Embed a labeled image tree (`<root>/<label>/<image>`) with CLIP on Ray Data, in the background.")

# A new session (a reload, say) starts from the last launched run's settings rather than an empty form, and watches
# that run if it is still going, so its outcome shows when it ends.
if "form_source" not in st.session_state and runs and runs[0].config and not participant:
    st.session_state.update(ui.form_values_of(runs[0].config))
    if runs[0].active:
        st.session_state.setdefault(frame.WATCHED_RUN, runs[0].id)
# Values a button asked to put into the form; widgets can only be set before they are drawn, so it happens here.
pending = st.session_state.pop("pending_form_values", {})
if participant:
    host.fit_form(pending, policy)  # an update copies the old run's batch size and concurrency
st.session_state.update(pending)
st.session_state.setdefault("form_model", policy.models[0] if participant else DEFAULT_MODEL)  # the kit's, if any
st.session_state.setdefault("form_device", "auto")
st.session_state.setdefault("form_projection", True)
st.session_state.setdefault("form_quality", True)
if participant:  # the select boxes hold only what the host allows; Ray address and S3 endpoint are the host's
    st.session_state["form_source"] = policy.allowed_source(st.session_state.get("form_source")) or next(
        iter(policy.sources), None)
    st.session_state["form_model"] = policy.allowed_model(st.session_state.get("form_model")) or policy.models[0]
    for name in ("form_ray_address", "form_s3_endpoint"):
        st.session_state.pop(name, None)
    if policy.max_concurrency is None:  # the field is disabled: nothing a participant could clear may stay in it
        st.session_state["form_concurrency"] = ""


def draw_active_run(run, past_phases: list[dict]) -> None:
    """One running run: its progress, figures (`doggos.pipeline.figures`), Ray Data's operators, log and cancel.

    `past_phases`: the phase start times of this runs root's finished runs, newest first (a phase's typical length)."""
    with st.container(border=True):
        name = ui.markdown_literal(ui.run_name(run))
        st.markdown(f"**Run {name}** · {ui.state_text(run)}")
        st.text(run.config.source if run.config else "")
        progress = run.progress
        phase_s = figures.phase_elapsed(run.status, time.time())
        typical_s = figures.typical_phase_s(past_phases, progress.phase)
        st.progress(progress.fraction, text=ui.progress_caption(progress, phase_s, typical_s))
        metrics = ui.live_metrics(progress, phase_s, typical_s)
        for column, (label, value) in zip(st.columns(len(metrics)), metrics.items()):
            column.metric(label, value)
        workshop.live_operators(run)
        st.code(ui.plain_log(manager.log_tail(run.id, 8)) or "(no log output yet)", language=None, wrap_lines=True)
        if not access.owns(visitor, run):
            owner = access.owner_of(run.path)
            by = f" by {ui.markdown_literal(owner.name)}" if owner and owner.name else ""
            st.caption(f"Launched{by} from another browser session: only it or the host can cancel it.")
        elif st.button("Cancel run", key=f"cancel-{run.id}", icon=":material/cancel:"):
            stopping = st.empty()  # at once: "stopping — 2 batches in flight", what the cancel waits for
            with st.spinner("Stopping the run and its Ray workers…"):
                try:
                    manager.cancel(run.id, by=visitor,
                                   on_stopping=lambda info: stopping.caption(ui.markdown_literal(ui.state_text(info))))
                except access.AccessDenied as error:
                    st.error(ui.markdown_literal(error.message))
                    return
            st.rerun(scope="app")


def draw_outcome(run) -> None:
    """How the run launched from this page ended."""
    name = ui.markdown_literal(ui.run_name(run))
    if run.state == "succeeded" and run.manifest:
        rate = units.rate(run.manifest.images_per_s, f"images/s ({figures.WHOLE_RUN})")
        st.success(f"Run {name} finished: {ui.rows_text(run.manifest)}, {units.count(run.manifest.labels, 'label')}, "
                   f"in {units.duration(run.duration_s)}, {rate}. It is now the current run.")
        links = st.columns(3)
        links[0].page_link("pages/browse.py", label="Browse its images", icon=":material/photo_library:")
        links[1].page_link("pages/map.py", label="Explore the map", icon=":material/scatter_plot:")
        links[2].page_link("pages/summary.py", label="Run summary", icon=":material/summarize:")
    elif run.state == "failed":
        st.error(f"Run {name} failed: {ui.markdown_literal(run.error or 'see its log')}")
        st.code(ui.plain_log(manager.log_tail(run.id, 20)) or "(empty log)", language=None, wrap_lines=True)
        with st.expander("Driver output (Ray's messages)"):
            st.code(ui.plain_log(manager.log_tail(run.id, 60, output=True)) or "(empty)", language=None)
    elif run.state == "cancelled":
        st.warning(f"Run {name} was cancelled; nothing was published.")


OUTCOME_SHOWN = "outcome_shown"  # the run whose outcome the live slot drew last: the page reruns once it is on screen


@st.fragment(run_every=1.0 if active_now else None)
def live_runs() -> None:
    """Active runs with progress, log and cancel, above the form so a launch shows at once; each second while active.

    The live view and a run's outcome have a slot each, and a slot not in use holds an empty element. Streamlit
    replaces elements by position and lets a new container inherit the children of the one it replaces until the
    script ends: an outcome drawn where the live view was laid the stale live view out in its narrow columns, greyed,
    the page thousands of pixels tall, for the length of the whole-page rerun that follows a run's end. An empty
    element inherits nothing, so the live view goes the moment its slot is emptied, whichever run sends it."""
    current = manager.list()
    active = [run for run in current if run.active]
    watched = next((run for run in current if run.id == st.session_state.get(frame.WATCHED_RUN)), None)
    live_slot = st.container() if active else st.empty()
    if active:
        with live_slot:
            st.subheader("Live")
            past_phases = figures.past_phases(current)
            for run in active:
                draw_active_run(run, past_phases)
    outcome_slot = st.empty()
    if not active and watched:
        with outcome_slot.container():
            draw_outcome(watched)
    shown = st.session_state.get(OUTCOME_SHOWN)
    st.session_state[OUTCOME_SHOWN] = watched.id if watched and not active else None
    rerun, make_current = ui.after_live_tick(bool(active), active_now, watched, shown)
    if make_current:
        st.session_state[frame.REQUEST_CURRENT_RUN] = watched.id
    if rerun:
        st.rerun(scope="app")


live_runs()


def demo_kit_box() -> None:
    """The host's offer to write the offline demo kit and fill the form with it."""
    with st.container(border=True):
        left, right = st.columns([3, 1], vertical_alignment="center")
        left.markdown(
            "**No network?** The offline demo kit holds real handwritten-digit images and a tiny CLIP with "
            "*random weights*: it shows every step end to end, but its map carries no meaning."
        )
        left.caption(f"Written to {ui.markdown_literal(demo_folder)} (the folder beside the runs folder).")
        if right.button("Prepare demo kit", icon=":material/download:", width="stretch"):
            from doggos.pipeline import demo

            with st.spinner("Writing digit images and a random-weights CLIP…"):
                try:
                    kit = demo.make_demo_kit(demo_folder)
                except Exception as error:  # shown to the user; the page stays usable
                    st.error(f"The demo kit could not be written: {ui.markdown_literal(error)}")
                else:
                    st.session_state["pending_form_values"] = {"form_source": kit["source"], "form_model": kit["model"],
                                                               "form_reuse": None}  # a new run, not an update
                    st.session_state["demo_kit_note"] = True
                    st.rerun()
        if st.session_state.pop("demo_kit_note", False):
            st.success("Demo kit ready: the form below now points at its images and model. Press **Launch run**.")


if not participant:
    demo_kit_box()
elif not policy.sources:
    st.info("The host has not allowed any source yet: they set `DOGGOS_SOURCES` or prepare the demo kit.")

if st.session_state.get("form_reuse"):
    note, clear = st.columns([4, 1], vertical_alignment="center")
    note.info(ui.update_note(st.session_state["form_reuse"], runs), icon=":material/update:")
    if clear.button("Full run instead", key="clear_reuse", width="stretch"):
        del st.session_state["form_reuse"]
        st.rerun()
reuse_error = st.empty()  # the updated run cannot be reused (gone, unfinished, another model): said by the note

with st.form("launch"):
    general_error = st.empty()
    if participant:
        st.selectbox("Source", policy.sources, key="form_source", placeholder="none allowed yet",
                     help="The image folders the host allows (`DOGGOS_SOURCES`).")
    else:
        st.text_input("Source", key="form_source", placeholder="/data/dogs  or  s3://bucket/prefix",
                      help="A local folder or s3:// URI whose subfolders are labels and hold the images.")
    errors_at = {"source": st.empty()}
    if participant:
        st.selectbox("Model", policy.models, key="form_model", help="The models the host allows (`DOGGOS_MODELS`).")
    else:
        st.text_input("Model", key="form_model",
                      help="A Hugging Face CLIP id (needs network or a cached copy) or a local folder saved with "
                           "save_pretrained.")
    errors_at["model"] = st.empty()
    device_col, batch_col, concurrency_col, limit_col = st.columns(4)
    with device_col:
        st.radio("Device", DEVICES, key="form_device", horizontal=True,
                 help="auto uses CUDA when the Ray cluster has a GPU, else the CPU.")
        errors_at["device"] = st.empty()
    with batch_col:
        st.text_input("Batch size", key="form_batch_size", placeholder="auto (16 on CPU, 64 on GPU)",
                      help=f"At most {access.PARTICIPANT_MAX_BATCH} for participants." if participant else None)
        errors_at["batch_size"] = st.empty()
    with concurrency_col:
        fixed = participant and policy.max_concurrency is None  # the host leaves it to the plan
        st.text_input("Concurrency", key="form_concurrency", disabled=fixed,
                      placeholder="auto (set by the host)" if fixed else "auto (from the cluster)",
                      help="How many embedder actors (model copies) run at once."
                           + (f" At most {policy.max_concurrency} for participants." if participant and not fixed
                              else ""))
        errors_at["concurrency"] = st.empty()
    with limit_col:
        st.text_input("Image limit", key="form_limit", placeholder="all images",
                      help="Embed only N images, sampled evenly across the labels (each label in turn, so a quick "
                           "try keeps every label while N allows). Seeded: the same source and N pick the same images.")
        errors_at["limit"] = st.empty()
    st.caption(f"This machine: {ui.markdown_literal(machine['text'])}"
               + ("" if machine["cuda_usable"] else " · choose auto or cpu here"))
    if participant:
        cap = f"at most {policy.max_concurrency}" if policy.max_concurrency else "auto"
        st.caption(f"Participant: batch size at most {access.PARTICIPANT_MAX_BATCH}, concurrency {cap}; the Ray "
                   "address and S3 endpoint are the host's.")
    advanced_note = st.empty()
    with st.expander("Advanced: half precision, post-run steps" if participant else
                     "Advanced: Ray cluster, S3 endpoint, half precision, post-run steps",
                     expanded=st.session_state.pop("advanced_errors", False)):
        if not participant:
            st.text_input("Ray address", key="form_ray_address",
                          placeholder="empty: a private local Ray · auto · host:6379 · ray://host:10001",
                          help="Empty (and no $RAY_ADDRESS): the run starts its own Ray on this machine. auto joins "
                               "the Ray cluster already running here; host:port joins a cluster by its head's "
                               "address.")
            errors_at["ray_address"] = st.empty()
            st.text_input("S3 endpoint", key="form_s3_endpoint", placeholder="AWS (or $AWS_ENDPOINT_URL)")
            errors_at["s3_endpoint"] = st.empty()
        st.toggle("Half precision (fp16, CUDA only)", key="form_fp16")
        errors_at["fp16"] = st.empty()
        st.toggle("Compute the default UMAP map as the run's last step", key="form_projection",
                  help="Off: the Map page computes it when first opened.")
        errors_at["projection"] = st.empty()
        st.toggle("Check label quality as the run's last step (neighbours, zero-shot, duplicates)", key="form_quality",
                  help="Off: the Quality page computes it when first opened.")
        errors_at["quality"] = st.empty()
    launched = st.form_submit_button("Launch run", type="primary", icon=":material/play_arrow:")
errors_at["reuse"] = reuse_error

if launched:
    values = {name: st.session_state.get(f"form_{name}") for name in ui.FORM_FIELDS}
    with st.spinner("Checking the source and the model…"):
        result = ui.launch(manager, values, by=visitor)
    for field_name, message in result.errors.items():
        (errors_at.get(field_name) or general_error).error(ui.field_error_text(field_name, message))
    advanced = [ui.FORM_FIELDS[name] for name in result.errors if name in ui.ADVANCED_FIELDS]
    if advanced:  # the expander may be closed: say where to look, and open it on the next run of the page
        advanced_note.error(f"Under **Advanced**: {ui.markdown_literal(', '.join(advanced))} "
                            f"need{'s' if len(advanced) == 1 else ''} a fix.")
        st.session_state["advanced_errors"] = True
    if result.run_id:
        st.session_state[frame.WATCHED_RUN] = result.run_id
        st.session_state.pop("form_reuse", None)  # that update is started; the next launch is a full run again
        st.rerun()  # the live view above the form picks the run up at once

HISTORY_COLUMNS = {
    "run": st.column_config.TextColumn("Run", pinned=True),
    "id": st.column_config.TextColumn("Run id", help="What the CLI takes: the whole id, any part only this run's id "
                                                     "has (e.g. its time, 145918), or the run's name. Select a cell "
                                                     "and copy it (Ctrl+C)"),
    "state": st.column_config.TextColumn("State", width="medium"),
    "story": st.column_config.TextColumn("Story", width="large", help="How an updated or resumed run came to be"),
    "images": "Images", "found": "Found", "failed": "Failed", "labels": "Labels",
    "duration": "Duration", "images/s": st.column_config.TextColumn(figures.RUN_RATE, help=figures.RUN_RATE_HELP),
    "source": st.column_config.TextColumn("Source", help="The end of the source's path or URI (the start, cut, is "
                                                         "under the run's Summary)"),
    "model": "Model",
    "error": st.column_config.TextColumn("Error", width="large", help="Hover a cell to read all of it"),
}


@st.fragment(run_every=2.0 if active_now else None)
def history() -> None:
    st.subheader("History")
    current = manager.list()
    if current:
        st.dataframe(ui.history_rows(current), hide_index=True, column_config=HISTORY_COLUMNS)
    else:
        st.caption(f"No runs yet in {ui.markdown_literal(manager.root)}.")


history()
resumable = [run for run in runs if run.resumable and access.owns(visitor, run)]
if resumable:
    st.markdown("**Failed runs you can resume** (the images they embedded are kept: only the rest is embedded)")
for run in resumable:
    text, action = st.columns([4, 1], vertical_alignment="center")
    text.markdown(f"{ui.markdown_literal(ui.run_name(run))} · {ui.markdown_literal(run.error or 'failed')}")
    if action.button("Resume", key=f"resume-{run.id}", icon=":material/replay:", width="stretch"):
        if problem := ui.resume(manager, run.id, by=visitor):
            st.error(f"Run {ui.markdown_literal(ui.run_name(run))} cannot resume: {ui.markdown_literal(problem)}")
        else:
            st.session_state[frame.WATCHED_RUN] = run.id
            st.rerun()  # the live view picks it up

finished = {run.id: run for run in runs if run.state == "succeeded" and run.manifest and run.config and (
    not participant or (policy.allowed_source(run.config.source) and policy.allowed_model(run.config.model)))}
removable = {run.id: run for run in runs if not run.active} if not participant else {}  # only the host deletes
menus = st.container(horizontal=True)
if finished:
    with menus.popover("Update a finished run…", icon=":material/update:"):
        chosen = st.selectbox("Run to update", list(finished), key="update_run_id",
                              format_func=lambda run_id: f"{ui.run_name(finished[run_id])} ({run_id})")
        st.caption("Fills the form with its settings: a new run then embeds only the images that are new or changed "
                   "since, and carries the others' rows over.")
        if st.button("Update this run", type="primary", key="update_run_confirm") and chosen in finished:
            st.session_state["pending_form_values"] = ui.update_form_values(finished[chosen])
            st.toast(f"The form above now updates run {chosen}: press Launch run")
            st.rerun()
if removable:
    with menus.popover("Delete a run…", icon=":material/delete:"):
        doomed = st.selectbox("Run to delete", list(removable), key="delete_run_id",
                              format_func=lambda run_id: f"{ui.run_name(removable[run_id])} ({run_id})")
        st.caption("Deletes its folder: Parquet, thumbnails, maps, reports and log.")
        if st.button("Delete permanently", type="primary", key="delete_run_confirm") and doomed:
            manager.delete(doomed, by=visitor)
            if st.session_state.get(frame.WATCHED_RUN) == doomed:
                del st.session_state[frame.WATCHED_RUN]
            if st.session_state.get("form_reuse") == str(removable[doomed].path):
                del st.session_state["form_reuse"]  # nothing left to update: the form is a full run again
            st.toast(f"Deleted run {doomed}")
            st.rerun()
