"""Host mode's policy and its server-side checks: loading the policy, every refusal a participant meets (through
RunManager, so a forged form is refused before anything is spawned), the password, and names on label decisions."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from _dashboard_fixtures import write_failed_run, write_fake_run

from doggos.base import decisions
from doggos.base.config import DEFAULT_MODEL, ConfigError, RunConfig, problems_of
from doggos.runs import access, manager as manager_module
from doggos.runs.access import AccessDenied, HostPolicy
from doggos.runs.manager import RunManager


@pytest.fixture
def kit(tmp_path):
    """A runs root and a prepared demo kit beside it (folders only: the policy only looks for them)."""
    root = tmp_path / "runs"
    root.mkdir()
    (tmp_path / "demo" / "digits" / "one").mkdir(parents=True)
    (tmp_path / "demo" / "clip-random-weights-tiny").mkdir()
    return root


@pytest.fixture
def policy(tmp_path, kit):
    allowed = tmp_path / "data" / "dogs"
    allowed.mkdir(parents=True)
    environ = {access.PASSWORD_ENV: "s3cret", access.SOURCES_ENV: f"{allowed}{os.pathsep}s3://bucket/cats/"}
    return HostPolicy.load(environ=environ, runs_root=kit)


def fields_of(problems) -> list[str]:
    return [p.field for p in problems]


# ---- loading the policy ---------------------------------------------------------------------------------------------

def test_without_a_password_everybody_is_the_host(kit):
    policy = HostPolicy.load(secrets={}, environ={}, runs_root=kit)
    assert policy.open and policy.visitor("t").is_host
    assert HostPolicy.load(secrets=None, environ={access.PASSWORD_ENV: ""}, runs_root=kit).open  # empty: not set


def test_the_password_comes_from_the_environment_else_secrets_toml(kit):
    secrets = {"doggos": {"host_password": "from-secrets"}}
    assert HostPolicy.load(secrets=secrets, environ={}, runs_root=kit).password == "from-secrets"
    both = HostPolicy.load(secrets=secrets, environ={access.PASSWORD_ENV: "from-env"}, runs_root=kit)
    assert both.password == "from-env" and "from-env" not in repr(both)  # never printed with the policy
    policy = HostPolicy.load(secrets=secrets, environ={}, runs_root=kit)
    assert policy.visitor("t").role == "participant" and policy.visitor("t", unlocked=True).is_host


def test_a_password_that_is_not_text_in_secrets_toml_is_refused(kit):
    with pytest.raises(ConfigError, match="host_password: under \\[doggos\\].*must be text.*quote it"):
        HostPolicy.load(secrets={"doggos": {"host_password": 1234}}, environ={}, runs_root=kit)


def test_sources_default_to_the_demo_kit_once_prepared(tmp_path, kit):
    policy = HostPolicy.load(environ={}, runs_root=kit)
    assert policy.sources == (str(tmp_path / "demo" / "digits"),)
    assert policy.models == (str(tmp_path / "demo" / "clip-random-weights-tiny"), DEFAULT_MODEL)
    bare = tmp_path / "elsewhere" / "runs"
    assert HostPolicy.load(environ={}, runs_root=bare).sources == ()  # no kit yet: nothing to launch on
    assert HostPolicy.load(environ={}, runs_root=bare).models == (DEFAULT_MODEL,)


def test_sources_and_models_from_the_environment_keep_uris_whole(tmp_path, kit, monkeypatch):
    monkeypatch.chdir(tmp_path)
    environ = {access.SOURCES_ENV: f"s3://bucket/dogs/{os.pathsep}data{os.pathsep}{os.pathsep}gs://b/x",
               access.MODELS_ENV: f"openai/clip-vit-base-patch32{os.pathsep}./models/mine"}
    policy = HostPolicy.load(environ=environ, runs_root=kit)
    assert policy.sources == ("s3://bucket/dogs", str(tmp_path / "data"), "gs://b/x")
    assert policy.models == ("openai/clip-vit-base-patch32", str(tmp_path / "models" / "mine"))


@pytest.mark.parametrize("value", ["0", "two", "1.5", "5000"])
def test_a_bad_max_concurrency_names_the_variable(kit, value):
    with pytest.raises(ConfigError) as error:
        HostPolicy.load(environ={access.MAX_CONCURRENCY_ENV: value}, runs_root=kit)
    assert error.value.field == "DOGGOS_MAX_CONCURRENCY" and "whole number from 1 to 1024" in error.value.message


def test_max_concurrency_reads_a_number(kit):
    assert HostPolicy.load(environ={access.MAX_CONCURRENCY_ENV: " 3 "}, runs_root=kit).max_concurrency == 3
    assert HostPolicy.load(environ={}, runs_root=kit).max_concurrency is None


# ---- what a participant may launch ----------------------------------------------------------------------------------

def test_a_listed_source_and_model_pass_however_they_are_spelled(tmp_path, policy, monkeypatch):
    participant = policy.visitor("t")
    monkeypatch.chdir(tmp_path)
    for source in (str(tmp_path / "data" / "dogs"), str(tmp_path / "data" / "dogs") + "/", "data/dogs",
                   str(tmp_path / "data" / "x" / ".." / "dogs"), f"file://{tmp_path}/data/dogs", "s3://bucket/cats"):
        assert access.start_problems(participant, {"source": source, "model": DEFAULT_MODEL}) == [], source


def test_an_unlisted_source_is_refused_whatever_the_trick(tmp_path, policy):
    participant = policy.visitor("t")
    allowed = tmp_path / "data" / "dogs"
    (tmp_path / "data" / "dogs-private").mkdir()
    (allowed / "inner").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "data" / "dogs-private")
    (allowed / "escape").symlink_to(tmp_path / "data" / "dogs-private")
    tricks = (f"{allowed}-private", str(allowed / "inner"), f"{allowed}/../dogs-private", str(tmp_path / "link"),
              str(allowed / "escape"), "/etc", "s3://bucket/cats-secret", "s3://bucket/cats/../dogs", "s3://bucket")
    for source in tricks:
        problems = access.start_problems(participant, {"source": source})
        assert fields_of(problems) == ["source"], source
        assert "is not one of the sources the host allows" in problems[0].message


def test_every_setting_only_the_host_may_choose_is_refused(tmp_path, policy, kit):
    participant = policy.visitor("t")
    settings = {"source": str(tmp_path / "data" / "dogs"), "model": "/models/mine", "ray_address": "head:6379",
                "s3_endpoint": "http://127.0.0.1:9000", "reuse": str(tmp_path / "old-run"), "batch_size": 65,
                "concurrency": 1}
    problems = access.start_problems(participant, settings, kit)
    assert fields_of(problems) == ["model", "ray_address", "s3_endpoint", "reuse", "batch_size", "concurrency"]
    messages = {p.field: p.message for p in problems}
    assert "not one of the models the host allows" in messages["model"]
    assert messages["batch_size"] == "must be at most 64 for participants (got 65)"
    assert messages["concurrency"] == "is set by the host: leave it empty (auto)"
    assert policy.visitor("t", unlocked=True).is_host
    assert access.start_problems(policy.visitor("t", unlocked=True), settings, kit) == []  # the host chooses freely


def test_a_participant_updates_runs_of_the_runs_root_and_stays_under_the_concurrency_cap(tmp_path, kit):
    environ = {access.PASSWORD_ENV: "p", access.MAX_CONCURRENCY_ENV: "2"}
    participant = HostPolicy.load(environ=environ, runs_root=kit).visitor("t")
    ok = {"reuse": str(kit / "20250101-120000-0001"), "batch_size": 64, "concurrency": 2}
    assert access.start_problems(participant, ok, kit) == []
    problems = access.start_problems(participant, {"concurrency": 3, "reuse": str(kit / "a" / "b")}, kit)
    assert fields_of(problems) == ["reuse", "concurrency"]
    assert "at most 2 for participants (the host's DOGGOS_MAX_CONCURRENCY; got 3)" in problems[1].message


def no_spawn(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a driver was spawned")

    monkeypatch.setattr(manager_module, "spawn_detached", refuse)


def test_a_forged_launch_of_an_unlisted_source_is_refused_before_anything_exists(tmp_path, policy, kit, monkeypatch):
    no_spawn(monkeypatch)
    forged = RunConfig(source=str(tmp_path / "data"), model=DEFAULT_MODEL, ray_address="auto")
    with pytest.raises(ConfigError) as error:
        RunManager(kit).start(forged, check=False, by=policy.visitor("t"))
    assert fields_of(problems_of(error.value)) == ["source", "ray_address"]
    assert all(isinstance(p, AccessDenied) for p in problems_of(error.value))
    assert list(kit.iterdir()) == []


def test_a_participants_run_records_its_owner_by_hash_and_name(tmp_path, policy, kit, monkeypatch):
    spawned = []

    def fake_spawn(*args, **kwargs):
        spawned.append(subprocess.Popen(["sleep", "30"], start_new_session=True))
        return spawned[-1]

    monkeypatch.setattr(manager_module, "spawn_detached", fake_spawn)
    visitor = policy.visitor("session-token", name="Ana")
    try:
        run_id = RunManager(kit).start(RunConfig(source=str(tmp_path / "data" / "dogs")), check=False, by=visitor)
    finally:
        for process in spawned:
            process.kill()
            process.wait()
    record = json.loads((kit / run_id / access.OWNER_FILE).read_text())
    assert record == {"token_sha256": visitor.token_hash, "name": "Ana", "role": "participant"}
    assert "session-token" not in (kit / run_id / access.OWNER_FILE).read_text()
    run = RunManager(kit).get(run_id)
    assert access.owns(visitor, run) and not access.owns(policy.visitor("other"), run)


# ---- cancel, resume, delete -----------------------------------------------------------------------------------------

def owned_failed_run(kit, owner) -> str:
    run = write_failed_run(kit)
    if owner is not None:
        access.record_owner(run, owner)
    return run.name


def test_a_participant_cannot_cancel_or_resume_another_sessions_run(policy, kit):
    run_id = owned_failed_run(kit, policy.visitor("alice"))
    manager = RunManager(kit)
    for action in (lambda: manager.cancel(run_id, by=policy.visitor("bob")),
                   lambda: manager.resume(run_id, by=policy.visitor("bob"))):
        with pytest.raises(AccessDenied) as error:
            action()
        assert error.value.field == "run" and "launched from another browser session" in error.value.message
    assert manager.cancel(run_id, by=policy.visitor("alice")).state == "failed"  # allowed: nothing left to stop
    assert manager.cancel(run_id, by=policy.visitor("bob", unlocked=True)).state == "failed"  # the host may


def test_a_run_launched_from_the_command_line_is_the_hosts(policy, kit):
    run_id = owned_failed_run(kit, None)
    with pytest.raises(AccessDenied):
        RunManager(kit).cancel(run_id, by=policy.visitor("alice"))
    assert RunManager(kit).cancel(run_id).state == "failed"  # by=None: the CLI, full control


def test_resuming_ones_own_run_still_checks_its_settings(policy, kit):
    run_id = owned_failed_run(kit, policy.visitor("alice"))  # its source, /nowhere, is not allowed
    with pytest.raises(ConfigError, match="source: '/nowhere' is not one of the sources") as error:
        RunManager(kit).resume(run_id, by=policy.visitor("alice"))
    assert fields_of(problems_of(error.value)) == ["source", "model"]


def test_a_participant_never_deletes(policy, kit):
    run = write_fake_run(kit)
    access.record_owner(run, policy.visitor("alice"))
    with pytest.raises(AccessDenied, match="participants cannot delete runs: ask the host"):
        RunManager(kit).delete(run.name, by=policy.visitor("alice"))
    assert run.exists()
    RunManager(kit).delete(run.name, by=policy.visitor("alice", unlocked=True))
    assert not run.exists()


# ---- the password ---------------------------------------------------------------------------------------------------

def test_the_right_password_unlocks_at_once_and_a_wrong_one_waits_two_seconds(policy):
    waits = []
    assert policy.check_password("s3cret", sleep=waits.append) and waits == []
    assert not policy.check_password("s3cret ", sleep=waits.append) and waits == [2.0]
    assert not policy.check_password("", sleep=waits.append) and waits == [2.0, 2.0]
    assert HostPolicy(password=None).check_password("anything", sleep=waits.append) and len(waits) == 2


def test_the_password_is_compared_in_constant_time(policy, monkeypatch):
    compared = []
    real = access.hmac.compare_digest
    monkeypatch.setattr(access.hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real(a, b))
    assert policy.check_password("s3cret")
    assert compared == [(b"s3cret", b"s3cret")]


# ---- names on label decisions ---------------------------------------------------------------------------------------

def test_decisions_and_undos_carry_the_name_given(tmp_path):
    images = [decisions.Image(0, "/d/a.jpg", "a")]
    decisions.record(tmp_path, "keep", images)
    action = decisions.record(tmp_path, "exclude", images, by="  Ana   Lopez ")
    decisions.undo(tmp_path, action=action, by="Bo")
    lines = [json.loads(line) for line in (tmp_path / "decisions.jsonl").read_text().splitlines()]
    assert ["by" in lines[0], lines[1]["by"], lines[2]["by"]] == [False, "Ana Lopez", "Bo"]
    assert [e.by for e in decisions.read_log(tmp_path)] == [None, "Ana Lopez", "Bo"]


@pytest.mark.parametrize("name", ["", "   ", "bell\x07", "x" * 61])
def test_an_unusable_name_records_nothing(tmp_path, name):
    with pytest.raises(decisions.DecisionError) as error:
        decisions.record(tmp_path, "keep", [decisions.Image(0, "/d/a.jpg", "a")], by=name)
    assert error.value.field == "by"
    assert decisions.read_log(tmp_path) == []
