"""A run from start to finish: status.json kept current, the pipeline, the post-run steps, the manifest written last.

Used by `embed` (foreground) and by the detached driver of a background run. A cancelled or failed run publishes nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal
import threading
import time
from typing import Callable, Sequence

from doggos.base import decisions, shelf, units
from doggos.base.processes import process_start
from doggos.base.config import RunConfig, user_message
from doggos.base.plan import ResourcePlan
from doggos.base.records import Manifest, Progress, read_status, update_status, write_manifest
from doggos.base.rundir import RunDir, now_iso, write_json_atomic
from doggos.base.rundir import embedding_files as store_files
from doggos.pipeline import dataset, models, reuse
from doggos.pipeline.cluster import ray_connection, resolve_address
from doggos.pipeline.operators import Sampler, operators_path
from doggos.pipeline.progress import hold
from doggos.pipeline.sources import Listing
from doggos.runs import warm
from doggos.runs.steps import Step

PROGRESS_EVERY_S = 1.0  # how often the driver polls the tracker and rewrites status.json
_running: dict = {}  # "outcome": the _Outcome of the run going on in this process, for the SIGTERM handler
HEARTBEAT_JOIN_S = 1.0  # a cancel waits this long at most for a beat under way (its Ray calls may take up to 10 s)

log = logging.getLogger("doggos")


class Cancelled(BaseException):
    """Raised in the driver when the run is cancelled (SIGTERM); BaseException so no `except Exception` swallows it."""


def cancel_on_sigterm() -> None:
    """Make SIGTERM (how a run is cancelled) raise Cancelled in this process's main thread, once; the run going on
    is recorded as cancelled at the same time, from a thread (see _Outcome)."""

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once is enough; let the cleanup finish
        outcome = _running.get("outcome")
        if outcome is not None:
            threading.Thread(target=outcome.record, args=(Cancelled(),), name="doggos-cancel", daemon=True).start()
        raise Cancelled()

    signal.signal(signal.SIGTERM, handler)


def run(config: RunConfig, on_progress: Callable[[Progress], None] | None = None, plan: ResourcePlan | None = None,
        steps: Sequence[tuple[Step, object]] = (), listing: Listing | None = None,
        on_finished: Callable[[Manifest], None] | None = None, resume: bool = False) -> Manifest:
    """Run the whole thing in this process; status.json tracks it, manifest.json (last) records the result.

    `plan` overrides the derived resource plan; `steps` are the post-run steps with their parameters, computed in
    order once the embeddings are published (the caller's: `doggos.explore.post_run.steps_for(config)` is what the
    config asks for; the driver knows no step by name);
    `listing` the source's listing when `doggos.pipeline.preflight.check` just made it (and checked the model);
    `on_finished` gets the manifest as soon as the run has succeeded, before Ray's shutdown;
    `resume`: go on from the rows the failed attempts kept (`doggos.pipeline.reuse`) instead of starting afresh.
    """
    if not config.output:
        raise dataset.PipelineError("output: no output folder given")
    run_dir = RunDir(config.output)
    run_dir.path.mkdir(parents=True, exist_ok=True)
    # A rerun into the same folder first unpublishes the old result: from here on nothing reads as complete until the
    # new manifest is written, and no map or report of the old rows survives to mislabel the new ones.
    run_dir.manifest.unlink(missing_ok=True)
    # The old rows too, unless resuming: a fresh start that fails must not keep them for a resume (another model's).
    for folder in (run_dir.projections, run_dir.quality, run_dir.thumbnails, *(() if resume else (run_dir.embeddings,))):
        shutil.rmtree(folder, ignore_errors=True)
    operators_path(run_dir).unlink(missing_ok=True)  # the live view and the timeline are this run's alone
    if resume:
        reuse.keep_rows(run_dir)  # what the attempt before wrote, if nobody moved it when it died
    else:
        reuse.discard_kept(run_dir)  # a fresh start into a used folder carries nothing from its past
    write_json_atomic(run_dir.config, config.to_dict())
    started = time.time()
    update_status(run_dir, state="running", pid=os.getpid(), pid_start=process_start(os.getpid()), started_at=now_iso(),
                  ended_at=None, error=None, progress=Progress(phase="listing"), phase_started={},  # not the last try's
                  **({} if resume else {"embedding_key": None, "attempts": []}))
    report = _reporter(run_dir, on_progress)
    published = threading.Event()
    run_log = _log_to(run_dir)
    log.info("run %s: %s with %s", run_dir.id, config.source, config.model)
    finished: dict[str, Manifest] = {}  # the manifest, once the run is recorded as succeeded
    outcome = _running["outcome"] = _Outcome(run_dir, report, published, finished)
    try:
        return _run(config, run_dir, report, started, plan, list(steps), published, listing, finished, on_finished,
                    resume, outcome)
    except BaseException as error:
        if "manifest" in finished:  # e.g. Ray's shutdown failed, or a cancel came during it: the run is complete
            log.warning("after the run had finished (its result stands): %s",
                        f"{type(error).__name__}: {error}".rstrip(": "))
            return finished["manifest"]
        outcome.record(error)  # a cancel inside Ray's connection is recorded already, before Ray's shutdown
        if _is_cancel(run_dir, error) and not isinstance(error, (Cancelled, KeyboardInterrupt)):
            raise Cancelled() from None
        raise
    finally:
        _running.pop("outcome", None)
        logging.getLogger("doggos").removeHandler(run_log)
        run_log.close()


def _is_cancel(run_dir: RunDir, error: BaseException) -> bool:
    """Our SIGTERM handler, Ctrl-C, the sys.exit(15) of the SIGTERM handler ray.init installs, or anything at all
    once a cancel was requested (Ray's errors as its workers are killed are the cancel's echo)."""
    if isinstance(error, (Cancelled, KeyboardInterrupt)):
        return True
    if isinstance(error, SystemExit) and error.code in (signal.SIGTERM, -signal.SIGTERM):
        return True
    return run_dir.cancel_request.exists()


class _Outcome:
    """How a run that did not succeed ended, recorded once: unpublished, then `cancelled` or `failed` in status.json.

    A cancel is recorded as soon as the SIGTERM handler runs, from a thread of its own, while the main thread unwinds:
    Ray Data's executor stops feeding blocks as Cancelled passes through it (its shutdown may wait up to 2 s for its
    scheduling thread under load), then Ray shuts down (1-2 s on 2 cores). Neither delays `cancelled`: the manager
    then knows the run has stopped and reaps what is left. (The handler runs only once the main thread executes
    Python again, between two bytecodes, so nothing goes on meanwhile that unpublishing could race with.)"""

    def __init__(self, run_dir: RunDir, report, published: threading.Event, finished: dict):
        self.run_dir, self.report, self.published, self.finished = run_dir, report, published, finished
        self.recorded = False
        self._lock = threading.Lock()  # the main thread's call waits for the cancel thread's, and does nothing more

    def record(self, error: BaseException) -> None:
        with self._lock:
            if self.recorded or "manifest" in self.finished:  # a run that succeeded stays so
                return
            self.recorded = True
            self.report.close()  # no count after the outcome: the figures stop where the cancel found them
            _unpublish(self.run_dir, self.published, keep=not _is_cancel(self.run_dir, error))
            _record_end(self.run_dir, error)


def _record_end(run_dir: RunDir, error: BaseException) -> None:
    if _is_cancel(run_dir, error):
        update_status(run_dir, state="cancelled", ended_at=now_iso(), step=None, stopping=None)
        log_outcome(run_dir, "run cancelled; nothing was published")
        return
    if isinstance(error, ValueError):
        message = user_message(error, surface=None)  # status.json is read by the CLI and the dashboard alike
    elif isinstance(error, dataset.PipelineError):
        message = str(error)
    else:
        message = f"{type(error).__name__}: {error}"
    update_status(run_dir, state="failed", error=message, ended_at=now_iso(), step=None)
    log_outcome(run_dir, f"run failed: {message}")


def _log_to(run_dir: RunDir) -> logging.Handler:
    """Copy doggos' own log lines (not Ray's) into the run's log.txt for as long as the run goes."""
    handler = logging.FileHandler(run_dir.log, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    handler.setLevel(logging.INFO)
    logger = logging.getLogger("doggos")
    logger.setLevel(min(logger.getEffectiveLevel(), logging.INFO))
    logger.addHandler(handler)
    return handler


def log_outcome(run_dir: RunDir, line: str) -> None:
    """The run's last log line: how it ended (written after the driver let go of the log)."""
    with open(run_dir.log, "a", encoding="utf-8") as handle:
        handle.write(f"{time.strftime('%H:%M:%S')} {line}\n")


def _run(config: RunConfig, run_dir: RunDir, report, started: float, plan: ResourcePlan | None,
         steps: list[tuple[Step, object]], published: threading.Event, listing: Listing | None,
         finished: dict[str, Manifest], on_finished: Callable[[Manifest], None] | None, resume: bool,
         outcome: _Outcome) -> Manifest:
    for step, _ in steps:  # e.g. umap's import and compiled code, loaded while the images embed
        if step.warm_up is not None:
            threading.Thread(target=_quietly, args=(step.warm_up,), name=f"warm-up-{step.name}", daemon=True).start()
    with _Heartbeat(report, Sampler(run_dir.path)) as heartbeat:
        hold("listing")
        if listing is None:
            source, listing = dataset.list_source(config)
            models.check_available(config.model)
        else:  # listed and checked by the caller's preflight a moment ago
            source, listing = dataset.list_source(config, listing)
        carry, history = _carry(config, run_dir, source, listing, resume)
        heartbeat.progress = Progress(found=len(listing.paths), phase="starting ray")
        report(heartbeat.progress)  # now, not at the next beat: when a phase began gives its length (phase_started)
        hold("starting ray")
        with ray_connection(config.ray_address, **_warm_ray(config, run_dir)):
            try:
                _log_job()
                manifest = dataset.embed(config, run_dir, source, listing, heartbeat, started, plan,
                                          prompts=_step_prompts(steps, listing.paths), carry=carry, history=history)
                published.set()
                reuse.discard_kept(run_dir)  # its rows are in the published Parquet now
                if config.reuse:
                    manifest = dataclasses.replace(manifest, dropped=reuse.dropped_rows(config.reuse, run_dir))
                if not manifest.embedding_key.get("model"):  # a Hub model the run's actors just downloaded here
                    manifest = dataclasses.replace(manifest, embedding_key=reuse.embedding_key(
                        config.model, config.fp16, config.thumbnail_size))
                _build_shelf(run_dir)
                seconds = {step.name: _run_step(step, params, run_dir, heartbeat) for step, params in steps}
                final = dataclasses.replace(manifest.progress, phase="done")
                heartbeat.progress = final
                manifest = dataclasses.replace(manifest, steps=seconds, progress=final, ended_at=now_iso(),
                                               duration_s=round(time.time() - started, 2))
                write_manifest(run_dir, manifest)
            except BaseException as error:
                if _is_cancel(run_dir, error):
                    # Cancelled now: Ray Data's executor stopped feeding blocks as the cancel passed through it, and
                    # what is in flight ends with this Ray job. Ray's shutdown, the slow part, comes after.
                    heartbeat.stop(wait_s=HEARTBEAT_JOIN_S)
                    outcome.record(error)
                raise
            finally:
                # The heartbeat asks Ray for counts and the sampler reads Ray Data's executor: both stop, with their
                # last sample, while Ray is still up. A beat after the shutdown would call into a Ray that is gone.
                heartbeat.stop()
            report(final)
            # Succeeded before Ray shuts down (1-9 s on 2 cores): for its user the run is done now, in the dashboard
            # and in the CLI alike, and nothing the shutdown does can take the result back.
            _record_success(run_dir, manifest)
            finished["manifest"] = manifest
            if on_finished:
                on_finished(manifest)
    return manifest


def _warm_ray(config: RunConfig, run_dir: RunDir) -> dict:
    """How a background run launched by a long-lived process (the dashboard) joins its runs root's warm local Ray
    (`doggos.runs.warm`): Ray's start saved on every run after the first. Nothing for `embed`, or a cluster run."""
    owner = os.environ.get(warm.OWNER_ENV, "")
    if not owner.isdigit() or resolve_address(config.ray_address):
        return {}
    address = warm.address(run_dir.path.parent, int(owner))
    return {"warm": address} if address else {}


def _log_job() -> None:
    """The run's Ray job, for its log: on a warm Ray its workers carry this id (RAY_JOB_ID) rather than the run's."""
    import ray

    if ray.is_initialized():  # a line for the log is never worth a failed run
        log.info("Ray job %s", ray.get_runtime_context().get_job_id())


def _carry(config: RunConfig, run_dir: RunDir, source, listing: Listing, resume: bool) -> tuple[reuse.Carry | None, dict]:
    """The rows this run may carry over (a failed attempt's kept ones, the reused run's), and the manifest's reuse
    fields: what the reused run had that is gone, the attempts, the key that lets a later run reuse this one's rows."""
    key = reuse.embedding_key(config.model, config.fp16, config.thumbnail_size)
    status = read_status(run_dir)
    history = {"embedding_key": key, "attempts": len(status.attempts) + 1}
    files = []
    if resume:
        files, damaged = reuse.kept_files(run_dir)
        for name, why in damaged:
            log.warning("resume: %s was left unfinished by the attempt before (%s); its images are embedded again",
                        name, why)
        if files and status.embedding_key != key:  # no key recorded: rows of unknown making are never carried
            log.warning("resume: the model or its settings changed since the first attempt; its %d kept files are "
                        "not used", len(files))
            reuse.discard_kept(run_dir)
            files = []
        elif files:
            log.info("resume: %d files of rows kept from the attempts before", len(files))
    if status.embedding_key is None:  # before any row is written: the key its kept rows will be checked against
        update_status(run_dir, embedding_key=key)
    if config.reuse:
        old = RunDir(config.reuse)
        reuse.check_reusable(old, key)  # again: the run may have changed since the launch checked it
        history["reused_from"] = old.id
        files += store_files(old)
        if decisions.log_path(old).exists() and not decisions.log_path(run_dir).exists():
            # Label decisions name images by path: those whose image is still there hold in the update too.
            shutil.copyfile(decisions.log_path(old), decisions.log_path(run_dir))
    return (reuse.Carry.of(files) if files else None), history


def _record_success(run_dir: RunDir, manifest: Manifest) -> None:
    update_status(run_dir, state="succeeded", ended_at=manifest.ended_at, progress=manifest.progress,
                  warnings=manifest.failed, step=None)
    log_outcome(run_dir, f"run succeeded: {units.count(manifest.rows, 'image')} embedded, "
                         f"{units.count(manifest.labels, 'label')}, {units.duration(manifest.duration_s)} in all")


def _step_prompts(steps: list[tuple[Step, object]], paths: list[str]) -> list[str] | None:
    """The texts a step wants embedded by the run's actors (the label-quality step's zero-shot prompts), if any."""
    for step, params in steps:
        if step.prompts is not None:
            return step.prompts(paths, params)
    return None


def _quietly(warm_up) -> None:
    try:
        warm_up()
    except Exception as error:  # a warm-up only saves time; the step itself will say what is wrong
        log.debug("warm-up failed: %s", error)


def _build_shelf(run_dir: RunDir) -> None:
    """The run's thumbnail shelf (pages read a row's thumbnail from it in two preads), built before the manifest so a
    finished run has one from its first page on. Its version is the Parquet files' own, not the manifest's mtime, so
    writing the manifest next leaves it current. A failure fails nothing: pages then read the Parquet, slower."""
    begun = time.time()
    try:
        folder = shelf.build(run_dir)
    except Exception as error:
        log.warning("thumbnail shelf not built (pages read the Parquet instead): %s", error)
        return
    size = (folder / shelf.SHELF).stat().st_size
    log.info("thumbnail shelf: %.1f MB in %.2f s", size / 1e6, time.time() - begun)


def _run_step(step: Step, params, run_dir: RunDir, heartbeat: "_Heartbeat") -> float | None:
    """One post-run step, now; a failure here fails nothing (the dashboard can compute it again later)."""
    heartbeat.progress = dataclasses.replace(heartbeat.progress, phase=step.phase)
    begun = time.time()
    update_status(run_dir, step=step.name, step_started=begun)
    hold(step.phase)
    try:
        step.run(run_dir, params, force=True)
    except Exception as error:
        log.warning("%s step: %s could not be computed (the dashboard can retry): %s", step.name,
                    params.describe(), error)
        return None
    log.info("%s step: %s done in %.1f s", step.name, params.describe(), time.time() - begun)
    return round(time.time() - begun, 2)


def _unpublish(run_dir: RunDir, published: threading.Event, keep: bool) -> None:
    """Remove what this run wrote, but with `keep` (a failure, not a cancel) its rows: kept for a resume."""
    if keep:
        reuse.keep_rows(run_dir)
    else:
        dataset.discard_staging(run_dir)
        reuse.discard_kept(run_dir)
    if published.is_set():
        for folder in (run_dir.embeddings, run_dir.projections, run_dir.quality, run_dir.thumbnails):
            shutil.rmtree(folder, ignore_errors=True)
        run_dir.manifest.unlink(missing_ok=True)  # written before Ray's shutdown, which could still fail


def _not_stopping(status) -> bool:
    """Whether a count may still be reported: not once a cancel is under way (RunManager.cancel notes it first), so
    the figures stop where the cancel found them, whatever is still in flight."""
    return status.stopping is None


def _reporter(run_dir: RunDir, on_progress):
    """report(progress) into status.json (and `on_progress`); report.close(): nothing more is reported after it."""
    best = {"processed": -1}
    closed = threading.Event()
    lock = threading.Lock()  # the heartbeat thread and the driver both report; status.json is read-merge-written
    # When each phase was first reported, into status.json: the live view's phase time, and a later run's typical
    # length of each phase (doggos.pipeline.figures). Made as the run starts listing.
    phases, written = {"listing": round(time.time(), 2)}, {}

    def report(progress: Progress) -> None:
        with lock:
            if closed.is_set():  # the run's outcome is written: a late beat must not add to its figures
                return
            # Counts only grow: a stale snapshot arriving late is dropped rather than shown as a step back.
            if progress.processed < best["processed"] and progress.phase in ("loading model", "embedding"):
                return
            best["processed"] = progress.processed
            phases.setdefault(progress.phase, round(time.time(), 2))
            changed = phases != written
            update_status(run_dir, progress=progress, when=_not_stopping,
                          **({"phase_started": dict(phases)} if changed else {}))
            written.update(phases)  # after the write: a write that failed is tried again at the next beat
            if on_progress:
                on_progress(progress)

    def close() -> None:
        with lock:  # a report under way finishes first
            closed.set()

    report.close = close
    return report


class _Heartbeat:
    """Reports progress every PROGRESS_EVERY_S from the run's start: the phase while Ray starts, live counts after."""

    def __init__(self, report, sampler: Sampler | None = None):
        self.report = report
        self.sampler = sampler  # Ray Data's per-operator state → operators.jsonl (the live view); None: not sampled
        self.rows_by_node = None  # images each node's actors embedded, from the tracker
        self.progress = Progress(phase="listing")  # what to report while no tracker exists
        self.tracker = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="doggos-heartbeat", daemon=True)
        self._started = time.monotonic()

    def __enter__(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self, wait_s: float | None = None) -> None:
        """Stop beating and take the sampler's last sample; later calls do nothing. Call it before Ray shuts down.

        `wait_s`: wait that long at most for a beat in progress (a cancel: the thread is a daemon, and whatever it
        reports late is dropped once the outcome is recorded); None: until it ends."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(wait_s)
        if self.sampler is not None:
            self.sampler.close(self.rows_by_node)  # an execution that ended between two beats gets its last sample
        self.tracker = None

    def _beat(self) -> None:
        while not self._stop.wait(PROGRESS_EVERY_S):
            try:
                if self.tracker is None:
                    self.progress.elapsed_s = round(time.monotonic() - self._started, 2)
                    self.report(self.progress)
                else:
                    import ray

                    self.report(ray.get(self.tracker.snapshot.remote(), timeout=10))
                    self.rows_by_node = ray.get(self.tracker.rows_by_node.remote(), timeout=10)
            except Exception as error:  # progress is best effort; the run itself goes on
                log.debug("progress report failed: %s", error)
            if self.sampler is not None:
                self.sampler.sample(self.rows_by_node)  # never raises
