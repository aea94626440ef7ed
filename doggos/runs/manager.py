"""Background runs: start a detached driver per run, track it on disk, cancel it, list and delete past runs."""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import signal
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Callable, Sequence

from doggos.base import units
from doggos.base.config import ConfigError, RunConfig
from doggos.base.processes import (PROJECT_ROOT, alive, driver_nice, how_it_ended, kill_all, process_start, reap,
                                   signal_group, spawn_detached, with_environment)
from doggos.base.records import (ACTIVE_STATES, Manifest, Progress, RecordError, RunStatus, read_manifest, read_status,
                                 update_status)
from doggos.base.rundir import RunDir, now_iso, read_json, run_dir_of, write_json_atomic
from doggos.pipeline import preflight, reuse
from doggos.runs import access, naming, warm
from doggos.runs.steps import Step

# A cancel SIGTERMs the driver, which stops feeding work and records `cancelled` in well under a second (see
# docs/architecture.md, "Cancel"); one that has not by CANCEL_GRACE_S (its main thread in a long C call) is killed.
# Once it has, it gets REAP_WAIT_S to leave by itself (a warm Ray's job disconnects in ~0.3 s) before its leftovers,
# its private local Ray shutting down among them, are killed: `cancelled` within 3 s at any phase on 2 cores.
CANCEL_GRACE_S = 2.0
REAP_WAIT_S = 0.5
IN_FLIGHT_FRESH_S = 10.0  # an operators sample older than this says nothing about what is in flight now
RUN_ENV = "DOGGOS_RUN_ID"  # set in each driver's environment; its Ray processes inherit it, so they can be found


def default_root() -> Path:
    """Where runs live: $DOGGOS_RUNS_DIR, else runs/ in the project folder."""
    return Path(os.environ.get("DOGGOS_RUNS_DIR") or PROJECT_ROOT / "runs").expanduser().absolute()


@dataclass(frozen=True)
class RunInfo:
    """One run as the history shows it: its settings, its status and, once it succeeded, its manifest."""

    id: str
    path: Path
    config: RunConfig | None  # None when config.json cannot be read as settings (see problem)
    status: RunStatus
    manifest: Manifest | None
    problem: str | None = None  # why a run folder cannot be opened (a damaged or newer record)
    queue_position: int | None = None  # a queued run's place in its root's queue: 1 runs next; None when not queued

    state = property(lambda self: self.status.state)
    progress = property(lambda self: self.status.progress)
    error = property(lambda self: self.status.error or self.problem)
    created_at = property(lambda self: self.status.created_at)
    started_at = property(lambda self: self.status.started_at)
    ended_at = property(lambda self: self.status.ended_at)

    @property
    def name(self) -> str:
        """The run's readable name, 'digits · 2 Dec 14:59:18' (doggos.runs.naming: what the dashboard shows)."""
        return naming.readable_name(self.id, self.config.source if self.config else None)

    @property
    def active(self) -> bool:
        return self.status.active

    @property
    def resumable(self) -> bool:
        """Failed, with settings that can be read back: `RunManager.resume` can go on with it."""
        return self.status.resumable and self.config is not None

    def to_dict(self) -> dict:
        """The run's record for scripts (`runs status --json`, `runs list --json`)."""
        p, m = self.progress, self.manifest
        return {
            "id": self.id, "name": self.name, "state": self.state, "resumable": self.resumable, "path": str(self.path),
            "progress": {"found": p.found, "embedded": p.embedded, "reused": p.reused, "failed": p.failed,
                         "phase": p.phase, "fraction": round(p.fraction, 4)},
            "pid": self.status.pid if self.active else None, "error": self.error,
            "created_at": self.created_at, "started_at": self.started_at, "ended_at": self.ended_at,
            "attempts": list(self.status.attempts), "queue_position": self.queue_position,
            "summary": None if m is None else {
                "rows": m.rows, "reused": m.reused, "embedded": m.newly_embedded, "dropped": m.dropped,
                "reused_from": m.reused_from, "attempts": m.attempts, "failed": m.failed, "labels": m.labels,
                "model": m.model, "source": m.source, "duration_s": m.duration_s, "images_per_s": m.images_per_s,
                "embeddings_path": m.embeddings_path},
        }

    def story(self) -> str:
        """How a resumed or updated run came to be, for the history: 'killed at 52 %, resumed · reused 1,497 rows'."""
        parts = [f"{_ending(a)} at {units.share(a.get('fraction', 0))}, resumed" for a in self.status.attempts]
        if self.manifest and self.manifest.reused_from:
            parts.insert(0, f"update of {self.manifest.reused_from}")
        if self.manifest and (self.manifest.reused or self.manifest.dropped or parts):
            parts.append(self.manifest.reuse_text() or "")
        elif self.state in ACTIVE_STATES and self.progress.reused:
            parts.append(f"reused {units.count(self.progress.reused, 'row')} so far")
        return " · ".join(p for p in parts if p)

    @property
    def failed_files(self) -> int:
        return self.manifest.failed if self.manifest else self.progress.failed

    @property
    def duration_s(self) -> float | None:
        """The run's seconds: a finished run's are its manifest's, the figure Summary and Compare show (the status's
        timestamps differ from it by a fraction, which rounded apart: 1 min 06 s in History, 1 min 07 s in Compare);
        until then, from its start (or creation) to its end or now."""
        if self.state == "succeeded" and self.manifest is not None and self.manifest.duration_s is not None:
            return self.manifest.duration_s
        start = self.started_at or self.created_at
        if not start:
            return None
        end = datetime.fromisoformat(self.ended_at) if self.ended_at else datetime.now().astimezone()
        return max(0.0, (end - datetime.fromisoformat(start)).total_seconds())


def _ending(attempt: dict) -> str:
    """How an earlier attempt ended, as the history tells it."""
    error = attempt.get("error") or ""
    return "killed" if "exited unexpectedly" in error else "failed"


class RunNotFound(KeyError):
    def __str__(self) -> str:
        return f"no run {self.args[0]!r}"


class RunManager:
    """Runs under one root folder. Every method reads the truth from disk, so any process can use it at any time."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser().absolute() if root else default_root()

    def start(self, config: RunConfig, check: bool = True, by: access.Visitor | None = None) -> str:
        """Validate, create the run's folder, launch its driver detached, and return the run id at once.

        Runs of one root are queued: each driver waits for the root's lock, so two runs never fight over the CPUs.
        `by`: the dashboard visitor who asks (host mode's checks, and the run's owner); None: full control (the CLI).
        """
        run_id = _new_run_id()
        run_dir = RunDir(self.root / run_id)
        config = config.with_absolute_paths().replace(output=str(run_dir.path))  # the driver runs elsewhere
        if by is not None:
            access.check_start(by, config, self.root)  # before preflight: nothing of a refused source is read
        if check:
            preflight.check(config)
        run_dir.path.mkdir(parents=True)
        if by is not None:
            access.record_owner(run_dir.path, by)
        write_json_atomic(run_dir.config, config.to_dict())
        # Its own process group, so cancel signals all of it; RUN_ENV marks every process the run starts.
        child = spawn_detached(["-m", "doggos", "drive", str(run_dir.path)], run_dir.output, nice=driver_nice(),
                               env={RUN_ENV: run_id, **warm.spawn_env(config.ray_address)})
        # One write with the pid: a reader never sees an active run without a process to check.
        update_status(run_dir, state="queued", created_at=now_iso(), pid=child.pid, pid_start=process_start(child.pid),
                      progress=Progress(phase="queued"))
        return run_id

    def resume(self, run_id: str, check: bool = True, by: access.Visitor | None = None) -> str:
        """Start a failed run again in its own folder: it embeds only the images it kept no row for. Returns at once.

        Raises ConfigError naming `run` for a run that is not resumable (succeeded, cancelled, still going), or that
        `by` (a dashboard visitor) may not resume."""
        run_dir = self._dir(run_id)
        if by is not None:
            access.check_resume(by, self.get(run_id), self.root)
        with open(run_dir.path / "resume.lock", "a") as lock:  # two tabs pressing Resume at once start one driver
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._resume(run_dir, run_id, check)

    def _resume(self, run_dir: RunDir, run_id: str, check: bool) -> str:
        info = self.get(run_id)
        if not info.resumable:
            why = {"succeeded": "succeeded: there is nothing to resume (to add new images, update it: --reuse)",
                   "cancelled": "was cancelled, and a cancelled run keeps nothing: start a new run"}.get(info.state)
            if why is None:
                why = f"is {info.state}" if info.active else (info.problem or f"is {info.state}")
            raise ConfigError("run", f"run {run_id} {why}")
        if check:
            preflight.check(info.config)  # the source and the model must still be there
        progress = info.progress
        attempt = {"ended_at": info.ended_at, "error": info.error, "found": progress.found,
                   "embedded": progress.embedded, "reused": progress.reused, "fraction": round(progress.fraction, 4)}
        run_dir.cancel_request.unlink(missing_ok=True)
        child = spawn_detached(["-m", "doggos", "drive", str(run_dir.path), "--resume"], run_dir.output,
                               nice=driver_nice(), env={RUN_ENV: run_id, **warm.spawn_env(info.config.ray_address)})
        update_status(run_dir, state="queued", pid=child.pid, pid_start=process_start(child.pid), error=None,
                      ended_at=None, step=None, stopping=None, progress=Progress(phase="queued"),
                      attempts=[*info.status.attempts, attempt])
        return run_id

    def get(self, run_id: str) -> RunInfo:
        info = self._read(run_id)
        return replace(info, queue_position=_queue_position(self.root, run_id)) if info.state == "queued" else info

    def _read(self, run_id: str) -> RunInfo:
        run_dir = self._dir(run_id)
        reap()
        status = read_status(run_dir)
        if status.active and not _driver_alive(run_id, status):
            status = self._mark_dead(run_dir)
        return _info(run_dir, status)

    def list(self) -> list[RunInfo]:
        """Every run, newest first."""
        if not self.root.is_dir():
            return []
        ids = sorted((p.name for p in self.root.iterdir() if (p / "config.json").exists()), reverse=True)
        runs = []
        for run_id in ids:
            try:
                runs.append(self._read(run_id))
            except RunNotFound:  # deleted meanwhile
                continue
        return _placed(runs)

    def cancel(self, run_id: str, grace_s: float = CANCEL_GRACE_S, by: access.Visitor | None = None,
               on_stopping: Callable[[RunInfo], None] | None = None) -> RunInfo:
        """Stop a queued or running run; returns once it is `cancelled` and nothing of it runs (about a second).

        The request is written first (`cancel.requested`; and in status.json what is still in flight, which the run's
        state then says: `RunStatus.stopping_text`, passed on to `on_stopping` at once), so whatever the driver (or
        anyone checking on it) sees next ends as cancelled. Then SIGTERM to the driver alone: it stops feeding work
        and records `cancelled` before it shuts its Ray down, which stays up for it meanwhile (a signal to its whole
        process group would take the GCS away from under the driver's own calls). Once it has, or after `grace_s`,
        what is left of the run is killed: the driver's process group (its private local Ray) and every process
        marked with the run's id; never a shared warm Ray, which lives in a session of its own.
        `by`: a dashboard visitor, refused (AccessDenied) unless the run is theirs to cancel.
        """
        run_dir = self._dir(run_id)
        if by is not None:
            access.check_cancel(by, self.get(run_id))
        if not self.get(run_id).active:
            return self.get(run_id)
        run_dir.cancel_request.touch()
        update_status(run_dir, when=_active, stopping=_in_flight(run_dir))
        if on_stopping is not None:
            on_stopping(self.get(run_id))
        status = read_status(run_dir)
        if _driver_alive(run_id, status):
            _signal_driver(status.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and _driver_alive(run_id, status):
                if not read_status(run_dir).active:  # recorded: it stopped feeding work; now it shuts Ray down
                    deadline = min(deadline, time.monotonic() + REAP_WAIT_S)
                reap()
                time.sleep(0.05)
            if _driver_alive(run_id, status):
                signal_group(status.pid, signal.SIGKILL)
        _kill_run_processes(run_id)
        reap()
        if read_status(run_dir).active:  # the driver was killed before it could say so itself
            update_status(run_dir, when=_active, state="cancelled", ended_at=now_iso(), stopping=None)
        if read_status(run_dir).state == "cancelled":  # partial output is never presented as a result
            _remove_output(run_dir)
        return self.get(run_id)

    def delete(self, run_id: str, by: access.Visitor | None = None) -> None:
        """Remove a run that is not active, and its folder; `by`: a dashboard visitor (participants are refused)."""
        if by is not None:
            access.check_delete(by)
        info = self.get(run_id)
        if info.active:
            raise ValueError(f"run {run_id} is {info.state}; cancel it before deleting it")
        shutil.rmtree(info.path)

    def wait(self, run_id: str, timeout_s: float, poll_s: float = 0.2) -> RunInfo:
        """Block until the run leaves the active states (or the timeout passes); returns its last state."""
        deadline = time.monotonic() + timeout_s
        info = self.get(run_id)
        while info.active and time.monotonic() < deadline:
            time.sleep(poll_s)
            info = self.get(run_id)
        return info

    def log_tail(self, run_id: str, lines: int = 40, output: bool = False) -> str:
        """The last lines of the run's log (what doggos did), or with `output` of the driver's own output (Ray's)."""
        run_dir = self._dir(run_id)
        path = run_dir.output if output else run_dir.log
        if not path.exists():
            return ""
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64_000))
            text = handle.read().decode("utf-8", errors="replace")
        return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])

    def queue_lock_path(self) -> Path:
        return self.root / ".queue.lock"

    def resolve(self, text: str, field: str = "run") -> str:
        """The id of the run `text` names under this root: its id, a part of its id only it has, or its readable
        name (the rule: `doggos.runs.naming`). Raises ConfigError naming `field` for no run or several (listed)."""
        text = (text or "").strip()
        if text and "/" not in text and not text.startswith(".") and (self.root / text / "config.json").exists():
            return text  # the whole id: no listing needed
        return naming.pick(text, naming.runs_under(self.root), field, where=f"under {self.root}")

    def _dir(self, run_id: str) -> RunDir:
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise RunNotFound(run_id)
        run_dir = RunDir(self.root / run_id)
        if not run_dir.config.exists():
            raise RunNotFound(run_id)
        return run_dir

    def _mark_dead(self, run_dir: RunDir) -> RunStatus:
        # Re-read: the driver may have finished between our read and the liveness check.
        fresh = read_status(run_dir)
        if not fresh.active:
            return fresh
        _kill_run_processes(run_dir.id)
        if run_dir.cancel_request.exists():  # a cancel is killing it right now: that is not a crash
            _remove_output(run_dir)
            return update_status(run_dir, state="cancelled", ended_at=now_iso(), stopping=None)
        reuse.keep_rows(run_dir)  # a crash keeps the rows it wrote: a resume carries them over
        _remove_output(run_dir, keep_rows=True)
        # Known when this process started the driver (the dashboard that launched it); else a guess at the usual cause.
        how = how_it_ended(fresh.pid) or "killed, or out of memory"
        return update_status(run_dir, state="failed", ended_at=now_iso(),
                             error=f"the driver process exited unexpectedly ({how}); see output.txt")


def _active(status: RunStatus) -> bool:
    return status.active


def _in_flight(run_dir: RunDir) -> str:
    """What a cancel finds under way, from the run's last sample of Ray Data's operators: '2 batches in flight',
    '2 actors loading the model'; "" when nothing is executing (listing, starting Ray, a post-run step)."""
    from doggos.base.units import count
    from doggos.pipeline import operators

    snapshot = operators.latest(run_dir)
    if snapshot is None or snapshot.state != "running" or time.time() - snapshot.time > IN_FLIGHT_FRESH_S:
        return ""
    embed = snapshot.embed_operator()
    batches = embed.tasks if embed else 0
    tasks = sum(op.tasks for op in snapshot.operators if op is not embed)
    parts = [count(batches, "batch", "batches")] if batches else []
    parts += [count(tasks, "task")] if tasks else []
    if parts:
        return " and ".join(parts) + " in flight"
    if embed and embed.pending_actors:
        return f"{count(embed.pending_actors, 'actor')} loading the model"
    return ""


def _signal_driver(pid: int, sig: int) -> None:
    """Signal the driver alone (not the Ray it started, which it still needs to stop cleanly)."""
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _driver_alive(run_id: str, status: RunStatus) -> bool:
    """Whether the run's driver still runs: its pid, started when recorded or marked with the run's id."""
    return alive(status.pid, status.pid_start, environment=(RUN_ENV, run_id))


def resolve_run(text: str, runs_root: str | os.PathLike | None = None, field: str = "run",
                finished: bool = True) -> RunDir:
    """The finished run that `text` names: a run folder (as `embed --out` writes), else a run under `runs_root` named
    by its id, a part of its id only it has, or its readable name (the rule: `doggos.runs.naming`).

    Raises ConfigError (a ValueError) naming `field` when there is no such run, when several runs fit (listed), or
    (with `finished`) the run has not succeeded.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(field, "is required: give a run folder or a run id")
    text = text.strip()
    root = Path(runs_root).expanduser().absolute() if runs_root else default_root()
    folder = Path(text).expanduser()
    candidates = [folder]
    if "/" not in text and os.sep not in text and not text.startswith((".", "~")):
        candidates.append(root / text)  # a bare name may be a run id
    for candidate in candidates:
        if candidate.is_dir() and _holds_a_run(RunDir(candidate)):
            run_dir = RunDir(candidate)
            if finished:
                finished_manifest(run_dir, field)
            return run_dir
    if folder.is_dir():
        raise ConfigError(field, f"{folder.absolute()} is a folder but holds no run (no manifest.json, status.json "
                                 "or config.json)")
    if len(candidates) > 1 or "/" not in text:  # a bare word, or a readable name (it may hold spaces and '·')
        found = naming.matches(text, naming.runs_under(root))
        if len(found) == 1:
            return resolve_run(str(root / found[0].id), root, field, finished)
        if found:
            naming.pick(text, found, field, where=f"under {root}")  # raises: lists the candidates
        raise ConfigError(field, f"no run {text!r}: not a run folder, and not a run id under {root}, part of one "
                                 "or a run's name (`python -m doggos runs list` lists them; --runs-dir picks another "
                                 "root)")
    raise ConfigError(field, f"no run folder {str(folder.absolute())!r}")


def _holds_a_run(run_dir: RunDir) -> bool:
    return any(path.exists() for path in (run_dir.manifest, run_dir.status, run_dir.config))


def finished_manifest(run, field: str = "run") -> Manifest:
    """The manifest of a run that succeeded and whose Parquet is in place; else ConfigError naming `field` and why."""
    run_dir = run_dir_of(run)
    try:
        manifest = read_manifest(run_dir)
    except RecordError as error:
        raise ConfigError(field, str(error)) from None
    if manifest is None:
        state = read_status(run_dir).state
        if state in ACTIVE_STATES:
            why = f"is still {state}: compare it once it has succeeded"
        elif state in ("failed", "cancelled"):
            why = f"{state}: only a run that succeeded has embeddings to compare"
        else:
            why = "is not finished (it has no manifest.json)"
        raise ConfigError(field, f"run {run_dir.id} {why}")
    from doggos.base import store

    if not store.embedding_files(run_dir):
        raise ConfigError(field, f"run {run_dir.id} has no Parquet files under {run_dir.embeddings}")
    return manifest


def drive(run_path: str, steps_for: Callable[[RunConfig], Sequence[tuple[Step, object]]] = lambda config: (),
          resume: bool = False) -> int:
    """The detached driver's body: wait for the queue, then run with the post-run steps `steps_for` its config (the
    caller's: `doggos.explore.post_run.steps_for`), or `resume` a failed run; status.json tells the outcome."""
    from doggos.runs import driver

    run_dir = RunDir(run_path)
    driver.cancel_on_sigterm()
    config = RunConfig.from_dict(read_json(run_dir.config))
    manager = RunManager(run_dir.path.parent)
    with open(manager.queue_lock_path(), "a") as lock:
        try:
            _wait_for_turn(manager, run_dir.id, lock)
            if resume and read_status(run_dir).pid != os.getpid():  # another resume launched the run meanwhile
                return 1
            update_status(run_dir, state="starting", started_at=now_iso())
            driver.run(config, steps=steps_for(config), resume=resume)
        except driver.Cancelled:
            if read_status(run_dir).state != "cancelled":  # cancelled while queued: driver.run never started
                update_status(run_dir, state="cancelled", ended_at=now_iso(), stopping=None)
                driver.log_outcome(run_dir, "run cancelled while queued")
            return 130
        except Exception:  # driver.run recorded it in status.json and log.txt
            return 1
    return 0


def _wait_for_turn(manager: RunManager, run_id: str, lock) -> None:
    """The queue: one run at a time per runs root, first come first served (flock alone promises no order)."""
    while True:
        fcntl.flock(lock, fcntl.LOCK_EX)
        older = [r for r in manager.list() if r.id < run_id and r.state == "queued"]
        if not older:
            return
        fcntl.flock(lock, fcntl.LOCK_UN)
        time.sleep(0.2)


def _placed(runs: list[RunInfo]) -> list[RunInfo]:
    """`runs` (newest first) with each queued run's place in line: the queue is first come, first served."""
    ahead = sum(1 for run in runs if run.state == "queued")
    placed = []
    for run in runs:
        if run.state == "queued":
            placed.append(replace(run, queue_position=ahead))
            ahead -= 1
        else:
            placed.append(run)
    return placed


def _queue_position(root: Path, run_id: str) -> int:
    """One queued run's place in line: 1 + the older runs of its root still queued (read from their status only)."""
    ahead = 0
    for folder in root.iterdir():
        if folder.name < run_id and (folder / "config.json").exists():
            try:
                ahead += read_status(RunDir(folder)).state == "queued"
            except (OSError, ValueError, TypeError):  # deleted or half-written meanwhile: not in line
                continue
    return ahead + 1


def _info(run_dir: RunDir, status: RunStatus) -> RunInfo:
    problem = None
    manifest = None
    if status.state == "succeeded":
        try:
            manifest = read_manifest(run_dir)
        except RecordError as error:
            problem = str(error)
    config = read_json(run_dir.config, {}) or {}
    try:
        settings = RunConfig.from_dict({k: v for k, v in config.items() if k in RunConfig.__dataclass_fields__})
    except (ValueError, TypeError) as error:
        settings, problem = None, problem or f"run {run_dir.id} cannot be opened: its config.json is invalid ({error})"
    return RunInfo(id=run_dir.id, path=run_dir.path, config=settings, status=status, manifest=manifest, problem=problem)


def _new_run_id() -> str:
    # Microseconds keep ids in launch order (the queue and the history sort by id); the suffix avoids clashes.
    return datetime.now().strftime("%Y%m%d-%H%M%S-%f-") + secrets.token_hex(1)


def run_processes(run_id: str) -> list[int]:
    """Processes that carry this run's id in their environment: its driver and the local Ray it started."""
    return with_environment(RUN_ENV, run_id)


def _kill_run_processes(run_id: str, timeout_s: float = 3.0) -> None:
    """SIGKILL the run's leftovers until none remain: a dying raylet may still be spawning a worker."""
    deadline = time.monotonic() + timeout_s
    while (pids := run_processes(run_id)) and time.monotonic() < deadline:
        kill_all(pids)
        time.sleep(0.05)


def _remove_output(run_dir: RunDir, keep_rows: bool = False) -> None:
    """A run that did not succeed leaves no result: no staged or published Parquet, no maps, no reports, no manifest;
    `keep_rows`: but the rows a crash kept for a resume (`reuse.keep_rows` moved them to `kept`)."""
    for folder in (run_dir.staging, run_dir.embeddings, *(() if keep_rows else (run_dir.kept,)), run_dir.projections,
                   run_dir.quality, run_dir.thumbnails):
        shutil.rmtree(folder, ignore_errors=True)
    run_dir.manifest.unlink(missing_ok=True)


def listing_stamp(root: str | os.PathLike) -> tuple:
    """What `RunManager(root).list()` depends on, from a few stat calls: every run folder's name and its config's,
    status's and manifest's identity (inode, size, mtime). Equal stamps: a cached listing is still right; every new,
    deleted, republished or changed run (a status is rewritten by rename: a new inode) changes it."""
    def identity(path: str) -> tuple[int, int, int] | None:
        try:
            stat = os.stat(path)
        except OSError:
            return None
        return stat.st_ino, stat.st_size, stat.st_mtime_ns

    try:
        entries = sorted(entry.path for entry in os.scandir(root) if entry.is_dir())
    except OSError:  # no runs folder yet
        return ()
    return tuple((os.path.basename(path), *(identity(os.path.join(path, name))
                                            for name in ("config.json", "status.json", "manifest.json")))
                 for path in entries)
