"""Host mode: who may launch, cancel and delete runs when a host password is set, checked where runs start and stop.

Without a password every visitor is the host (the dashboard as it always was). With one, each browser session is a
*participant* until it gives the password: it launches runs only on the host's sources and models, with no Ray address
or S3 endpoint, batch size and concurrency capped; it cancels or resumes only runs launched from its own session, and
deletes none. `RunManager` calls the checks here whenever it is told who asks (`by=`), so hidden widgets are not the
only guard: a forged form is refused before anything is spawned.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from doggos.base.config import DEFAULT_MODEL, MAX_CONCURRENCY, ConfigError, raise_all
from doggos.base.decisions import DecisionError, check_name
from doggos.base.plan import GPU_BATCH_SIZE
from doggos.base.rundir import write_json_atomic
from doggos.pipeline import demo

PASSWORD_ENV = "DOGGOS_HOST_PASSWORD"
SOURCES_ENV = "DOGGOS_SOURCES"
MODELS_ENV = "DOGGOS_MODELS"
MAX_CONCURRENCY_ENV = "DOGGOS_MAX_CONCURRENCY"
WRONG_PASSWORD_WAIT_S = 2.0  # per wrong try: guessing a password through the form takes forever
PARTICIPANT_MAX_BATCH = GPU_BATCH_SIZE  # the largest batch the plan ever picks itself; more only fills memory
OWNER_FILE = "owner.json"  # in a run's folder: who launched it (a hash of the session's token, never the token)
HOST, PARTICIPANT = "host", "participant"


class AccessDenied(ConfigError):
    """Something a participant may not do (the host may); `field` names the setting or "run"."""


@dataclass(frozen=True)
class HostPolicy:
    """What the host allows participants; `password` None: no host mode, everybody is the host."""

    password: str | None = field(default=None, repr=False)
    sources: tuple[str, ...] = ()  # as shown in the Source select box: absolute folders or URIs
    models: tuple[str, ...] = ()
    max_concurrency: int | None = None  # None: participants leave concurrency to the plan (auto)
    runs_root: Path = Path("runs")

    @property
    def open(self) -> bool:
        """No password configured: every visitor has full control."""
        return self.password is None

    @classmethod
    def load(cls, secrets: Mapping[str, Any] | None = None, environ: Mapping[str, str] = os.environ,
             runs_root: str | os.PathLike = "runs") -> "HostPolicy":
        """The policy from the environment, else `secrets` (st.secrets as a dict: `[doggos] host_password`).

        Raises ConfigError naming the variable when one is malformed."""
        runs_root = Path(runs_root).expanduser().absolute()
        password = environ.get(PASSWORD_ENV) or None
        if password is None:
            section = (secrets or {}).get("doggos") or {}
            if not isinstance(section, Mapping):
                raise ConfigError("host_password", "[doggos] in .streamlit/secrets.toml must be a table")
            password = section.get("host_password") or None
            if password is not None and not isinstance(password, str):
                raise ConfigError("host_password", "under [doggos] in .streamlit/secrets.toml must be text "
                                                   f"(got {type(password).__name__}): quote it")
        kit = demo.kit_folder(runs_root)
        kit_images, kit_model = kit / demo.DEMO_IMAGES_DIR, kit / demo.DEMO_MODEL_DIR
        sources = _entries(environ, SOURCES_ENV) or ([str(kit_images)] if kit_images.is_dir() else [])
        models = _entries(environ, MODELS_ENV) or [*([str(kit_model)] if kit_model.is_dir() else []), DEFAULT_MODEL]
        return cls(password=password, sources=tuple(dict.fromkeys(_shown(s) for s in sources)),
                   models=tuple(dict.fromkeys(_shown(m, model=True) for m in models)),
                   max_concurrency=_max_concurrency(environ.get(MAX_CONCURRENCY_ENV)), runs_root=runs_root)

    def check_password(self, given: str, sleep: Callable[[float], None] | None = None) -> bool:
        """Whether `given` is the host password (compared in constant time); a wrong one waits 2 s first."""
        if self.password is None:
            return True
        if hmac.compare_digest(str(given or "").encode("utf-8"), self.password.encode("utf-8")):
            return True
        (sleep or time.sleep)(WRONG_PASSWORD_WAIT_S)
        return False

    def visitor(self, token: str, unlocked: bool = False, name: str | None = None) -> "Visitor":
        """The visitor a browser session is: the host without a password or once unlocked, else a participant."""
        return Visitor(self, HOST if self.open or unlocked else PARTICIPANT, token, name)

    def allowed_source(self, source: str | None) -> str | None:
        """The listed source that `source` names (after normalising paths), or None."""
        return _match(source, self.sources, model=False)

    def allowed_model(self, model: str | None) -> str | None:
        """The listed model that `model` names (a local folder after normalising, a Hub id exactly), or None."""
        return _match(model, self.models, model=True)


@dataclass(frozen=True)
class Visitor:
    """One browser session as the server sees it: its role, its random token (made once per session) and name."""

    policy: HostPolicy
    role: str
    token: str
    name: str | None = None

    @property
    def is_host(self) -> bool:
        return self.role == HOST

    @property
    def token_hash(self) -> str:
        return hashlib.sha256(self.token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Owner:
    """Who launched a run, as its owner.json records it."""

    token_hash: str
    name: str | None
    role: str


def record_owner(run_path: str | os.PathLike, visitor: Visitor) -> None:
    """Write who launched the run into its folder: the token's hash (so the file gives no session away) and name."""
    write_json_atomic(Path(run_path) / OWNER_FILE,
                      {"token_sha256": visitor.token_hash, "name": visitor.name, "role": visitor.role})


def owner_of(run_path: str | os.PathLike) -> Owner | None:
    """The run's launcher, or None (a run started from the command line, or before host mode)."""
    try:
        data = json.loads((Path(run_path) / OWNER_FILE).read_text(encoding="utf-8"))
        return Owner(str(data["token_sha256"]), data.get("name"), str(data.get("role", PARTICIPANT)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def owns(visitor: Visitor, run) -> bool:
    """Whether `visitor` controls `run` (anything with a `path`): the host always, a participant its own runs."""
    if visitor.is_host:
        return True
    owner = owner_of(run.path)
    return owner is not None and hmac.compare_digest(owner.token_hash, visitor.token_hash)


def start_problems(visitor: Visitor, settings: Mapping[str, Any], runs_root: str | os.PathLike | None = None
                   ) -> list[AccessDenied]:
    """What `visitor` may not launch among `settings` (a RunConfig's fields; missing ones are not checked)."""
    if visitor.is_host:
        return []
    policy = visitor.policy
    problems = []
    source, model = settings.get("source"), settings.get("model")
    if source and policy.allowed_source(source) is None:
        allowed = ", ".join(policy.sources) or "none yet (the host sets DOGGOS_SOURCES or prepares the demo kit)"
        problems.append(AccessDenied("source", f"{source!r} is not one of the sources the host allows: {allowed}"))
    if model and policy.allowed_model(model) is None:
        problems.append(AccessDenied("model", f"{model!r} is not one of the models the host allows: "
                                              f"{', '.join(policy.models)}"))
    for name in ("ray_address", "s3_endpoint"):
        if settings.get(name):
            problems.append(AccessDenied(name, "is the host's to set: leave it empty"))
    reuse = settings.get("reuse")
    root = Path(runs_root or policy.runs_root)
    if reuse and Path(os.path.realpath(os.path.expanduser(reuse))).parent != Path(os.path.realpath(root)):
        problems.append(AccessDenied("reuse", f"{reuse!r} is not a run in the runs folder ({root}): "
                                              "participants update only the runs listed here"))
    batch = settings.get("batch_size")
    if isinstance(batch, int) and batch > PARTICIPANT_MAX_BATCH:
        problems.append(AccessDenied("batch_size", f"must be at most {PARTICIPANT_MAX_BATCH} for participants "
                                                   f"(got {batch})"))
    concurrency = settings.get("concurrency")
    if isinstance(concurrency, int):
        if policy.max_concurrency is None:
            problems.append(AccessDenied("concurrency", "is set by the host: leave it empty (auto)"))
        elif concurrency > policy.max_concurrency:
            problems.append(AccessDenied("concurrency", f"must be at most {policy.max_concurrency} for participants "
                                                        f"(the host's {MAX_CONCURRENCY_ENV}; got {concurrency})"))
    return problems


def check_start(visitor: Visitor, config, runs_root: str | os.PathLike | None = None) -> None:
    """Raise AccessDenied (ConfigErrors for several) for what `visitor` may not launch in `config` (a RunConfig)."""
    raise_all(start_problems(visitor, config.to_dict(), runs_root))


def check_cancel(visitor: Visitor, run) -> None:
    """Raise AccessDenied unless `visitor` may cancel `run` (a RunInfo): the host, or the session that launched it."""
    _check_own(visitor, run, "cancel")


def check_resume(visitor: Visitor, run, runs_root: str | os.PathLike | None = None) -> None:
    """Raise AccessDenied unless `visitor` may resume `run`: its own, with settings the host still allows."""
    _check_own(visitor, run, "resume")
    if run.config is not None:
        check_start(visitor, run.config, runs_root)


def check_delete(visitor: Visitor) -> None:
    """Raise AccessDenied for a participant: only the host deletes runs."""
    if not visitor.is_host:
        raise AccessDenied("run", "participants cannot delete runs: ask the host (or unlock with the host password)")


def check_participant_name(text: str) -> str:
    """A participant's name as recorded with runs and label decisions; ConfigError naming `name` if unusable."""
    try:
        return check_name(text)
    except DecisionError as error:
        raise ConfigError("name", str(error).split(": ", 1)[-1]) from None


def _check_own(visitor: Visitor, run, verb: str) -> None:
    if not owns(visitor, run):
        raise AccessDenied("run", f"run {run.id} was launched from another browser session: only that session or "
                                  f"the host can {verb} it")


def _entries(environ: Mapping[str, str], name: str) -> list[str]:
    """A list variable split on os.pathsep, keeping a URI's scheme with its path (s3://b/p holds a ':')."""
    pieces = (environ.get(name) or "").split(os.pathsep)
    entries: list[str] = []
    for piece in pieces:
        if entries and piece.startswith("//") and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", entries[-1]):
            entries[-1] += ":" + piece
        else:
            entries.append(piece)
    entries = [entry.strip() for entry in entries if entry.strip()]
    for entry in entries:
        if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*://", entry):
            raise ConfigError(name, f"{entry!r} names no bucket or folder; separate entries with {os.pathsep!r}")
    return entries


def _max_concurrency(text: str | None) -> int | None:
    if text is None or not text.strip():
        return None
    try:
        value = int(text.strip())
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_CONCURRENCY:
        raise ConfigError(MAX_CONCURRENCY_ENV, f"must be a whole number from 1 to {MAX_CONCURRENCY} (got {text!r}); "
                                               "unset, participants leave concurrency on auto")
    return value


def _is_uri(text: str) -> bool:
    return "://" in text


def _shown(entry: str, model: bool = False) -> str:
    """An entry as listed: a URI without its trailing '/', a local folder absolute, a Hub id as written."""
    if _is_uri(entry):
        return entry.rstrip("/")
    path = os.path.expanduser(entry)
    if model and not (os.path.isabs(path) or entry.startswith((".", "~")) or os.path.isdir(path)):
        return entry  # a Hub id such as openai/clip-vit-base-patch32
    return os.path.abspath(path)


def _key(text: str, model: bool) -> str:
    """What two names of one source compare by: the real path of a local folder (symlinks and '..' resolved, so no
    prefix or link trick names another folder), a file:// URI as its path, other URIs and Hub ids exactly."""
    text = text.strip()
    if text.startswith("file://"):
        text = text[len("file://"):]
    if _is_uri(text):
        return text.rstrip("/")
    if model and _shown(text, model=True) == text and not os.path.isabs(text):
        return text
    return os.path.realpath(os.path.expanduser(text))


def _match(given: str | None, listed: tuple[str, ...], model: bool) -> str | None:
    if not isinstance(given, str) or not given.strip():
        return None
    key = _key(given, model)
    return next((entry for entry in listed if _key(entry, model) == key), None)
