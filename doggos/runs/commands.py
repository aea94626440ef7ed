"""`python -m doggos runs …` (start, list, status, resume, cancel, delete), and the summary and progress lines."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Callable

from doggos.base import units
from doggos.base.records import Progress
from doggos.pipeline import figures
from doggos.pipeline.progress import format_duration


def add_parser(commands, add_run_options: Callable, config_from_args: Callable) -> None:
    """The `runs` command and its actions; `add_run_options` and `config_from_args` are the CLI's run settings."""
    runs = commands.add_parser("runs", help="background runs: start, list, status, resume, cancel, delete")
    runs.add_argument("--runs-dir", help="runs root (default: $DOGGOS_RUNS_DIR or ./runs in the project)")
    actions = runs.add_subparsers(dest="action", metavar="ACTION", required=True)
    start = actions.add_parser("start", help="launch a run in the background and print its id")
    add_run_options(start)
    start.set_defaults(handler=lambda args: _start(args, config_from_args))
    listing = actions.add_parser("list", help="all runs, newest first")
    listing.add_argument("--json", action="store_true", help="a JSON list of the runs' records")
    listing.set_defaults(handler=_list)
    for name, handler, text in (
        ("status", _status, "one run's state and progress"),
        ("resume", _resume, "go on with a failed run: embed only the images it has no row for"),
        ("cancel", _cancel, "stop a queued or running run"),
        ("delete", _delete, "remove a finished run and its files"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("run_id", metavar="RUN", help=RUN_HELP)
        if name == "status":
            action.add_argument("--json", action="store_true",
                                help="the run's record: id, state, resumable, progress, pid, error, summary")
        action.set_defaults(handler=_named(handler))


RUN_HELP = ("the run's id, any part of it only that run's id has (e.g. 145918), or its name as the dashboard shows "
            "it ('digits · 2 Dec 14:59:18'), or the start of it (e.g. digits)")


def _named(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """`handler`, given the whole id of the run however the user named it (see doggos.runs.naming; a name that fits
    no run or several is a ConfigError: exit 2, the candidates listed). A run folder's path (resume's) passes as is."""
    def run(args: argparse.Namespace) -> int:
        if not ("/" in args.run_id and Path(args.run_id).expanduser().is_dir()):
            args.run_id = _manager(args).resolve(args.run_id)
        return handler(args)

    return run


def _manager(args: argparse.Namespace):
    """The runs root `--runs-dir` names (imported late: `--help` stays quick)."""
    from doggos.runs.manager import RunManager

    return RunManager(args.runs_dir)


def _start(args: argparse.Namespace, config_from_args: Callable) -> int:
    run_id = _manager(args).start(config_from_args(args, None))
    print(run_id)
    return 0


def _list(args: argparse.Namespace) -> int:
    runs = _manager(args).list()
    if args.json:
        print(json.dumps([run.to_dict() for run in runs], indent=2, ensure_ascii=False))
        return 0
    if not runs:
        print("no runs yet")
    for run in runs:
        p, c = run.progress, run.config
        settings = (f"{c.source}  model={c.model}  device={c.device}  batch={c.batch_size or 'auto'}  "
                    f"actors={c.concurrency or 'auto'}") if c else (run.problem or "")
        state = "failed*" if run.resumable else run.state  # * resumable
        print(f"{run.id}  {run.name}  {state:<9}  "
              f"{units.out_of(p.embedded + p.reused, p.found, 'image')}  {units.duration(run.duration_s):>9}  "
              f"{settings}")
    if any(run.resumable for run in runs):
        print("* resumable: python -m doggos runs resume RUN_ID")
    return 0


def _status(args: argparse.Namespace) -> int:
    run = _manager(args).get(args.run_id)
    if args.json:
        print(json.dumps(run.to_dict(), indent=2, ensure_ascii=False))
        return 0
    print(f"run {run.id}: {run.state}" + (" (resumable: python -m doggos runs resume " + run.id + ")"
                                          if run.resumable else ""))
    print(format_progress(run.progress))
    if story := run.story():
        print(f"history: {story}")
    if run.error:
        print(f"error: {run.error}")
    if run.manifest:
        print(summary(run.manifest))
    return 0 if run.state != "failed" else 1


def _resume(args: argparse.Namespace) -> int:
    from doggos.runs.manager import RunManager

    folder = Path(args.run_id).expanduser()
    if "/" in args.run_id and folder.is_dir():  # a run folder (embed --out's): its parent is its runs root
        print(RunManager(folder.absolute().parent).resume(folder.name))
    else:
        print(_manager(args).resume(args.run_id))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    def stopping(run) -> None:  # at once, as the dashboard's state says it: what the cancel is waiting for
        print(f"run {run.id}: {run.status.stopping_text or run.state}", flush=True)

    run = _manager(args).cancel(args.run_id, on_stopping=stopping)
    print(f"run {run.id}: {run.state}")
    return 0


def _delete(args: argparse.Namespace) -> int:
    _manager(args).delete(args.run_id)
    print(f"deleted {args.run_id}")
    return 0


def summary(manifest) -> str:
    """What a finished run produced, in a few lines (`manifest` is a doggos.base.records.Manifest)."""
    reused = manifest.reuse_text()
    lines = [
        f"done: {units.count(manifest.rows, 'image')}{'' if reused else ' embedded'} in "
        f"{units.duration(manifest.duration_s)} "
        f"({units.rate(manifest.images_per_s, 'images/s')}, {figures.WHOLE_RUN}), "
        f"{units.count(manifest.labels, 'label')}",
        *([reused + (f" (from run {manifest.reused_from})" if manifest.reused_from else "")
           + (f"; attempt {manifest.attempts}" if manifest.attempts > 1 else "")] if reused else []),
        f"model: {manifest.model_description}, dimension {manifest.embedding_dim}",
        f"parquet: {manifest.embeddings_path}",
        f"ray: {manifest.ray.address}; embedded on {manifest.ray.work_by_node()}",
    ]
    for step, seconds in manifest.steps.items():
        lines.append(f"{step}: " + (f"ready in {units.duration(seconds)}" if seconds is not None
                                    else "could not be computed (see the log; the dashboard retries it)"))
    if manifest.failed:
        lines.append(f"warning: {units.count(manifest.failed, 'file')} could not be read; reasons in "
                     f"{Path(manifest.embeddings_path).parent / 'failures.json'}")
    return "\n".join(lines)


class ProgressPrinter:
    """One progress line at most every 2 s (and at the end) on `stream`: done/total, rate, ETA."""

    def __init__(self, stream, every_s: float = 2.0):
        self.stream = stream
        self.every_s = every_s
        self.last = 0.0

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s and progress.phase != "done":
            return
        self.last = now
        print(format_progress(progress), file=self.stream, flush=True)


def format_progress(progress: Progress) -> str:
    eta = f", ETA {format_duration(progress.eta_s)}" if progress.eta_s is not None and progress.phase == "embedding" else ""
    failed = f", {progress.failed} failed" if progress.failed else ""
    reused = f", {progress.reused} reused" if progress.reused else ""
    phase = "" if progress.phase == "embedding" else f"{progress.phase} · "  # e.g. "loading model · 0/2880"
    rate = figures.rate_text(progress)  # its window named: the CLI's figures are the dashboard's
    rate = f" · {rate}" if rate else ""
    return f"  {phase}{progress.embedded}/{progress.found} images embedded{reused}{failed}{rate}{eta}"
