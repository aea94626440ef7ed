"""Typed run records: a run's status (state, progress phase, counts) and its manifest, read and written only here."""

from __future__ import annotations

import dataclasses
import fcntl
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Literal, get_args

from doggos.base import units
from doggos.base.config import ConfigError, RunConfig
from doggos.base.plan import ResourcePlan
from doggos.base.rundir import RunDir, now_iso, read_json, write_json_atomic

STATUS_LOCK = "status.lock"  # in the run folder: held while status.json is read, merged and written (update_status)
# 1: the untyped manifests written before this module (the same keys, no "schema"); 2: adds schema, embed_s and steps.
SCHEMA_VERSION = 2

RunState = Literal["queued", "starting", "running", "succeeded", "failed", "cancelled"]
ACTIVE_STATES: tuple[RunState, ...] = ("queued", "starting", "running")
# The phases a run shows, in order. Post-run steps add theirs (see doggos.runs.steps) before "done".
Phase = Literal["queued", "starting", "listing", "starting ray", "loading model", "embedding", "writing",
                "projecting", "checking labels", "done"]
PHASES: tuple[Phase, ...] = get_args(Phase)


class RecordError(ValueError):
    """A run folder whose records cannot be read: the message says which run and why."""


@dataclass
class Progress:
    """A snapshot of a run's progress; every count only grows."""

    found: int = 0  # images listed at the source (after any limit)
    decoded: int = 0  # images decoded and preprocessed
    embedded: int = 0  # images whose embedding is computed
    failed: int = 0  # images that could not be read (see failures)
    reused: int = 0  # images whose row was carried over (from the run updated, or the attempts before a resume)
    elapsed_s: float = 0.0  # seconds since the phase's clock started (the run's, or a post-run step's)
    images_per_s: float = 0.0  # embedded per second over the last 5 s (doggos.pipeline.figures: the current rate)
    run_images_per_s: float = 0.0  # per second since the run began (figures.run_rate): the manifest's at the end
    eta_s: float | None = None  # None until a rate is known
    phase: Phase = "starting"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "Progress":
        return cls(**known_fields(cls, data or {}))

    @property
    def processed(self) -> int:
        return self.embedded + self.failed + self.reused

    @property
    def fraction(self) -> float:
        return min(1.0, self.processed / self.found) if self.found else 0.0


@dataclass(frozen=True)
class RunStatus:
    """status.json: where a run stands. Rewritten atomically by its driver while it runs."""

    state: RunState | Literal["unknown"] = "unknown"
    progress: Progress = field(default_factory=Progress)
    pid: int | None = None  # the driver's process
    pid_start: float | None = None  # its start time: with the pid, it names one process (pids are reused)
    created_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    updated: str | None = None
    error: str | None = None
    warnings: int = 0  # files that could not be read in a run that still succeeded
    step: str | None = None  # the post-run step running now, e.g. "map"
    step_started: float | None = None  # when it began (time.time()), so the page can show its elapsed time
    phase_started: dict = field(default_factory=dict)  # phase -> when it was first reported (time.time()): its length
    # Earlier attempts of a resumed run, oldest first: {"ended_at", "error", "found", "embedded", "reused", "fraction"}
    attempts: tuple[dict, ...] = ()
    embedding_key: dict | None = None  # the first attempt's (doggos.pipeline.reuse): a resume checks it still holds
    # While a cancel is under way (the run still active): what it waits for, "2 batches in flight", or "" for nothing
    # in particular; None when no cancel was asked. Read it through `stopping_text`.
    stopping: str | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @classmethod
    def from_dict(cls, data: dict) -> "RunStatus":
        values = known_fields(cls, data)
        values["progress"] = Progress.from_dict(data.get("progress"))
        if not isinstance(values.get("pid_start"), (int, float)):  # older records kept a /proc tick count
            values["pid_start"] = None
        values["attempts"] = tuple(a for a in values.get("attempts") or () if isinstance(a, dict))
        return cls(**values)

    @property
    def resumable(self) -> bool:
        """A run that failed (its driver killed, a node lost, an error) can go on from the rows it kept."""
        return self.state == "failed"

    @property
    def stopping_text(self) -> str | None:
        """'stopping — 2 batches in flight' while a cancel is under way, else None (an ended run is not stopping)."""
        if not self.active or self.stopping is None:
            return None
        return f"stopping — {self.stopping}" if self.stopping else "stopping"


def read_status(run_dir: RunDir) -> RunStatus:
    return RunStatus.from_dict(read_json(run_dir.status, {}) or {})


def update_status(run_dir: RunDir, when: Callable[[RunStatus], bool] | None = None, **changes: Any) -> RunStatus:
    """Merge `changes` (RunStatus fields) into status.json atomically and stamp the time; returns the new status.

    `when`: change nothing unless it holds for the status as it is now (a cancel's note must not bring back a run
    that has just ended; a driver's count must not grow once a cancel is under way). One writer at a time, across
    processes (`status.lock`): a driver's progress, its outcome and a cancel's note are each read, checked, merged and
    written whole, so none undoes another."""
    unknown = set(changes) - {f.name for f in dataclasses.fields(RunStatus)}
    if unknown:
        raise TypeError(f"not RunStatus fields: {sorted(unknown)}")
    if isinstance(changes.get("progress"), Progress):
        changes["progress"] = changes["progress"].to_dict()
    run_dir.path.mkdir(parents=True, exist_ok=True)  # a run's first status may come before anything else in its folder
    with open(run_dir.path / STATUS_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released as the file closes, or as the process dies
        data = read_json(run_dir.status, {}) or {}
        if when is not None and not when(RunStatus.from_dict(data)):
            return RunStatus.from_dict(data)
        data.update(changes, updated=now_iso())
        write_json_atomic(run_dir.status, data)
    return RunStatus.from_dict(data)


@dataclass(frozen=True)
class RayInfo:
    """The Ray a run used."""

    address: str = "local"  # "local": a private Ray started for the run
    nodes: int = 1
    cpus: float = 0.0
    gpus: float = 0.0
    dashboard_url: str | None = None
    embedded_by_node: dict[str, int] = field(default_factory=dict)  # Ray node id -> images its actors embedded

    def work_by_node(self) -> str:
        """Where the embedding ran: '2 nodes: 6617a69d 18 images, 6446086d 6 images'."""
        if not self.embedded_by_node:
            return "not recorded"
        busiest = sorted(self.embedded_by_node.items(), key=lambda kv: -kv[1])
        shares = ", ".join(f"{node[:8]} {units.count(rows, 'image')}" for node, rows in busiest)
        return f"{units.count(len(self.embedded_by_node), 'node')}: {shares}"


@dataclass(frozen=True)
class Manifest:
    """manifest.json: what a finished run produced. Written last: a run is finished only when its manifest says so."""

    run_id: str
    config: RunConfig
    source: str  # the source as resolved (s3://…, or an absolute local path)
    model: str
    model_description: str  # the model's name, flagged when its weights are random
    random_weights: bool
    embedding_dim: int
    rows: int  # images embedded
    found: int  # images listed
    failed: int  # images that could not be read (failures.json)
    skipped_files: int  # files that are not images
    labels: int
    plan: ResourcePlan
    ray: RayInfo
    started_at: str
    ended_at: str
    duration_s: float  # the whole run, from start to its last post-run step
    images_per_s: float  # images embedded per second of embedding (listing to published Parquet; steps left out)
    progress: Progress
    embeddings_path: str
    versions: dict[str, str]
    embed_s: float | None = None  # listing to published Parquet (None in schema 1 records)
    steps: dict[str, float | None] = field(default_factory=dict)  # post-run step name -> seconds (None: it failed)
    reused: int = 0  # rows carried over, not embedded: from the run updated (`reused_from`) or a resumed run's attempts
    embedded: int | None = None  # rows this run embedded itself (None in records written before updates existed)
    dropped: int = 0  # rows of the run updated whose file is gone from the source
    reused_from: str | None = None  # the id of the run this one updated
    attempts: int = 1  # 2 and more: the run was resumed
    embedding_key: dict = field(default_factory=dict)  # what must match for another run to reuse these rows
    status: Literal["succeeded"] = "succeeded"
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        data = asdict(self)
        data["config"] = self.config.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict, run_id: str = "?") -> "Manifest":
        schema = data.get("schema", 1)
        if not isinstance(schema, int) or schema > SCHEMA_VERSION:
            raise RecordError(f"run {run_id} was written by a newer doggos (record schema {schema}; this one reads "
                              f"up to {SCHEMA_VERSION}): upgrade doggos to open it")
        values = known_fields(cls, data)
        if schema == 1 and "projection_s" in data:
            values["steps"] = {"map": data["projection_s"]}
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in values
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise RecordError(f"run {run_id} cannot be opened: its manifest.json lacks {', '.join(missing)} "
                              "(the folder is damaged, or was not written by doggos)")
        try:
            values["config"] = RunConfig.from_dict(known_fields(RunConfig, values["config"] or {}))
        except (ConfigError, TypeError) as error:
            raise RecordError(f"run {run_id} cannot be opened: its recorded settings are invalid ({error})") from None
        values["plan"] = ResourcePlan(**known_fields(ResourcePlan, values["plan"] or {}))
        values["ray"] = RayInfo(**known_fields(RayInfo, values["ray"] or {}))
        values["progress"] = Progress.from_dict(values["progress"])
        values["schema"] = SCHEMA_VERSION
        return cls(**values)

    @property
    def map_s(self) -> float | None:
        return self.steps.get("map")

    @property
    def newly_embedded(self) -> int:
        return self.rows - self.reused if self.embedded is None else self.embedded

    def reuse_text(self) -> str | None:
        """'reused 2,736, embedded 144, dropped 3' for a run that carried rows over; None for one that embedded all."""
        if not self.reused and not self.dropped and not self.reused_from and self.attempts < 2:
            return None
        return (f"reused {units.count(self.reused)}, embedded {units.count(self.newly_embedded)}, "
                f"dropped {units.count(self.dropped)}")


def read_manifest(run_dir: RunDir) -> Manifest | None:
    """The run's manifest; None while it has none (unfinished). RecordError when it exists but cannot be read."""
    data = read_json(run_dir.manifest)
    if data is None:
        if run_dir.manifest.exists():
            raise RecordError(f"run {run_dir.id} cannot be opened: its manifest.json is not valid JSON")
        return None
    if not isinstance(data, dict):
        raise RecordError(f"run {run_dir.id} cannot be opened: its manifest.json is not a JSON object")
    return Manifest.from_dict(data, run_dir.id)


def write_manifest(run_dir: RunDir, manifest: Manifest) -> None:
    write_json_atomic(run_dir.manifest, manifest.to_dict())


def is_finished(run_dir: RunDir) -> bool:
    """True for a run whose manifest says it succeeded and whose Parquet is in place."""
    try:
        manifest = read_manifest(run_dir)
    except RecordError:
        return False
    return manifest is not None and run_dir.embeddings.is_dir()


def known_fields(cls, data) -> dict:
    """The entries of `data` that are fields of the dataclass `cls`: newer records may carry more."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {key: value for key, value in data.items() if key in names}
