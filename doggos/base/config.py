"""The one validated configuration object for a pipeline run, and the errors that name the setting to fix."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

DEFAULT_MODEL = "openai/clip-vit-base-patch32"
DEVICES = ("auto", "cpu", "cuda")
MAX_BATCH_SIZE = 4096  # more images than this per forward pass is a typo, not a plan
MAX_CONCURRENCY = 1024  # embedder actors; each one holds a full copy of the model
MAX_THUMBNAIL_SIZE = 1024
RAY_CLIENT_PORT = 10001  # Ray Client's port when a ray:// address names none (Ray's own default)
SURFACES = ("cli", "ui")  # where a message is shown: each words its advice its own way
ADVICE = {  # hint -> advice per surface: the command line names a command, the dashboard its button (Markdown)
    "demo_kit": {
        "cli": "Offline? Write the demo kit with: python -m doggos demo-kit demo, then use "
               "--source demo/digits --model demo/clip-random-weights-tiny",
        "ui": "Offline? Press **Prepare demo kit** above: it writes the kit and fills in its images and model.",
    },
}


class ConfigError(ValueError):
    """A setting a user can fix. `field` names it as the CLI and the form do; `hint` (a key of ADVICE), if any,
    names advice that each surface words its own way (see `user_messages`)."""

    def __init__(self, field: str, message: str, hint: str | None = None):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.hint = hint

    def advice(self, surface: str | None) -> str:
        """The hint's advice as `surface` words it; '' without a hint or a surface."""
        return ADVICE.get(self.hint or "", {}).get(surface or "", "")

    def __reduce__(self):
        # Rebuilt from its state: subclasses take other arguments, and Ray pickles the errors its workers raise.
        return _rebuild, (type(self), self.args, self.__dict__)


class ConfigErrors(ConfigError):
    """Several settings to fix at once: `errors` maps each field to its message, and `str` lists them all.

    `field` and `message` still read as one error does (`f"{field}: {message}"` is the whole list), so code that
    knows only ConfigError shows every problem.
    """

    def __init__(self, problems: Iterable[ConfigError]):
        self.problems = tuple(p for problem in problems for p in problems_of(problem))
        if not self.problems:
            raise ValueError("ConfigErrors needs at least one problem")
        text = "; ".join(str(p) for p in self.problems)
        first = self.problems[0]
        super().__init__(first.field, text[len(first.field) + 2:])

    @property
    def errors(self) -> dict[str, str]:
        errors: dict[str, str] = {}
        for p in self.problems:
            errors[p.field] = f"{errors[p.field]}; {p.message}" if p.field in errors else p.message
        return errors


def _rebuild(cls, args, state):
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


def problems_of(error: BaseException) -> list[ConfigError]:
    """The ConfigErrors inside `error`: its problems, itself, or (for another error with a `field`) one made from it."""
    if isinstance(error, ConfigErrors):
        return list(error.problems)
    if isinstance(error, ConfigError):
        return [error]
    field = getattr(error, "field", None)
    if field:
        text = str(error)
        return [ConfigError(field, text[len(field) + 2:] if text.startswith(f"{field}: ") else text)]
    return []


def raise_all(problems: list[ConfigError]) -> None:
    """Raise nothing, the one problem as it is, or ConfigErrors for several."""
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise ConfigErrors(problems)


def user_messages(error: BaseException, surface: str | None = "cli") -> list[str]:
    """Each problem in `error` as one line, 'field: message', then its advice worded for `surface` (None: no advice).

    The same advice is given once, after the first problem that calls for it.
    """
    problems = problems_of(error)
    if not problems:
        return [str(error)]
    lines, advised = [], set()
    for problem in problems:
        line = f"{problem.field}: {problem.message}"
        advice = problem.advice(surface)
        if advice not in advised:
            advised.add(advice)
            line = add_advice(line, advice)
        lines.append(line)
    return lines


def add_advice(text: str, advice: str) -> str:
    """`text`, ended as a sentence, then `advice` ('' adds nothing)."""
    if not advice:
        return text
    return f"{text} {advice}" if text.rstrip().endswith((".", "!", "?")) else f"{text.rstrip()}. {advice}"


def user_message(error: BaseException, surface: str | None = "cli") -> str:
    """An error as one line: every problem prefixed with the field to fix, with advice worded for `surface`."""
    return "; ".join(user_messages(error, surface))


@dataclass(frozen=True)
class RunConfig:
    """What one embedding run is asked to do. Build it with `RunConfig(...)`; it validates itself and reports every
    bad setting at once (ConfigErrors when there are several)."""

    source: str  # local folder or URI (s3://bucket/prefix, ...) holding <label>/<image> files
    output: str | None = None  # local folder for the run's files; None: the run manager assigns runs/<run id>
    model: str = DEFAULT_MODEL  # Hugging Face CLIP id, or a local folder saved with save_pretrained
    device: str = "auto"  # auto: cuda when the cluster has GPUs, else cpu
    batch_size: int | None = None  # images per forward pass; None: 16 on CPU, 64 on GPU
    concurrency: int | None = None  # embedder actors; None: derived from the cluster's CPUs/GPUs
    limit: int | None = None  # N images sampled evenly across labels, seeded (sources.sample_across_labels); None: all
    ray_address: str | None = None  # "auto" (a cluster on this machine), "host:port", "ray://host:10001"; None: RAY_ADDRESS or a private local Ray
    s3_endpoint: str | None = None  # S3-compatible endpoint URL; None: AWS_ENDPOINT_URL or AWS itself
    fp16: bool = False  # half precision on cuda (ignored on CPU, where fp16 is slower)
    thumbnail_size: int = 224  # longest side of the JPEG thumbnail stored with each row, in pixels
    projection: bool = True  # compute the default UMAP map as the run's last step, so the Map page opens at once
    quality: bool = True  # check the labels (neighbours, zero-shot, duplicates) as a last step, on the run's Ray
    reuse: str | None = None  # a finished run's folder whose rows for unchanged files are carried over; None: embed all

    def __post_init__(self) -> None:
        settings, problems = validate(self.__dict__)
        raise_all(problems)
        for name, value in settings.items():
            object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(unknown[0], f"is not a setting (known: {', '.join(sorted(known))})")
        return cls(**data)

    def with_absolute_paths(self) -> "RunConfig":
        """Local source and model folders made absolute, so a driver or worker in another directory finds them."""
        source = self.source if "://" in self.source else os.path.abspath(os.path.expanduser(self.source))
        model = os.path.abspath(os.path.expanduser(self.model)) if os.path.isdir(os.path.expanduser(self.model)) else self.model
        output = os.path.abspath(os.path.expanduser(self.output)) if self.output else None
        reuse = os.path.abspath(os.path.expanduser(self.reuse)) if self.reuse else None
        return self.replace(source=source, model=model, output=output, reuse=reuse)

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)


def validate(values: Mapping[str, Any]) -> tuple[dict[str, Any], list[ConfigError]]:
    """Every RunConfig setting in `values` normalized, and a ConfigError for each bad one; a missing setting takes
    its default. The valid ones come back even when others are bad, so checks that need only them can still run."""
    settings, problems = {}, []
    for spec in dataclasses.fields(RunConfig):
        value = values.get(spec.name, spec.default if spec.default is not dataclasses.MISSING else None)
        try:
            settings[spec.name] = _VALIDATORS[spec.name](spec.name, value)
        except ConfigError as problem:
            problems.append(problem)
    return settings, problems


def split_ray_address(address: str) -> tuple[str, str | None, int | None]:
    """("auto", None, None), ("client", host, port) for ray://host[:port], or ("gcs", host, port) for host:port.

    Raises ValueError saying what a Ray address looks like.
    """
    text = address.strip()
    if text.lower() == "auto":
        return "auto", None, None
    if text.lower() == "local":
        raise ValueError("'local' is what an empty address does: leave it empty for a private local Ray")
    kind = "gcs"
    if "://" in text:
        scheme, _, text = text.partition("://")
        if scheme.lower() != "ray":
            web = " (an http address is the Ray dashboard's, not the cluster's)" if scheme.lower() in ("http", "https") else ""
            raise ValueError(f"{scheme}:// is not a Ray address{web}; {_ADDRESS_FORMS}")
        kind = "client"
    host, port = _host_port(text.rstrip("/"), RAY_CLIENT_PORT if kind == "client" else None)
    return kind, host, port


_ADDRESS_FORMS = "give host:port (the head's GCS port, 6379 unless changed), ray://host:10001 (Ray Client) or auto"


def _host_port(text: str, default_port: int | None) -> tuple[str, int]:
    if text.startswith("["):  # [IPv6]:port
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else rest
    else:
        host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if not host or not all(c.isalnum() or c in "-._:" for c in host):
        raise ValueError(f"{text!r} names no host; {_ADDRESS_FORMS}")
    if not port_text:
        if default_port is None:
            raise ValueError(f"{text!r} names no port; {_ADDRESS_FORMS}")
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{port_text!r} is not a port (1 to 65535); {_ADDRESS_FORMS}")
    return host, int(port_text)


def _required_text(field: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(field, "is required (got an empty value)")
    return value.strip()


def _optional_text(field: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ConfigError(field, f"must be text (got {value!r})")
    return (value or "").strip() or None


def _device(field: str, value: Any) -> str:
    if value not in DEVICES:
        raise ConfigError(field, f"must be one of {', '.join(DEVICES)} (got {value!r})")
    return value


def _ray_address(field: str, value: Any) -> str | None:
    text = _optional_text(field, value)
    if text is None:
        return None
    try:
        kind, _, _ = split_ray_address(text)
    except ValueError as error:
        raise ConfigError(field, f"{error} (got {text!r})") from None
    return "auto" if kind == "auto" else text


def _s3_endpoint(field: str, value: Any) -> str | None:
    text = _optional_text(field, value)
    if text and not text.startswith(("http://", "https://")):
        raise ConfigError(field, f"must be a URL starting with http:// or https:// (got {text!r})")
    return text


def _flag(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(field, f"must be true or false (got {value!r})")
    return value


def _thumbnail_size(field: str, value: Any) -> int:
    size = _count(field, value, MAX_THUMBNAIL_SIZE)
    if size < 16:
        raise ConfigError(field, f"must be at least 16 pixels (got {size})")
    return size


def _count(field: str, value: Any, maximum: int | None) -> int:
    """A positive whole number, also from text such as a form or CLI gives; bools and fractions are refused."""
    if isinstance(value, bool):
        raise ConfigError(field, f"must be a whole number (got {value!r})")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(field, f"must be a whole number (got {text!r})") from None
    elif isinstance(value, float):
        if not value.is_integer():
            raise ConfigError(field, f"must be a whole number (got {value!r})")
        value = int(value)
    elif not isinstance(value, int):
        raise ConfigError(field, f"must be a whole number (got {value!r})")
    if value < 1:
        raise ConfigError(field, f"must be at least 1 (got {value})")
    if maximum is not None and value > maximum:
        raise ConfigError(field, f"must be at most {maximum} (got {value})")
    return value


def _optional_count(maximum: int | None) -> Callable[[str, Any], int | None]:
    def check(field: str, value: Any) -> int | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return _count(field, value, maximum)

    return check


_VALIDATORS: dict[str, Callable[[str, Any], Any]] = {  # RunConfig field -> its check, which returns the clean value
    "source": _required_text,
    "output": lambda field, value: None if value is None else _required_text(field, value),
    "model": _required_text,
    "device": _device,
    "batch_size": _optional_count(MAX_BATCH_SIZE),
    "concurrency": _optional_count(MAX_CONCURRENCY),
    "limit": _optional_count(None),
    "ray_address": _ray_address,
    "s3_endpoint": _s3_endpoint,
    "fp16": _flag,
    "thumbnail_size": _thumbnail_size,
    "projection": _flag,
    "quality": _flag,
    "reuse": _optional_text,
}
