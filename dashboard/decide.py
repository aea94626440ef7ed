"""Label decisions in the dashboard: one image's actions (dialogs, the review queue) and a selection's bulk bar.

Every button records through `doggos.base.decisions` (the CLI's module) with source "dashboard", then reruns the whole
app: the pages' label caches are keyed by the log's version, so every page and session shows the decision next. In host
mode each decision carries who made it: a participant types a name once, before their first decision.
"""

from __future__ import annotations

from typing import Sequence

import streamlit as st

from dashboard import frame, host, ui
from doggos.base import decisions, units

NAME_ERROR = "participant_name_error"  # why the name typed cannot be recorded, shown once under the field


def decider() -> str | None:
    """Who decides, as recorded with a decision: None without host mode; the name typed, else "host" for the host."""
    visitor = host.visitor()
    if visitor.policy.open:
        return None
    return visitor.name or ("host" if visitor.is_host else None)


def asked_name(key: str) -> bool:
    """True once this session may decide; a participant without a name is asked for one first (once per session)."""
    visitor = host.visitor()
    if visitor.policy.open or visitor.is_host or visitor.name:
        return True
    st.text_input("Your name, recorded with your label decisions", key=f"{key}-name", on_change=_keep_name,
                  args=(f"{key}-name",), max_chars=decisions.MAX_NAME_CHARS, placeholder="Type it, then press Enter")
    if problem := st.session_state.pop(NAME_ERROR, None):
        st.error(ui.markdown_literal(problem), icon=":material/error:")
    return False


def _keep_name(widget_key: str) -> None:
    try:
        st.session_state[host.PARTICIPANT_NAME] = decisions.check_name(st.session_state.get(widget_key), "name")
    except decisions.DecisionError as error:
        st.session_state[NAME_ERROR] = str(error)


def label_state(run) -> decisions.LabelState:
    """The decisions in effect for `run`, read once per log version."""
    return _state(str(run.path), decisions.version(run.path))


@st.cache_data(max_entries=16, show_spinner=False)
def _state(run_path: str, version: tuple[int, int]) -> decisions.LabelState:
    return decisions.state(run_path)


def _images(run, rows: Sequence[int]) -> list[decisions.Image]:
    index = frame.run_index(run)
    chosen = index.iloc[[int(r) for r in rows]]
    folder = chosen["folder_label"] if "folder_label" in chosen else chosen["label"]
    return [decisions.Image(int(r), str(p), "" if f is None or f != f else str(f))
            for r, p, f in zip(chosen["row"], chosen["path"], folder)]


def apply(run, decision: str, rows: Sequence[int], new_label=None, then=None) -> bool:
    """Record `decision` on `rows`; True when recorded (a problem is drawn as an error). `then()` runs after it (the
    queue moves on), then the app reruns."""
    if not asked_name("decision"):  # a caller without its own name field (the duplicates' buttons) asks here
        return False
    try:
        action = decisions.record(run.path, decision, _images(run, rows), new_label, source="dashboard", by=decider())
    except decisions.DecisionError as error:
        st.error(ui.markdown_literal(error), icon=":material/error:")
        return False
    except OSError as error:  # a read-only run folder, a full disk: nothing was recorded
        st.error(f"The decision could not be recorded: {ui.markdown_literal(error)}", icon=":material/error:")
        return False
    st.session_state[frame.DECISION_NOTICE] = f"Done: {decisions.describe(run.path, action)}"
    if then is not None:
        then()
    st.rerun(scope="app")
    return True


def undo(run, action: int | None = None, then=None) -> None:
    """Take back `action` (default: the newest in effect) and rerun."""
    if not asked_name("decision"):  # an undo is a decision too: it carries the participant's name
        return
    try:
        taken = decisions.undo(run.path, 1, source="dashboard", action=action, by=decider())
    except decisions.DecisionError as error:
        st.error(ui.markdown_literal(error), icon=":material/error:")
        return
    except OSError as error:
        st.error(f"The undo could not be recorded: {ui.markdown_literal(error)}", icon=":material/error:")
        return
    st.session_state[frame.DECISION_NOTICE] = f"Undone: {decisions.describe(run.path, taken[0])}"
    if then is not None:
        then()
    st.rerun(scope="app")


def effect_text(effect: decisions.Effect | None) -> str:
    """One image's decision in words ("" when none): "Relabelled beagle → husky", "Excluded", "Marked right"."""
    if effect is None:
        return ""
    if effect.excluded:
        return "Excluded from the dataset"
    if effect.decision == "relabel":
        return f"Relabelled {effect.folder_label} → {effect.label}"
    return "Marked right: its label stays"


def image_actions(run, row: int, *, suggested: str | None = None, key: str = "dialog", shortcuts: bool = False,
                  then=None) -> None:
    """Draw Accept suggestion / Relabel / Label is right / Exclude / Undo for one image; reruns the app on a decision.

    `suggested`: the label check's suggestion (an Accept button when it differs from the current label). `shortcuts`:
    keyboard keys on the buttons (one set per page: the review queue's). `then()` runs after a decision (the queue
    moves to the next image)."""
    if not asked_name(key):
        return
    item = frame.run_index(run).iloc[int(row)]
    effect = label_state(run).effects.get(str(item["path"]))
    current = str(item["label"])  # the index's label is the effective one
    if effect is not None:
        text_col, undo_col = st.columns([3, 1], vertical_alignment="center")
        text_col.markdown(f"**{ui.markdown_literal(effect_text(effect))}**")
        if undo_col.button("Undo", key=f"{key}-undo", icon=":material/undo:", width="stretch",
                           help=f"Take back: {decisions.describe(run.path, effect.action)}"):
            undo(run, effect.action, then=None)
    if suggested and suggested != current and st.button(
            f"Accept suggestion (→ {suggested})", key=f"{key}-accept", type="primary", icon=":material/check:",
            width="stretch", shortcut="A" if shortcuts else None):
        apply(run, "relabel", [row], suggested, then)
    names = [name for name in frame.label_names(run) if name]
    target_col, relabel_col = st.columns([3, 2], vertical_alignment="bottom")
    target = target_col.selectbox("Relabel to", names, index=None, key=f"{key}-target", accept_new_options=True,
                                  placeholder="Pick a label or type a new one")
    if relabel_col.button("Relabel", key=f"{key}-relabel", icon=":material/label:", width="stretch",
                          shortcut="L" if shortcuts else None, help="File this image under the label picked beside"):
        if target is None:
            st.warning("Pick a label to relabel to (or type a new one) first.")
        else:
            apply(run, "relabel", [row], target, then)
    right_col, exclude_col = st.columns(2)
    if right_col.button("Label is right", key=f"{key}-keep", icon=":material/verified:", width="stretch",
                        shortcut="K" if shortcuts else None, help="Reviewed: it leaves the suspects"):
        apply(run, "keep", [row], None, then)
    if exclude_col.button("Exclude", key=f"{key}-exclude", icon=":material/block:", width="stretch",
                          shortcut="X" if shortcuts else None,
                          help="Not part of the dataset (junk, another species, the second copy of a duplicate)"):
        apply(run, "exclude", [row], None, then)


def bulk_bar(run, rows: Sequence[int], *, key: str) -> None:
    """Draw the bulk actions for `rows` ("relabel these 14 as …", labels are right, exclude, undo); reruns on a
    decision."""
    rows = [int(r) for r in rows]
    if not rows or not asked_name(key):
        return
    names = [name for name in frame.label_names(run) if name]
    these = f"these {units.count(len(rows))}" if len(rows) > 1 else "this one"
    with st.container(border=True):
        target_col, relabel_col, keep_col, exclude_col, undo_col = st.columns(
            [3, 2, 2, 2, 1.4], vertical_alignment="bottom")
        target = target_col.selectbox(f"Relabel {these} as", names, index=None, key=f"{key}-target",
                                      accept_new_options=True, placeholder="Pick a label or type a new one")
        if relabel_col.button(f"Relabel {units.count(len(rows))}", key=f"{key}-relabel", icon=":material/label:",
                              width="stretch",
                              disabled=target is None):
            apply(run, "relabel", rows, target)
        if keep_col.button("Labels are right", key=f"{key}-keep", icon=":material/verified:", width="stretch"):
            apply(run, "keep", rows)
        if exclude_col.button(f"Exclude {units.count(len(rows))}", key=f"{key}-exclude", icon=":material/block:",
                              width="stretch"):
            apply(run, "exclude", rows)
        newest = label_state(run).actions
        if undo_col.button("Undo", key=f"{key}-undo", icon=":material/undo:", width="stretch", disabled=not newest,
                           help=f"Take back: {decisions.describe(run.path, newest[-1])}" if newest
                           else "Nothing to undo"):
            undo(run, newest[-1])  # the action its help names, whatever another tab recorded since
