"""Host mode in the dashboard: who this browser session is (host or participant), and the sidebar's password field."""

from __future__ import annotations

import secrets
import threading

import streamlit as st

from dashboard import ui
from doggos.base.config import ConfigError
from doggos.runs import access
from doggos.runs.manager import default_root

SESSION_TOKEN = "host_session_token"  # random, made once per browser session: whose runs are whose
UNLOCKED = "host_unlocked"  # this session gave the host password
PARTICIPANT_NAME = "participant_name"  # typed once, recorded with runs and label decisions
OPEN_NOTE = "Open to anyone who can reach this address — see README: Workshops"


def policy() -> access.HostPolicy:
    """The host policy as configured now (environment, then `.streamlit/secrets.toml`); a malformed setting stops the
    page with its message (never an open app by mistake)."""
    try:
        return access.HostPolicy.load(secrets=_secrets(), runs_root=default_root())
    except ConfigError as error:
        st.error(f"Host mode is misconfigured: {ui.markdown_literal(error)}", icon=":material/error:")
        st.stop()


def visitor() -> access.Visitor:
    """This browser session as the run manager's checks see it. Its token and role live under keys no widget has,
    so a browser cannot set them."""
    token = st.session_state.setdefault(SESSION_TOKEN, secrets.token_urlsafe(16))
    return policy().visitor(token, unlocked=bool(st.session_state.get(UNLOCKED)),
                            name=st.session_state.get(PARTICIPANT_NAME))


def sidebar() -> None:
    """The sidebar's host-mode part: the open note without a password; else the role and the Host password field."""
    current = visitor()
    if current.policy.open:
        st.caption(OPEN_NOTE)
        return
    if current.is_host:
        st.badge("Host", icon=":material/key:", color="green")
        return
    who = f"Participant · {ui.markdown_literal(current.name)}" if current.name else "Participant"
    st.badge(who, icon=":material/person:", color="blue")
    with st.form("host_unlock", clear_on_submit=True, border=False):
        given = st.text_input("Host password", type="password",
                              help="The host's password unlocks full control (any source, cancel and delete any run) "
                                   "for this browser session.")
        unlock = st.form_submit_button("Unlock", icon=":material/lock_open:")
    if unlock:
        # One try at a time for the whole server: with the 2 s wait inside the lock, opening many sessions does not
        # buy a guesser more than one wrong try per 2 s.
        with _password_lock():
            right = current.policy.check_password(given)  # a wrong one waits 2 s before it says so
        if right:
            st.session_state[UNLOCKED] = True
            st.rerun(scope="app")
        st.error("Wrong host password.", icon=":material/lock:")


@st.cache_resource(show_spinner=False)
def _password_lock() -> threading.Lock:
    return threading.Lock()


def fit_form(values: dict, policy: access.HostPolicy) -> None:
    """Clear batch size or concurrency beyond a participant's caps in form values an update copied from an old run:
    a disabled field could never be emptied again, and every launch would be refused."""
    caps = {"form_batch_size": access.PARTICIPANT_MAX_BATCH, "form_concurrency": policy.max_concurrency or 0}
    for key, cap in caps.items():
        text = str(values.get(key) or "").strip()
        if text and not (text.isdigit() and int(text) <= cap):
            values[key] = ""


def _secrets() -> dict:
    """st.secrets as a plain dict; {} without a secrets.toml (a malformed one is raised: no silent open app)."""
    try:
        return st.secrets.to_dict()
    except FileNotFoundError as error:  # StreamlitSecretNotFoundError: no file, or one that does not parse
        if getattr(error, "error_id", None) == "no-secrets-found":
            return {}
        raise
