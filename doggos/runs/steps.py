"""Post-run steps: work over a finished run's embeddings (its map, its label-quality report), cached per parameters.

A step runs in the foreground (a run's driver, as its last phases) or in a background process (the dashboard asks for a map
with new parameters, or for a step an older run never had). Files under `<run>/<step folder>/`, for parameters named NAME:
NAME<suffix> (the result, written atomically: it exists only when complete), NAME.running (a background computation's pid),
NAME.waiting (it waits for a machine-wide slot), NAME.progress (the stage it says it is at), NAME.error.txt (why it
failed; cleared by a retry) and NAME.log (its output).
`python -m doggos.runs.steps STEP RUN_DIR PARAMS_JSON` is the background process.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from doggos.base.processes import alive, driver_nice, reap, spawn_detached
from doggos.base.rundir import RunDir, read_json, run_dir_of, write_json_atomic

STALE_START_S = 60.0  # a .running file with no pid after this long belongs to a launcher that died
SLOT_POLL_S = 0.5  # how often a step waiting for a slot looks again


@dataclass(frozen=True)
class StepStatus:
    """Where one step's result stands: ready | running | failed | missing."""

    state: str
    path: Path
    error: str | None = None
    started: float | None = None  # when a running computation was launched (time.time())
    waiting: bool = False  # running, but queued behind others for a slot (see Step.slots)
    stage: str | None = None  # what a running computation says it is doing (its NAME.progress), if it says


@dataclass(frozen=True)
class Step:
    """One kind of post-run work. `params_type` is a frozen dataclass with `name` (the cache file's stem: every parameter
    that changes the result), `describe()`, and a constructor that validates; `compute(run, params, out)` writes the
    result atomically to `out` (its other files first: `out` is the last, so its presence means complete)."""

    name: str  # as the run's manifest and the CLI call it
    home: str  # "module:attribute" where this Step is defined: the background process imports it from there
    folder: str  # the RunDir attribute that holds its files
    phase: str  # the run's progress phase while it computes as part of a run
    params_type: type
    compute: Callable[[RunDir, Any, Path], None]
    suffix: str = ".parquet"
    slots: Callable[[], int] | None = None  # how many may compute at once on this machine; None: no limit
    needs_slot: Callable[[Any], bool] = lambda params: True
    warm_up: Callable[[], None] | None = None  # run in a thread as a run starts: what the step imports or compiles
    # Texts the run's embedder actors embed for it while they hold the model, from the listed paths and the params
    prompts: Callable[[list[str], Any], list[str]] | None = None

    def result(self, run, params) -> Path:
        return self._file(run, params, self.suffix)

    def log_file(self, run, params) -> Path:
        """Where a computation's output goes (Ray's and the libraries'), its folder made."""
        path = self._file(run, params, ".log")
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def run(self, run, params, force: bool = False) -> Path:
        """Compute now, in this process, unless the result exists (or `force`); returns the result's path."""
        run = run_dir_of(run)
        out = self.result(run, params)
        if out.exists() and not force:
            return out
        slot = self._slot(run, params) if self.slots and self.needs_slot(params) else contextlib.nullcontext()
        with slot:
            self.compute(run, params, out)
        return out

    def status(self, run, params) -> StepStatus:
        run = run_dir_of(run)
        path = self.result(run, params)
        reap()
        if path.exists():
            return StepStatus("ready", path)
        error_file, marker = self._file(run, params, ".error.txt"), self._file(run, params, ".running")
        if error_file.exists():
            return StepStatus("failed", path, error_file.read_text(encoding="utf-8", errors="replace").strip())
        if marker.exists():
            started = read_json(marker, {}) or {"created": time.time()}  # unreadable: being written right now
            pid = started.get("pid")
            if pid and alive(pid):
                return StepStatus("running", path, started=started.get("created"),
                                  waiting=self._file(run, params, ".waiting").exists(), stage=self._stage(run, params))
            if not pid and time.time() - started.get("created", 0) < STALE_START_S:
                return StepStatus("running", path, started=started.get("created"))
            if path.exists():  # finished between our two looks
                return StepStatus("ready", path)
            log = self._file(run, params, ".log")
            tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:] if log.exists() else []
            return StepStatus("failed", path, f"the {self.name} process exited unexpectedly"
                              + (":\n" + "\n".join(tail) if tail else ""))
        return StepStatus("missing", path)

    def start(self, run, params) -> StepStatus:
        """Compute in a separate process unless the result exists or is on its way; returns at once.

        A failed computation is retried: its error file is cleared first. When two sessions race, one launches.
        """
        run = run_dir_of(run)
        current = self.status(run, params)
        if current.state in ("ready", "running"):
            return current
        marker = self._file(run, params, ".running")
        marker.parent.mkdir(parents=True, exist_ok=True)
        self._file(run, params, ".error.txt").unlink(missing_ok=True)
        self.progress_file(run, params).unlink(missing_ok=True)  # a dead computation's last word
        if current.state == "failed":
            marker.unlink(missing_ok=True)  # a dead computation's leftovers; a missing result has none to remove
            self._file(run, params, ".waiting").unlink(missing_ok=True)
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return self.status(run, params)
        with os.fdopen(fd, "w") as handle:
            json.dump({"created": time.time()}, handle)
        command = ["-m", "doggos.runs.steps", self.home, str(run.path), json.dumps(params_dict(params))]
        # A page's map or label check, like a run, yields the CPU to the server that many browsers are waiting on.
        child = spawn_detached(command, self.log_file(run, params), nice=driver_nice())
        created = time.time()
        write_json_atomic(marker, {"created": created, "pid": child.pid})
        return StepStatus("running", self.result(run, params), started=created)

    def progress_file(self, run, params) -> Path:
        """Where a computation may write, as one line of text, the stage it is at (the page shows it)."""
        return self._file(run_dir_of(run), params, ".progress")

    def _stage(self, run, params) -> str | None:
        try:
            return self.progress_file(run, params).read_text(encoding="utf-8").strip()[:200] or None
        except OSError:
            return None

    def fail(self, run, params, message: str) -> None:
        """Record why a computation failed, for the page that waits on it."""
        error_file = self._file(run_dir_of(run), params, ".error.txt")
        error_file.parent.mkdir(parents=True, exist_ok=True)
        error_file.write_text(message, encoding="utf-8")

    def _file(self, run, params, suffix: str) -> Path:
        return getattr(run_dir_of(run), self.folder) / f"{params.name}{suffix}"

    def _slot(self, run: RunDir, params):
        return machine_slot(f"{self.name}-slots", self.slots(), self._file(run, params, ".waiting"))


@contextlib.contextmanager
def machine_slot(kind: str, slots: int, waiting_marker: Path | None = None):
    """Hold one of `slots` places of `kind` for the block; `waiting_marker` exists while queued for one.

    The places are lock files (flock) in the temp folder, so the limit spans every process of this user, and a process
    that dies releases its place with it.
    """
    folder = Path(tempfile.gettempdir()) / f"doggos-{kind}-{os.getuid()}"
    folder.mkdir(exist_ok=True)
    held = None
    try:
        while held is None:
            for slot in range(slots):
                handle = open(folder / f"slot-{slot}.lock", "a")
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    held = handle
                    break
                except BlockingIOError:
                    handle.close()
            if held is None:
                if waiting_marker is not None and not waiting_marker.exists():
                    waiting_marker.parent.mkdir(parents=True, exist_ok=True)
                    waiting_marker.touch()
                time.sleep(SLOT_POLL_S)
        if waiting_marker is not None:
            waiting_marker.unlink(missing_ok=True)
        yield
    finally:
        if waiting_marker is not None:
            waiting_marker.unlink(missing_ok=True)
        if held is not None:
            held.close()  # releases the lock


def slots_from_env(variable: str, default: Callable[[], int]) -> Callable[[], int]:
    """A Step.slots that reads `variable` (a whole number >= 1), else `default()`."""

    def slots() -> int:
        configured = os.environ.get(variable, "").strip()
        if configured:
            if not configured.isdigit() or int(configured) < 1:
                raise ValueError(f"{variable}: must be a whole number of at least 1 (got {configured!r})")
            return int(configured)
        return default()

    return slots


def get(home: str) -> Step:
    """The Step defined at `home` ("module:attribute"), imported on demand: steps pull in heavy libraries."""
    module, _, attribute = home.partition(":")
    try:
        step = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(f"step: no step at {home!r} ({error})") from None
    # The class as the step's module imported it: run as `python -m`, this file is __main__, with a Step of its own.
    if not isinstance(step, importlib.import_module("doggos.runs.steps").Step):
        raise ValueError(f"step: {home!r} is not a post-run step")
    return step


def params_dict(params) -> dict:
    from dataclasses import asdict

    return asdict(params)


def main(argv: list[str] | None = None) -> int:
    """`python -m doggos.runs.steps STEP RUN_DIR PARAMS_JSON [--force]`: compute one step's result in this process."""
    parser = argparse.ArgumentParser(prog="python -m doggos.runs.steps", description=main.__doc__)
    parser.add_argument("step", help='where the Step is defined, "module:attribute" (Step.home)')
    parser.add_argument("run_dir")
    parser.add_argument("params", help="the step's parameters as a JSON object")
    parser.add_argument("--force", action="store_true", help="recompute even if the result is cached")
    args = parser.parse_args(argv)
    try:
        step = get(args.step)
    except ValueError as error:
        parser.error(str(error))
    run, params = RunDir(args.run_dir), None
    marker = None
    try:
        params = step.params_type(**json.loads(args.params))
        marker = step._file(run, params, ".running")
        print(f"{step.name}: {run.path} with {params.describe()}", flush=True)
        path = step.run(run, params, force=args.force)
        print(f"wrote {path}", flush=True)
        return 0
    except Exception as error:  # recorded for the page that waits on it; the process still fails
        message = str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}"
        print(f"{step.name} failed: {message}", file=sys.stderr, flush=True)
        if params is not None:
            step.fail(run, params, message)
        return 1
    finally:
        if marker is not None:
            marker.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
