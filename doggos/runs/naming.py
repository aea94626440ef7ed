"""One name per run: its id, its readable name ('digits · 2 Dec 14:59:18'), and which run a user's words mean.

The rule every command and page follows (`pick`): a run is named by
1. its whole id (20261202-145918-178957-d6), or its readable name as the dashboard shows it (case, spaces and the
   '·' do not matter: "digits 2 Dec 14:59:18" names it too, and so does the sidebar's "… · 300 images");
2. else any part of its id that no other run's id has: a prefix (20261202-1459) or a piece from the middle (145918);
3. else the start of its readable name, compared as in 1: "digits" when one run is of a folder digits, or
   "digits · 2 Dec 14:59".
Several runs matching is never guessed: the candidates are listed, each with its id and readable name.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterable, Sequence

from doggos.base import units
from doggos.base.config import ConfigError

CANDIDATES_SHOWN = 10  # an ambiguous name lists this many runs, then how many more
_SIDEBAR_COUNT = re.compile(r"\s*·\s*[\d,]+ images?\s*$")


@dataclass(frozen=True)
class NamedRun:
    """A run as people name it: its id and its readable name."""

    id: str
    name: str


def created_text(run_id: str) -> str:
    """When the run was created, read from its id: '2 Dec 14:59:18'; '' for an id of another shape."""
    try:
        return datetime.strptime(run_id[:15], "%Y%m%d-%H%M%S").strftime("%d %b %H:%M:%S").lstrip("0")
    except ValueError:
        return ""


def readable_name(run_id: str, source: str | None) -> str:
    """A run's readable name: its source folder's last part and when it was created, 'digits · 2 Dec 14:59:18'
    (the id stands in for the time when the id does not carry one)."""
    source = (source or "").rstrip("/")
    short = source.rsplit("/", 1)[-1] or source or "?"
    when = created_text(run_id)
    return f"{short} · {when}" if when else f"{short} · {run_id}"


def runs_under(root: str | os.PathLike) -> list[NamedRun]:
    """Every run folder under `root` (one with a config.json), newest first, with its readable name; light: reads
    each run's config.json only (no status, no process checks)."""
    try:
        folders = sorted((entry for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith(".")),
                         key=lambda entry: entry.name, reverse=True)
    except OSError:  # no runs folder yet
        return []
    runs = []
    for folder in folders:
        config = Path(folder.path) / "config.json"
        if not config.exists():
            continue
        try:
            source = json.loads(config.read_text()).get("source")
        except (OSError, ValueError, AttributeError):  # damaged or half-written: still a run, named by its id
            source = None
        runs.append(NamedRun(folder.name, readable_name(folder.name, source if isinstance(source, str) else None)))
    return runs


def _plain(text: str) -> str:
    """A name as compared: case-folded, the '·' and runs of spaces ignored, and the image count the sidebar adds
    ('digits · 2 Dec 14:59:18 · 300 images') left off."""
    return " ".join(_SIDEBAR_COUNT.sub("", text).replace("·", " ").split()).casefold()


def matches(text: str, runs: Iterable[NamedRun]) -> list[NamedRun]:
    """The runs `text` may name, by the rule in the module docstring: one run when it names one, several when it
    is ambiguous, none when no run fits."""
    runs = list(runs)
    text = text.strip()
    exact = [run for run in runs if run.id == text or _plain(run.name) == _plain(text)]
    if exact:
        return exact
    in_id = [run for run in runs if text and text in run.id]
    if in_id:
        return in_id
    start = _plain(text)
    return [run for run in runs if start and _plain(run.name).startswith(start)]


def candidates_text(runs: Sequence[NamedRun]) -> str:
    """The runs a name could mean, one a line: id, then readable name (at most CANDIDATES_SHOWN, then a count)."""
    lines = [f"  {run.id}  ({run.name})" for run in runs[:CANDIDATES_SHOWN]]
    if len(runs) > CANDIDATES_SHOWN:
        lines.append(f"  … and {units.count(len(runs) - CANDIDATES_SHOWN)} more")
    return "\n".join(lines)


def pick(text: str, runs: Iterable[NamedRun], field: str = "run", where: str = "") -> str:
    """The id of the one run `text` names among `runs` (the rule: module docstring).

    Raises ConfigError naming `field` when no run fits, or when several do (listing each with its id and readable
    name, so the user can copy one); `where` (e.g. 'under /runs') completes the message."""
    text = (text or "").strip()
    if not text:
        raise ConfigError(field, "is required: give a run's id, part of its id, or its name")
    found = matches(text, runs)
    if len(found) == 1:
        return found[0].id
    where = f" {where}" if where else ""
    if not found:
        raise ConfigError(field, f"no run {text!r}{where}: not a run's id, part of one, or a run's name "
                                 "(`python -m doggos runs list` lists them)")
    raise ConfigError(field, f"{text!r} could be {units.count(len(found), 'run')}{where}; give more of the id or "
                             "the name:\n" + candidates_text(found))
