"""Host mode through AppTest: the sidebar's note, badge and password field; the Run page as a participant (select
boxes, no Ray address, no delete, cancel only one's own run); a participant's name on label decisions."""

from __future__ import annotations

import json
import subprocess

import pytest
from _dashboard_fixtures import button, misfile, open_page, precompute_quality, unescape_markdown, write_fake_run

from dashboard import host
from doggos.base import decisions
from doggos.base.config import DEFAULT_MODEL, RunConfig
from doggos.base.processes import process_start
from doggos.base.records import Progress, update_status
from doggos.base.rundir import RunDir
from doggos.runs import access
from doggos.runs.manager import RunManager

pytestmark = pytest.mark.usefixtures("every_run_goes_through_app_py")  # conftest.py says why
PASSWORD = "workshop-42"
PARTICIPANT_BADGE, HOST_BADGE = ":blue-badge[:material/person: Participant]", ":green-badge[:material/key: Host]"
TOKEN = "my-session-token"


@pytest.fixture
def host_mode(runs_root, tmp_path, monkeypatch):
    """A password and one allowed source; returns the source."""
    source = tmp_path / "allowed"
    source.mkdir()
    monkeypatch.setenv(access.PASSWORD_ENV, PASSWORD)
    monkeypatch.setenv(access.SOURCES_ENV, str(source))
    monkeypatch.setattr(access, "WRONG_PASSWORD_WAIT_S", 0.01)  # the 2 s itself: tests/test_access.py
    return source


@pytest.fixture
def recorded_starts(monkeypatch):
    calls = []

    def fake_start(self, config, check=True, by=None):
        calls.append((config, by))
        return "20990101-000000-beef"

    monkeypatch.setattr(RunManager, "start", fake_start)
    return calls


def sidebar_texts(at) -> list[str]:
    return [e.value for kind in ("markdown", "caption") for e in at.sidebar.get(kind)]


def password_field(at):
    return next(t for t in at.text_input if t.label == "Host password")


def test_an_open_app_says_so_in_one_line_and_keeps_the_free_form(runs_root):
    at = open_page("pages/run.py")
    assert host.OPEN_NOTE in sidebar_texts(at)
    assert not [t for t in at.text_input if t.label == "Host password"]
    assert at.text_input(key="form_source") and at.text_input(key="form_ray_address")


def test_a_participant_launches_only_from_the_hosts_lists(host_mode, recorded_starts):
    at = open_page("pages/run.py", **{host.SESSION_TOKEN: TOKEN})
    assert PARTICIPANT_BADGE in sidebar_texts(at)
    assert host.OPEN_NOTE not in sidebar_texts(at)
    assert at.selectbox(key="form_source").options == [str(host_mode)]
    assert at.selectbox(key="form_model").options == [DEFAULT_MODEL]
    keys = {t.key for t in at.text_input}
    assert not keys & {"form_source", "form_model", "form_ray_address", "form_s3_endpoint"}
    assert at.text_input(key="form_concurrency").disabled  # no DOGGOS_MAX_CONCURRENCY: the plan decides
    assert any("batch size at most 64" in c.value for c in at.caption)
    assert not [b for b in at.button if b.label == "Prepare demo kit"]
    button(at, "Launch run").click().run()
    assert not at.error, [e.value for e in at.error]
    [(config, by)] = recorded_starts
    assert config == RunConfig(source=str(host_mode), model=DEFAULT_MODEL)
    assert by.role == "participant" and by.token == TOKEN  # the manager checks it again


def test_a_participants_too_large_batch_is_refused_on_its_field(host_mode, recorded_starts):
    at = open_page("pages/run.py")
    at.text_input(key="form_batch_size").input("65")
    button(at, "Launch run").click().run()
    assert [e.value for e in at.error] == ["**Batch size** (`batch_size`): must be at most 64 for participants "
                                           "\\(got 65\\)"]
    assert recorded_starts == []


def live_run(root, run_id: str, owner) -> subprocess.Popen:
    """An active run whose 'driver' is `sleep`, launched by `owner` (a Visitor, or None: from the command line)."""
    driver = subprocess.Popen(["sleep", "60"], start_new_session=True)
    run = RunDir(root / run_id)
    run.path.mkdir()
    run.config.write_text(json.dumps(RunConfig(source="/data/dogs", model="m").to_dict()))
    if owner is not None:
        access.record_owner(run.path, owner)
    update_status(run, state="running", pid=driver.pid, pid_start=process_start(driver.pid),
                  created_at="2025-01-05T00:00:00+00:00", progress=Progress(found=10, embedded=4, phase="embedding"))
    return driver


def test_a_participant_cancels_only_its_own_run_and_deletes_none(runs_root, host_mode):
    policy = access.HostPolicy.load(runs_root=runs_root)
    write_fake_run(runs_root)  # a finished run: the host could delete it
    drivers = [live_run(runs_root, "20250105-000000-mine", policy.visitor(TOKEN, name="Ana")),
               live_run(runs_root, "20250105-000001-them", policy.visitor("someone else", name="Bo"))]
    try:
        at = open_page("pages/run.py", **{host.SESSION_TOKEN: TOKEN})
        cancels = {b.key for b in at.button if b.label == "Cancel run"}
        assert cancels == {"cancel-20250105-000000-mine"}
        assert any("Launched by Bo from another browser session" in c.value for c in at.caption)
        assert not [s for s in at.selectbox if s.key == "delete_run_id"]
        at.button(key="cancel-20250105-000000-mine").click().run()
        assert RunManager().get("20250105-000000-mine").state == "cancelled"
        assert RunManager().get("20250105-000001-them").state == "running"
    finally:
        for driver in drivers:
            driver.kill()
            driver.wait()


def test_the_host_password_unlocks_full_control_and_a_wrong_one_is_refused(runs_root, host_mode):
    write_fake_run(runs_root)
    at = open_page("pages/run.py")
    password_field(at).input("guess")
    button(at, "Unlock").click().run()
    assert [e.value for e in at.sidebar.error] == ["Wrong host password."]
    assert PARTICIPANT_BADGE in sidebar_texts(at)
    assert at.selectbox(key="form_source")
    password_field(at).input(PASSWORD)
    button(at, "Unlock").click().run()
    assert not at.sidebar.error
    assert HOST_BADGE in sidebar_texts(at) and not [t for t in at.text_input if t.label == "Host password"]
    assert at.text_input(key="form_source") and at.text_input(key="form_ray_address")  # the free form again
    assert at.selectbox(key="delete_run_id")


def test_a_participant_names_themself_once_before_the_first_decision(runs_root, host_mode):
    run = write_fake_run(runs_root)
    misfile(run)
    precompute_quality(run)
    at = open_page("pages/quality.py")
    assert not [b for b in at.button if b.key == "queue-keep"]  # asked for a name first
    at.text_input(key="queue-name").input("Ana").run()
    at.button(key="queue-keep").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert [line.by for line in decisions.read_log(run)] == ["Ana"]
    assert ":blue-badge[:material/person: Participant · Ana]" in sidebar_texts(at)
    assert not [t for t in at.text_input if t.key == "queue-name"]  # asked once


def test_a_malformed_setting_stops_the_page_with_its_name(runs_root, monkeypatch):
    monkeypatch.setenv(access.PASSWORD_ENV, PASSWORD)
    monkeypatch.setenv(access.MAX_CONCURRENCY_ENV, "many")
    at = open_page("pages/run.py")
    assert [unescape_markdown(e.value) for e in at.error] == [
        "Host mode is misconfigured: DOGGOS_MAX_CONCURRENCY: must be a whole number from 1 to 1024 (got 'many'); "
        "unset, participants leave concurrency on auto"]
    assert not [b for b in at.button if b.label == "Launch run"]


def test_an_update_beyond_the_caps_leaves_a_participant_a_form_that_launches(tmp_path):
    # An update copies the old run's settings: a concurrency the participant's disabled field could never clear.
    uncapped = access.HostPolicy(password=PASSWORD, runs_root=tmp_path)
    state = {"form_batch_size": "128", "form_concurrency": "2"}
    host.fit_form(state, uncapped)
    assert state == {"form_batch_size": "", "form_concurrency": ""}
    capped = access.HostPolicy(password=PASSWORD, runs_root=tmp_path, max_concurrency=2)
    state = {"form_batch_size": "32", "form_concurrency": "2"}
    host.fit_form(state, capped)
    assert state == {"form_batch_size": "32", "form_concurrency": "2"}  # within the caps: kept
    state = {"form_batch_size": "", "form_concurrency": "3"}
    host.fit_form(state, capped)
    assert state == {"form_batch_size": "", "form_concurrency": ""}
