"""The corrected dataset: every image of a run under its effective label, as a CSV of decisions or a new folder tree.

`apply` writes `<dest>/<effective label>/<file name>` (excluded images left out) from the run's source files, read
through the same pyarrow filesystems the pipeline read them with; the source is never touched. A local tree is
written into a hidden folder beside `dest` and renamed into place at the end, so a failure leaves nothing behind; an
`s3://` tree is written object by object, and the objects written are deleted again when one fails.
"""

from __future__ import annotations

import os
import posixpath
import secrets
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs

from doggos.base import decisions, store
from doggos.base.rundir import atomic_output, run_dir_of

EXPORT_COLUMNS = ("path", "label", "new_label", "decision")
MODES = ("copy", "link")
COPY_THREADS = 8  # files in flight at once: an object store answers each request slowly, a local disk does not mind
CHUNK = 1 << 20


def export_rows(run, state: decisions.LabelState | None = None) -> pd.DataFrame:
    """One row per image of the run, in row order: path, label (its folder's), new_label (the effective label where a
    relabel is in effect, else empty) and decision (relabel, keep, exclude; empty where none is in effect)."""
    table = store.read_columns(run, ["path", "class"])
    paths, folders = table.column("path").to_pylist(), table.column("class").to_pylist()
    applied = (decisions.state(run) if state is None else state).apply(paths, folders)
    decision = ["exclude" if x else "relabel" if c else "keep" if r else ""
                for x, c, r in zip(applied.excluded, applied.changed, applied.reviewed)]
    return pd.DataFrame({"path": paths, "label": folders,
                         "new_label": [str(label) if c else "" for label, c in zip(applied.labels, applied.changed)],
                         "decision": decision}, columns=list(EXPORT_COLUMNS))


def export_csv(run, file, overwrite: bool = False, state: decisions.LabelState | None = None) -> int:
    """`export_rows` as CSV into `file` (written whole or not at all); refuses an existing file unless `overwrite`.
    Returns the rows written."""
    target = Path(file).expanduser().absolute()
    if target.is_dir():
        raise ValueError(f"FILE: {target} is a folder; give a file name such as decisions.csv")
    if target.exists() and not overwrite:
        raise ValueError(f"FILE: {target} exists; choose another name or pass --overwrite to replace it")
    if not target.parent.is_dir():
        raise ValueError(f"FILE: the folder {target.parent} does not exist")
    rows = export_rows(run, state)
    try:
        with atomic_output(target) as tmp:
            rows.to_csv(tmp, index=False)
    except OSError as error:
        raise ValueError(f"FILE: cannot write {target}: {error.strerror or error}") from None
    return len(rows)


@dataclass
class TreeReport:
    """What `apply` wrote: images per effective label, excluded images left out, file names changed by a clash."""

    dest: str
    mode: str
    labels: dict[str, int] = field(default_factory=dict)
    excluded: int = 0
    renamed: list[tuple[str, str]] = field(default_factory=list)  # (source path, its place: "label/name-2.jpg")
    replaced: bool = False  # an earlier tree at dest was replaced (overwrite)

    @property
    def images(self) -> int:
        return sum(self.labels.values())


def plan(paths: list[str], labels, excluded, changed=None) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(source path, "label/name") for every image not excluded, and the renamed ones: a name already taken in its
    label becomes "name-2.ext" (then -3, ...), never another image's own name. Images still in their folder's label
    (not `changed`) take their names first, then the relabelled ones, each in row order."""
    changed = [False] * len(paths) if changed is None else changed
    order = sorted(range(len(paths)), key=lambda row: bool(changed[row]))  # stable: row order within each
    kept = [(paths[row], str(labels[row])) for row in order if not excluded[row]]
    for label in {label for _, label in kept}:
        _check_folder_name(label)
    originals: dict[str, set[str]] = {}
    for path, label in kept:
        originals.setdefault(label, set()).add(store.file_name(path))
    taken: dict[str, set[str]] = {label: set() for label in originals}
    placed, renamed = [], []
    for path, label in kept:
        name = store.file_name(path)
        if name in taken[label]:
            stem, ext = posixpath.splitext(name)
            number = 2
            while f"{stem}-{number}{ext}" in taken[label] or f"{stem}-{number}{ext}" in originals[label]:
                number += 1
            name = f"{stem}-{number}{ext}"
            renamed.append((path, f"{label}/{name}"))
        taken[label].add(name)
        placed.append((path, f"{label}/{name}"))
    return placed, renamed


def _check_folder_name(label: str) -> None:
    # A folder label came from a folder name; a new one passed decisions.check_label. This guards the tree anyway.
    if not label or "/" in label or label in (".", ".."):
        raise ValueError(f"label: {label!r} cannot be a folder name in the corrected tree")


def apply(run, dest: str, mode: str = "copy", overwrite: bool = False, s3_endpoint: str | None = None,
          state: decisions.LabelState | None = None) -> TreeReport:
    """Write the corrected tree of `run` at `dest` (a local folder or an s3:// prefix, through `s3_endpoint`; the
    source is read with the endpoint the run recorded): a copy of each image, or (`mode` "link", local only) a symlink.

    ValueErrors naming the argument: an unknown mode, links off a local disk, a destination inside the source or
    holding it (or the run), a non-empty destination without `overwrite`, one that cannot be written."""
    from doggos.base.records import read_manifest

    if mode not in MODES:
        raise ValueError(f"mode: must be one of {', '.join(MODES)} (got {mode!r})")
    if not isinstance(dest, str) or not dest.strip():
        raise ValueError("to: must not be empty: give the folder (or s3:// prefix) for the corrected tree")
    run = run_dir_of(run)
    manifest = read_manifest(run)
    if manifest is None:
        raise ValueError(f"run: {run.id} is not finished: it has no images to write")
    table = store.read_columns(run, ["path", "class"])
    paths, folders = table.column("path").to_pylist(), table.column("class").to_pylist()
    applied = (decisions.state(run) if state is None else state).apply(paths, folders)
    placed, renamed = plan(paths, applied.labels, applied.excluded, applied.changed)
    target = _Target.of(dest.strip(), s3_endpoint)
    if mode == "link" and (not target.local or any("://" in path for path, _ in placed)):
        raise ValueError("link: symlinks need a local source and a local destination; use --copy for s3://")
    target.check_apart(manifest.source, run.path, [path for path, _ in placed])
    report = TreeReport(target.display, mode, excluded=int(applied.excluded.sum()), renamed=renamed)
    for _, place in placed:
        label = place.rsplit("/", 1)[0]
        report.labels[label] = report.labels.get(label, 0) + 1
    report.labels = dict(sorted(report.labels.items()))
    reader = _Reader(manifest.config.s3_endpoint if manifest.config else None)
    report.replaced = target.write(placed, reader, mode, overwrite)
    return report


class _Reader:
    """Opens a run's source files: local paths directly, URIs through the filesystems `open_source` gives the pipeline
    (one per S3 bucket)."""

    def __init__(self, s3_endpoint: str | None):
        self.s3_endpoint = s3_endpoint
        self.buckets: dict[str, pafs.FileSystem] = {}
        self.local = pafs.LocalFileSystem()

    def locate(self, path: str) -> tuple[pafs.FileSystem, str]:
        from doggos.pipeline.sources import open_source

        if "://" not in path:
            return self.local, path
        scheme, _, rest = path.partition("://")
        if scheme.lower() in ("s3", "s3a"):
            bucket = rest.split("/", 1)[0]
            if bucket not in self.buckets:
                self.buckets[bucket] = open_source(f"s3://{bucket}", self.s3_endpoint).filesystem
            return self.buckets[bucket], rest
        source = open_source(path, self.s3_endpoint)  # another scheme (gs://, hdfs://): rare, resolved per file
        return source.filesystem, source.root


@dataclass
class _Target:
    """Where the tree goes: a filesystem, the root inside it, and whether it is this machine's disk."""

    filesystem: pafs.FileSystem
    root: str
    local: bool
    display: str

    @classmethod
    def of(cls, dest: str, s3_endpoint: str | None) -> _Target:
        from doggos.pipeline.sources import SourceError, open_source

        try:
            source = open_source(dest, s3_endpoint)
        except SourceError as error:
            raise ValueError(f"to: {error.message}") from None
        if not source.scheme:
            path = os.path.realpath(source.root)  # symlinks resolved: "inside the source" must see through them
            return cls(source.filesystem, path, True, path)
        return cls(source.filesystem, source.root.strip("/"), False, source.to_uri(source.root.strip("/")))

    def _inside(self, path: str, folder: str) -> bool:
        return path == folder or path.startswith(folder.rstrip("/") + "/")

    def _own(self, location: str) -> str | None:
        """`location` (a local path or URI) as this target's filesystem names it; None when it lives elsewhere."""
        if self.local:
            return None if "://" in location else os.path.normpath(location)
        scheme, _, rest = location.partition("://")
        return rest.strip("/") if rest and self.display.startswith(f"{scheme}://") else None

    def check_apart(self, source: str, run_folder: Path, images: list[str]) -> None:
        """Refuse a destination inside the source or the run folder, or holding either: writing or replacing it
        would change them."""
        root = self._own(source) if source else None
        root = os.path.realpath(root) if root is not None and self.local else root
        if root is not None and self._inside(self.root, root):
            raise ValueError(f"to: {self.display} is inside the run's source {source}: write the corrected tree "
                             "elsewhere (the source is never changed)")
        if root is not None and self._inside(root, self.root):
            raise ValueError(f"to: {self.display} holds the run's source {source}: choose a folder outside it")
        run_folder = os.path.realpath(run_folder)
        if self.local and (self._inside(run_folder, self.root) or self._inside(self.root, run_folder)):
            raise ValueError(f"to: {self.display} {'holds' if self._inside(run_folder, self.root) else 'is inside'} "
                             f"the run folder {run_folder}: choose a folder outside it")
        for image in images:
            own = self._own(image)
            if own is not None and self._inside(own, self.root):
                raise ValueError(f"to: {self.display} holds the run's image {image}: choose a folder outside the "
                                 "source")

    def write(self, placed: list[tuple[str, str]], reader: _Reader, mode: str, overwrite: bool) -> bool:
        """Write every (source, place); True when an earlier tree was replaced."""
        existing = self._existing()
        if existing and not overwrite:
            raise ValueError(f"to: {self.display} is not empty ({len(existing):,} entries); choose a new folder or "
                             "pass --overwrite to replace it")
        if self.local:
            return self._write_local(placed, reader, mode, bool(existing))
        self._write_remote(placed, reader, existing)
        return bool(existing)

    def _existing(self) -> list[str]:
        if self.local:
            path = Path(self.root)
            if path.exists() and not path.is_dir():
                raise ValueError(f"to: {self.display} is a file; give a folder")
            try:
                return [entry.name for entry in path.iterdir()] if path.is_dir() else []
            except OSError as error:
                raise ValueError(f"to: cannot read {self.display}: {error.strerror or error}") from None
        bucket = self.root.split("/", 1)[0]
        try:
            if self.filesystem.get_file_info(bucket).type == pafs.FileType.NotFound:
                raise ValueError(f"to: the bucket {bucket!r} does not exist (check the name and the --s3-endpoint)")
            infos = self.filesystem.get_file_info(pafs.FileSelector(self.root, recursive=True, allow_not_found=True))
        except OSError as error:
            raise ValueError(f"to: cannot list {self.display}: {_first_line(error)}") from None
        return [info.path for info in infos if info.type == pafs.FileType.File]

    def _write_local(self, placed, reader: _Reader, mode: str, replace: bool) -> bool:
        dest = Path(self.root)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            staging = _new_folder(dest.parent, f".{dest.name}.partial-")
        except OSError as error:
            if dest.is_dir() and not replace and os.access(dest, os.W_OK):
                _fill_then_clean(dest, placed, reader, mode)  # the parent is closed to us, the (empty) folder is not
                return False
            raise ValueError(f"to: cannot write to {dest.parent}: {error.strerror or error}") from None
        old = None
        try:
            _fill(self.filesystem, str(staging), placed, reader, mode)
            if replace:
                old = _new_folder(dest.parent, f".{dest.name}.old-")
                os.replace(dest, old / "tree")
            elif dest.exists():
                dest.rmdir()  # empty (checked): the staged tree takes its place
            os.rename(staging, dest)
        except BaseException as error:
            if old is not None and (old / "tree").exists() and not dest.exists():
                os.replace(old / "tree", dest)  # put the earlier tree back
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(error, OSError):
                raise ValueError(f"to: cannot write {self.display}: {error.strerror or error}") from None
            raise
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        return replace

    def _write_remote(self, placed, reader: _Reader, existing: list[str]) -> None:
        written: list[str] = []
        try:
            _fill(self.filesystem, self.root, placed, reader, "copy", written)
        except BaseException as error:
            for path in written:
                try:
                    self.filesystem.delete_file(path)
                except OSError:
                    pass
            if isinstance(error, OSError):
                raise ValueError(f"to: cannot write {self.display}: {_first_line(error)}") from None
            raise
        new = set(written)
        for path in existing:  # --overwrite: the earlier tree's objects the new one did not replace
            if path not in new:
                self.filesystem.delete_file(path)


def _new_folder(parent: Path, prefix: str) -> Path:
    """A new folder with a free random name; made with the usual mode (tempfile's 0700 would stay on the tree)."""
    while True:
        folder = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue


def _fill_then_clean(dest: Path, placed, reader: _Reader, mode: str) -> None:
    """Write straight into an empty `dest`; on failure remove what was written."""
    try:
        _fill(pafs.LocalFileSystem(), str(dest), placed, reader, mode)
    except BaseException as error:
        for entry in dest.iterdir():
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise ValueError(f"to: cannot write {dest}: {error.strerror or error}") from None
        raise


def _fill(filesystem: pafs.FileSystem, root: str, placed, reader: _Reader, mode: str,
          written: list[str] | None = None) -> None:
    """Each (source, place) copied (or linked) to root/place, a few at a time; `written` collects the paths done."""
    local = isinstance(filesystem, pafs.LocalFileSystem)
    if local:
        for label in {place.rsplit("/", 1)[0] for _, place in placed}:
            os.makedirs(os.path.join(root, label), exist_ok=True)

    def one(item: tuple[str, str]) -> str:
        source, place = item
        target = f"{root}/{place}"
        if mode == "link":
            os.symlink(os.path.abspath(source), target)
            return target
        source_fs, source_path = reader.locate(source)
        try:
            stream = source_fs.open_input_stream(source_path)
        except (OSError, ValueError) as error:
            raise ValueError(f"source: cannot read the run's image {source}: {_first_line(error)}") from None
        if written is not None:
            written.append(target)  # before the first byte: a stream closed by an error may still leave an object
        with stream, filesystem.open_output_stream(target) as out:
            while chunk := stream.read(CHUNK):
                out.write(chunk)
        return target

    pool = ThreadPoolExecutor(max_workers=COPY_THREADS)
    try:
        for _ in pool.map(one, placed):
            pass
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # after a failure: no more files started


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__
