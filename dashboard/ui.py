"""Small helpers the dashboard pages share: safe text, the launch form's logic, paging.

Importable without Streamlit, so every decision a page makes can be tested on its own.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterable

from doggos.base import units
from doggos.base.config import ConfigError, RunConfig
from doggos.pipeline import figures
from doggos.pipeline.progress import format_duration  # noqa: F401  (pages call ui.format_duration)

FORM_FIELDS = {  # RunConfig field → the label the form shows for it
    "source": "Source",
    "model": "Model",
    "device": "Device",
    "batch_size": "Batch size",
    "concurrency": "Concurrency",
    "limit": "Image limit",
    "ray_address": "Ray address",
    "s3_endpoint": "S3 endpoint",
    "fp16": "Half precision (fp16)",
    "projection": "Default map",
    "quality": "Label quality",
    "reuse": "Updated run",  # no widget: "Update this run" sets it, the note above the form shows it
}
ADVANCED_FIELDS = ("ray_address", "s3_endpoint", "fp16", "projection", "quality")  # under the form's Advanced expander
PAGE_SIZES = (24, 48, 96)
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")  # colour codes Ray's workers put in the log
_SHORTCODE = re.compile(r":[A-Za-z][\w/+-]*:")  # :dog:, :material/home: (times like 12:44:56 do not match)
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~=:$&\"'])")


def markdown_literal(text: Any) -> str:
    """Text that Streamlit's Markdown (captions, st.markdown, st.error...) shows exactly as written.

    Every Markdown, HTML and directive character is backslash-escaped (so `:red[...]` is no colour directive). An
    emoji shortcode such as `:dog:` is expanded even so: a zero-width space goes inside those alone, so times
    (12:44:56), paths and messages copy exactly as shown.
    """
    text = _SHORTCODE.sub(lambda m: ":\u200b" + m.group(0)[1:], " ".join(str(text).splitlines()))
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def plain_log(text: str) -> str:
    """Log text without terminal colour codes, which a code block would show as garbage."""
    return _ANSI_ESCAPE.sub("", text)


def machine_summary(gpu_folder: Path = Path("/proc/driver/nvidia/gpus"),
                    torch_version: str | None = None) -> dict[str, Any]:
    """What this machine offers the pipeline, found without importing torch (which takes seconds).

    GPUs come from the NVIDIA driver's entries under `gpu_folder`; whether torch can use them, from its version
    (`torch_version`, default: the installed one): a "+cpu" build cannot.
    """
    gpus = _nvidia_gpus(gpu_folder)
    if torch_version is None:
        try:
            torch_version = version("torch")
        except PackageNotFoundError:
            torch_version = None
    cpu_only_torch = bool(torch_version and "+cpu" in torch_version)
    cuda_usable = bool(gpus) and bool(torch_version) and not cpu_only_torch
    parts = [units.count(os.cpu_count(), "CPU core") if os.cpu_count() else "? CPU cores"]
    if gpus:
        named = ": " + ", ".join(gpus) if gpus[0] else ""
        parts.append(f"{units.count(len(gpus), 'NVIDIA GPU')}{named}")
    else:
        parts.append("no CUDA GPU")
    if torch_version:
        parts.append(f"torch {torch_version}" + (" (CPU-only build)" if cpu_only_torch else ""))
    return {"cpus": os.cpu_count() or 0, "gpus": len(gpus), "cuda_usable": cuda_usable, "text": " · ".join(parts)}


def _nvidia_gpus(folder: Path) -> list[str]:
    """GPU model names from the NVIDIA driver's entries ('' where the name is unreadable)."""
    if not folder.is_dir():
        return []
    names = []
    for entry in sorted(folder.iterdir()):
        try:
            info = (entry / "information").read_text()
            lines = info.splitlines()
            names.append(next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Model")), ""))
        except OSError:
            names.append("")
    return names


def demo_kit_folder(runs_root: str | os.PathLike) -> Path:
    """Where the Run page writes the offline demo kit: `demo/` beside the runs root (runs/ → demo/)."""
    from doggos.pipeline.demo import kit_folder  # lazily: the demo kit's module imports numpy

    return kit_folder(runs_root)


class FieldMessage(str):
    """A form error's message (plain text: escaped when shown) carrying its `advice`, Markdown in the dashboard's own
    words ("press **Prepare demo kit** above"), which `field_error_text` shows as written. Compares as the message."""

    advice: str = ""

    def __new__(cls, message: str, advice: str = "") -> "FieldMessage":
        text = super().__new__(cls, message)
        text.advice = advice
        return text


@dataclass
class LaunchResult:
    """A launch's outcome: a run id, or every problem to show, keyed by form field ('' for those without one).

    Each message is a FieldMessage, whose advice `field_error_text` adds.
    """

    run_id: str | None = None
    errors: dict[str, str] = field(default_factory=dict)


def _form_settings(values: dict[str, Any]) -> dict[str, Any]:
    """The form's raw values (text, mostly) as RunConfig settings, not validated yet."""
    return dict(
        source=values.get("source") or "",
        model=values.get("model") or "",
        device=values.get("device") or "auto",
        batch_size=values.get("batch_size"),
        concurrency=values.get("concurrency"),
        limit=values.get("limit"),
        ray_address=values.get("ray_address"),
        s3_endpoint=values.get("s3_endpoint"),
        fp16=bool(values.get("fp16", False)),
        projection=bool(values.get("projection", True)),
        quality=bool(values.get("quality", True)),
        reuse=values.get("reuse") or None,
    )


def config_from_form(values: dict[str, Any]) -> RunConfig:
    """The form's raw values into a RunConfig, whose own validation names every bad field (ConfigErrors for several)."""
    return RunConfig(**_form_settings(values))


def launch(manager, values: dict[str, Any], by=None) -> LaunchResult:
    """Validate the form and start a background run as visitor `by` (host mode); every mistake comes back at once,
    each on its field."""
    from doggos.base.config import problems_of, validate
    from doggos.pipeline import preflight
    from doggos.runs import access

    settings, problems = validate(_form_settings(values))
    refused = access.start_problems(by, settings, manager.root) if by is not None else []
    if problems or refused:
        # The checks whose settings are valid run too, so a bad batch size and a missing source show together; a
        # refused setting is never read (preflight would tell a participant what lies at a path not theirs).
        return LaunchResult(errors=_form_errors(problems + refused + ([] if refused else preflight.problems(settings))))
    try:
        return LaunchResult(run_id=manager.start(RunConfig(**settings), by=by))  # which runs every preflight check
    except ValueError as error:  # ConfigError(s), SourceError, ModelError: each carries the field to blame
        return LaunchResult(errors=_form_errors(problems_of(error)) or {"": FieldMessage(str(error))})
    except OSError as error:  # the runs folder cannot be written, the driver cannot be spawned...
        return LaunchResult(errors={"": FieldMessage(f"the run could not be started: {error}")})


def _form_errors(problems: list[ConfigError]) -> dict[str, str]:
    """Problems keyed by form field ('' for settings the form lacks), with the dashboard's advice, each given once."""
    texts: dict[str, list[str]] = {}
    advice: dict[str, list[str]] = {}
    for problem in problems:
        name = problem.field if problem.field in FORM_FIELDS else ""
        texts.setdefault(name, []).append(problem.message if name else f"{problem.field}: {problem.message}")
        words = problem.advice("ui")
        if words and not any(words in given for given in advice.values()):
            advice.setdefault(name, []).append(words)
    return {name: FieldMessage("; ".join(parts), " ".join(advice.get(name, []))) for name, parts in texts.items()}


def field_error_text(field_name: str, message: str) -> str:
    """Markdown for an error under a form field: the label, the field's name as the CLI spells it, the reason (escaped),
    then the message's advice, if it is a FieldMessage (our own Markdown, shown as written)."""
    from doggos.base.config import add_advice

    label = FORM_FIELDS.get(field_name)
    head = f"**{label}** (`{field_name}`): " if label else ""
    return head + add_advice(markdown_literal(message), getattr(message, "advice", ""))


def form_values_of(config: RunConfig) -> dict[str, Any]:
    """The Run form's widget values (session-state keys `form_<field>`) that would launch `config` again, as a full run:
    reusing is asked for each time (`update_form_values`), never restored with the other settings."""
    values = {}
    for name in [name for name in FORM_FIELDS if name != "reuse"]:
        value = getattr(config, name)
        as_is = isinstance(value, bool) or name == "device"
        values[f"form_{name}"] = value if as_is else ("" if value is None else str(value))
    return values


def update_form_values(run) -> dict[str, Any]:
    """The Run form's values that update finished `run`: its settings, and its folder as the run to reuse."""
    return {**form_values_of(run.config), "form_reuse": str(run.path)}


def update_note(folder: str, runs: Iterable) -> str:
    """Markdown for the note above the form while it updates the run in `folder` (named as the history names it)."""
    run = next((run for run in runs if str(run.path) == folder), None)
    name = markdown_literal(run_name(run) if run else folder)
    return (f"Updating run **{name}**: images whose bytes are unchanged are carried over, only new or changed files "
            "are embedded.")


def resume(manager, run_id: str, by=None) -> str | None:
    """Resume failed run `run_id` as visitor `by`; None once it is queued, else why not (not resumable any more, not
    theirs, its source or model gone, the driver not started), as plain text."""
    from doggos.base.config import problems_of

    try:
        manager.resume(run_id, by=by)
    except KeyError as error:  # RunNotFound: deleted since the page was drawn
        return str(error)
    except (ValueError, OSError) as error:  # ConfigError(s), SourceError, ModelError; a spawn that failed
        problems = problems_of(error)  # each names its field, but for the run itself, which the page names already
        return "; ".join(p.message if p.field == "run" else f"{p.field}: {p.message}" for p in problems) or str(error)
    return None


def rows_text(manifest) -> str:
    """A finished run's row count, and the split for one that carried rows over: '27 images (reused 20, embedded 7)'."""
    text = units.count(manifest.rows, "image")
    if manifest.reuse_text() is None:
        return text
    dropped = f", dropped {units.count(manifest.dropped)}" if manifest.dropped else ""
    return f"{text} (reused {units.count(manifest.reused)}, embedded {units.count(manifest.newly_embedded)}{dropped})"


def live_metrics(progress, phase_s: float | None = None, typical_s: float | None = None) -> dict[str, str]:
    """The live view's metrics, label → value, each rate named by its window (`doggos.pipeline.figures`); "Reused"
    only for a run that carries rows over. During a start-up phase the ETA's place shows how long the phase has
    gone on (`phase_s`), beside its typical length on this machine (`typical_s`, from past runs)."""
    embedding = progress.phase == "embedding"
    metrics = {
        "Embedded": (f"{units.count(progress.embedded)} / {units.count(progress.found)}" if progress.found
                     else units.DASH),
        "Reused": units.count(progress.reused),
        f"Images/s · {figures.CURRENT_WINDOW}": units.rate(progress.images_per_s or None) if embedding else units.DASH,
        figures.RUN_RATE: units.rate(progress.run_images_per_s or None),
    }
    if progress.phase in figures.STARTUP_PHASES:
        usually = f" · usually {units.duration(typical_s)}" if typical_s is not None else ""
        metrics[f"{progress.phase.capitalize()}{usually}"] = units.duration(phase_s)
    else:
        metrics["ETA"] = units.duration(progress.eta_s) if embedding else units.DASH
    metrics["Failed files"] = units.count(progress.failed)
    if not progress.reused:
        del metrics["Reused"]
    return metrics


def settings_rows(record) -> list[dict[str, str]]:
    """A dataclass record (a resource plan, a cluster) as setting/value rows for a two-column table."""
    from dataclasses import fields

    return [{"setting": f.name, "value": str(getattr(record, f.name))} for f in fields(record)]


def history_rows(runs: Iterable) -> list[dict[str, Any]]:
    """The runs table: one plain dict per run, newest first, for st.dataframe ("" where a value does not apply)."""
    rows = []
    for run in runs:
        progress, manifest, config = run.progress, run.manifest, run.config
        rows.append({
            "run": run_name(run),
            "id": run.id,  # beside the name: what the CLI takes (whole, or any part only this run's id has)
            "state": state_text(run),  # the word, no emoji: it reads on a machine without an emoji font
            "story": run.story(),  # how an updated or resumed run came to be; "" for a plain one; read before the counts
            "images": manifest.rows if manifest else progress.embedded + progress.reused,
            "found": manifest.found if manifest else progress.found,
            "failed": run.failed_files,
            "labels": str(manifest.labels) if manifest else "",  # text: one type per column, and no "None"
            "duration": format_duration(run.duration_s),
            "images/s": units.rate(manifest.images_per_s) if manifest else "",
            "source": units.path_tail(config.source) if config else "",  # the tail tells runs apart
            "model": config.model if config else "",
            "error": " ".join((run.error or "").split()),
        })
    return rows


def run_name(run) -> str:
    """A readable name for a run: its source folder and when it was created, e.g. 'digits · 27 Nov 12:57:21' (one
    rule for the dashboard and the CLI, which takes it as a run's name: doggos.runs.naming.readable_name)."""
    from doggos.runs.naming import readable_name

    return readable_name(run.id, run.config.source if run.config else None)


def run_choice_label(run) -> str:
    """How the sidebar names a run: source folder, time, image count."""
    rows = run.manifest.rows if run.manifest else None
    return run_name(run) + (f" · {units.count(rows, 'image')}" if rows is not None else "")


def run_choice_labels(runs: dict) -> dict[str, str]:
    """Run id → its picker label (`run_choice_label`), the id added where two would read the same (two runs of one
    source started in the same second): a select box tells its options apart by their text."""
    labels = {run_id: run_choice_label(run) for run_id, run in runs.items()}
    seen: dict[str, int] = {}
    for label in labels.values():
        seen[label] = seen.get(label, 0) + 1
    return {run_id: f"{label} · {run_id}" if seen[label] > 1 else label for run_id, label in labels.items()}


def after_live_tick(active: bool, was_active: bool, watched, outcome_shown: str | None) -> tuple[bool, bool]:
    """What the Run page's live fragment does once it has drawn: (rerun the whole page, make the watched run current).

    The page reruns once no run is active any more but was at the page's last full run (`was_active`): the picker,
    the delete menu, the history and the polling change with it. With a watched run (`watched`: a RunInfo or None),
    only on the tick after its outcome is on screen (`outcome_shown`, the id the previous tick drew): a rerun asked
    for in the tick that draws it would drop what that tick drew but has not sent yet, and the old live view would
    flash back. A watched run that succeeded becomes the current run."""
    if active or not was_active:
        return False, False
    if watched is not None and outcome_shown != watched.id:
        return False, False
    return True, watched is not None and watched.state == "succeeded"


def progress_caption(progress, phase_s: float | None = None, typical_s: float | None = None) -> str:
    """One line about a live run: phase, counts, the rate (its window named), the ETA; for a start-up phase or a
    post-run step, how long it has gone on (`phase_s`) and how long it usually takes here (`typical_s`)."""
    parts = [progress.phase]
    if progress.found:
        parts.append(f"{units.count(progress.embedded)}/{units.count(progress.found)} images embedded")
    if progress.reused:
        parts.append(f"{units.count(progress.reused)} reused")
    if progress.failed:
        parts.append(f"{units.count(progress.failed)} failed")
    if progress.phase not in figures.STARTUP_PHASES and (rate := figures.rate_text(progress)):
        parts.append(rate)
    if progress.eta_s is not None and progress.phase == "embedding":
        parts.append(f"ETA {units.duration(progress.eta_s)}")
    if phase_s is not None and progress.phase != "embedding":
        usually = f" (usually {units.duration(typical_s)})" if typical_s is not None else ""
        parts.append(f"{units.duration(phase_s)} so far{usually}")
    return " · ".join(parts)


def selection_csv(points) -> str:
    """A selection on the Map or Browse (rows with path and label: the effective label, from the run's index or
    `map_serving.map_rows`) as CSV: path,label, in the selection's order."""
    return points[["path", "label"]].to_csv(index=False)


def page_count(total: int, page_size: int) -> int:
    return max(1, math.ceil(total / page_size))


def page_slice(total: int, page: int, page_size: int) -> slice:
    """Rows of 1-based `page`, clamped into range (a filter change can leave the old page number too high)."""
    page = min(max(1, page), page_count(total, page_size))
    return slice((page - 1) * page_size, min(total, page * page_size))


def detail_width(size: tuple[int, int], target: int = 320, max_zoom: float = 3.0) -> int | str:
    """Display width for the larger view: small images are enlarged up to `max_zoom` to about `target` pixels on
    their longest side, big ones are shown at their own size (the page narrows them to fit)."""
    width, height = size
    if width <= 0 or height <= 0:
        return "content"
    zoom = min(max_zoom, max(1.0, target / max(width, height)))
    return round(width * zoom)


def caption_for(label: str, name: str) -> str:
    return markdown_literal(f"{label} · {name}")


def label_words(label, folder_label: str | None = None, excluded: bool = False) -> str:
    """An image's label as a caption says it: "husky", "husky · was beagle" (relabelled: its folder label differs),
    "excluded" (left out of the dataset, shown on request). A missing label is ""; `folder_label` None: not known."""
    if excluded:
        return "excluded"
    label = _text(label)
    if folder_label is None or _text(folder_label) == label:
        return label
    return f"{label} · was {_text(folder_label) or '(no label)'}"


def thumbnail_caption(label, name: str, folder_label: str | None = None, excluded: bool = False) -> str:
    """A thumbnail's caption, safe for Markdown: "label · name", "husky · was beagle · name", "excluded · name"."""
    return caption_for(label_words(label, folder_label, excluded), name)


def thumbnail_captions(items) -> list[str]:
    """`thumbnail_caption` of each row of a frame with columns label, path and, from a run's index, folder_label and
    excluded."""
    from doggos.base.store import file_name

    folders = [_text(f) for f in items["folder_label"]] if "folder_label" in items else [None] * len(items)
    excluded = items["excluded"] if "excluded" in items else [False] * len(items)
    return [thumbnail_caption(label, file_name(path), folder, bool(out))
            for label, path, folder, out in zip(items["label"], items["path"], folders, excluded)]


def _text(label) -> str:
    """A label as text: a missing one (None, NaN where a label column has a gap) is ""."""
    return label if isinstance(label, str) else ""


def random_weights_text(what: str, many: bool = False) -> str:
    """The warning on a page of a run whose model has random weights; the verbs agree with `what` (`many`: plural)."""
    shows, carries = ("show", "carry") if many else ("shows", "carries")
    return (f"This run's model has **random weights** (the demo kit's): {what} {shows} the mechanics, but {carries} no "
            "meaning. Use a trained CLIP for real results.")


def ordinal(number: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 21st… (doggos.base.units.ordinal, the one formatter)."""
    return units.ordinal(number)


def state_text(run) -> str:
    """A run's state in words: 'queued — 3rd in line' (1st runs next), 'running', and while a cancel is under way
    'stopping — 2 batches in flight' (what it still waits for: RunStatus.stopping_text).

    The word first, and no emoji: ⏳ or 🏃 draw as empty boxes where no emoji font is installed (Debian's chromium),
    and a run's state must read on every machine, in the live card and in the History table alike."""
    status = getattr(run, "status", None)
    stopping = getattr(status, "stopping_text", None)
    if stopping:
        return stopping
    text = run.state
    position = getattr(run, "queue_position", None)
    if run.state == "queued" and position:
        text += f" — {ordinal(position)} in line"
    return text
