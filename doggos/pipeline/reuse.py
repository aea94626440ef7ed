"""Rows that need no embedding: the key, the hash filter, a failed attempt's kept blocks, the carried-over rows."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from doggos.base.config import ConfigError
from doggos.base.records import RecordError, read_manifest
from doggos.base.rundir import embedding_files, run_dir_of

COLUMNS = ("path", "class", "embedding", "thumbnail", "width", "height", "content_hash")  # a row, as the actors write it
CARRIED_ROWS_PER_FILE = 4096  # carried-over rows per Parquet file written
HASH_DTYPE = "S64"  # a sha256 as 64 hex characters: 6.4 MB for 100,000 images, searched with np.searchsorted

log = logging.getLogger("doggos")


def embedding_key(model: str, fp16: bool, thumbnail_size: int) -> dict:
    """What must match for rows of one run to stand for another's: the model's fingerprint (config, preprocessing,
    weights), half precision, and the stored thumbnail's size. Device and batch size change no row."""
    from doggos.pipeline import models

    return {"model": models.fingerprint(model), "fp16": bool(fp16), "thumbnail_size": int(thumbnail_size)}


def check_reusable(old, key: dict, field: str = "reuse") -> None:
    """Refuse, naming `field`, a run whose rows cannot stand for this run's: not finished, no content hashes, made
    with another model, weights or settings."""
    run_dir = run_dir_of(old)
    if not run_dir.path.is_dir():
        raise ConfigError(field, f"no run folder {str(run_dir.path)!r}")
    try:
        manifest = read_manifest(run_dir)
    except RecordError as error:
        raise ConfigError(field, str(error)) from None
    if manifest is None:
        raise ConfigError(field, f"run {run_dir.id} has not succeeded (no manifest.json): only a finished run's rows "
                                 "can be reused; resume it instead if it failed")
    files = embedding_files(run_dir)
    if not files:
        raise ConfigError(field, f"run {run_dir.id} has no Parquet files under {run_dir.embeddings}")
    if "content_hash" not in pq.read_schema(files[0]).names:
        raise ConfigError(field, f"run {run_dir.id} has no content hashes (made by an older doggos): its rows cannot "
                                 "be matched to files; embed without reuse once")
    old_key = manifest.embedding_key
    if not old_key or not old_key.get("model"):
        raise ConfigError(field, f"run {run_dir.id} records no model fingerprint (made by an older doggos, or with a "
                                 "Hub model not in this machine's cache): embed without reuse once")
    if key.get("model") is None:
        raise ConfigError(field, "this run's model is not in this machine's Hugging Face cache, so its weights cannot "
                                 "be compared with the reused run's: load it once (or use a local folder)")
    if old_key["model"] != key["model"]:
        raise ConfigError(field, f"run {run_dir.id} was embedded with {manifest.model} (weights {old_key['model'][:12]}); "
                                 f"this run's model has other weights or preprocessing ({key['model'][:12]}): reuse "
                                 "needs the same model, so drop reuse for a full run")
    for setting, shown in (("fp16", "half precision (fp16)"), ("thumbnail_size", "thumbnail size")):
        if old_key.get(setting) != key.get(setting):
            raise ConfigError(field, f"run {run_dir.id} was made with {shown} {old_key.get(setting)} and this run asks "
                                     f"for {key.get(setting)}: reuse needs the same embedding settings")


@dataclass(frozen=True)
class Carry:
    """Rows embedded before that this run may carry over instead of embedding their files again."""

    files: tuple[Path, ...]  # Parquet holding them: a reused run's embeddings, a failed attempt's kept rows
    hashes: np.ndarray  # their content hashes, sorted and unique (HASH_DTYPE)

    @classmethod
    def of(cls, files) -> "Carry":
        files = tuple(files)
        columns = [pq.read_table(f, columns=["content_hash"]).column(0) for f in files]
        hashes = [h for column in columns for h in column.to_pylist() if h]
        return cls(files, np.unique(np.array(hashes, dtype=HASH_DTYPE)))


def skip_known(batch: dict[str, np.ndarray], known: list, tracker=None) -> dict[str, np.ndarray]:
    """Hash each file's bytes (read once, by the read task; nothing is decoded) and pass on only the files no reusable
    row has; the others go to the tracker as (path, label, hash), to be carried over once the pipeline is done.

    `known`: [an ObjectRef of Carry.hashes]; in a list, so Ray hands it over as a reference, fetched here zero-copy,
    instead of copying megabytes of hashes into every task's arguments.
    """
    import ray

    hashes = ray.get(known[0]) if isinstance(known[0], ray.ObjectRef) else known[0]
    digests = np.array([hashlib.sha256(data).hexdigest() for data in batch["bytes"]], dtype=object)
    keys = digests.astype(HASH_DTYPE) if len(digests) else np.zeros(0, HASH_DTYPE)
    at = np.searchsorted(hashes, keys)
    found = (at < len(hashes)) & (hashes[np.minimum(at, max(len(hashes) - 1, 0))] == keys) if len(hashes) else \
        np.zeros(len(keys), bool)
    if tracker is not None and found.any():
        reused = [(str(p), str(c), str(h)) for p, c, h in zip(batch["path"][found], batch["class"][found], digests[found])]
        answer = tracker.add_reused.remote(reused)
        if isinstance(answer, ray.ObjectRef):  # waited for: the driver reads the list once the last task is done
            ray.get(answer)
    kept = {name: column[~found] for name, column in batch.items()}
    kept["content_hash"] = digests[~found]
    return kept


def write_carried(carry: Carry, reused: list[tuple[str, str, str]], folder: Path) -> int:
    """Write a row for each reused file into `folder`: the embedding, thumbnail and size of the first stored row with
    its hash; its path and label as listed now (a file may have moved). Returns the rows written."""
    wanted: dict[str, list[tuple[str, str]]] = {}
    for path, label, content_hash in sorted(set(reused)):
        wanted.setdefault(content_hash, []).append((path, label))
    folder.mkdir(parents=True, exist_ok=True)
    written, pending = 0, []
    token = uuid.uuid4().hex[:8]
    for source in carry.files:
        if not wanted:
            break
        for batch in pq.ParquetFile(source).iter_batches(columns=list(COLUMNS[2:]), batch_size=CARRIED_ROWS_PER_FILE):
            take, paths, labels = [], [], []
            for row, content_hash in enumerate(batch.column("content_hash").to_pylist()):
                for path, label in wanted.pop(content_hash, ()):
                    take.append(row), paths.append(path), labels.append(label)
            if take:
                taken = pa.Table.from_batches([batch]).take(take)
                pending.append(pa.table({"path": pa.array(paths, pa.string()), "class": pa.array(labels, pa.string()),
                                         **{name: taken.column(name) for name in COLUMNS[2:]}}))
            if sum(t.num_rows for t in pending) >= CARRIED_ROWS_PER_FILE:
                written += _write(pending, folder / f"carried-{token}-{written:09d}.parquet")
                pending = []
    if pending:
        written += _write(pending, folder / f"carried-{token}-{written:09d}.parquet")
    if wanted:  # the pipeline skipped files for hashes the carry's files do not hold: a bug, never a silent gap
        raise RuntimeError(f"{sum(len(v) for v in wanted.values())} reused rows are missing from {len(carry.files)} files")
    return written


def _write(tables: list[pa.Table], path: Path) -> int:
    """One Parquet file, renamed into place: a resume never finds half of it."""
    table = pa.concat_tables(tables)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return table.num_rows


def keep_rows(run) -> int:
    """Move the Parquet an attempt wrote before it stopped (staged, or published before its manifest) into
    `embeddings.kept/`, where a resume looks; returns the files moved. Checked only when a resume reads them."""
    run_dir = run_dir_of(run)
    moved = 0
    for folder in (run_dir.staging, run_dir.embeddings):
        if not folder.is_dir():
            continue
        run_dir.kept.mkdir(exist_ok=True)
        for file in sorted(folder.glob("*.parquet")):
            # Ray names a write's files after the write, so names of two attempts never clash; carried-* ones might.
            try:
                os.replace(file, run_dir.kept / f"{uuid.uuid4().hex[:8]}-{file.name}")
            except FileNotFoundError:  # another process finding the same dead driver moved it first
                continue
            moved += 1
        shutil.rmtree(folder, ignore_errors=True)
    return moved


def kept_files(run) -> tuple[list[Path], list[tuple[str, str]]]:
    """The kept Parquet files that read back whole, and (name, why) for each one that does not, now deleted: a block
    the kill cut short, a file truncated or damaged on disk. Its images are embedded again, never published."""
    run_dir = run_dir_of(run)
    good, bad = [], []
    files = sorted(run_dir.kept.glob("*.parquet")) if run_dir.kept.is_dir() else []
    for file in files:
        why = _damage(file)
        if why is None:
            good.append(file)
        else:
            bad.append((file.name, why))
            file.unlink(missing_ok=True)
    for leftover in run_dir.kept.glob(".*.tmp") if run_dir.kept.is_dir() else ():
        leftover.unlink(missing_ok=True)
    return good, bad


def _damage(file: Path) -> str | None:
    """Why a kept file cannot be trusted, or None: every column read back in full, the footer's row count met."""
    try:
        table = pq.read_table(file)
        expected = pq.ParquetFile(file).metadata.num_rows
    except Exception as error:  # pyarrow's errors for a cut or damaged file vary: any of them disqualifies it
        return f"unreadable ({type(error).__name__}: {str(error).splitlines()[0][:120] if str(error) else ''})"
    missing = [name for name in COLUMNS if name not in table.column_names]
    if missing:
        return f"lacks {', '.join(missing)}"
    if table.num_rows != expected:
        return f"{table.num_rows} rows read of {expected}"
    if table.column("content_hash").null_count or table.column("embedding").null_count:
        return "rows without a hash or an embedding"
    return None


def discard_kept(run) -> None:
    """Forget the kept rows: a cancel, a fresh start, or a run that published them."""
    shutil.rmtree(run_dir_of(run).kept, ignore_errors=True)


def dropped_rows(old, new) -> int:
    """Rows of the reused run `old` that the run `new` has no row for, by path or by bytes: their files are gone (a
    file moved or renamed keeps its row, under its new path)."""
    tables = [pq.read_table(f, columns=["path", "content_hash"]) for f in embedding_files(new)]
    paths = {p for t in tables for p in t.column("path").to_pylist()}
    hashes = {h for t in tables for h in t.column("content_hash").to_pylist()}
    gone = 0
    for f in embedding_files(old):
        table = pq.read_table(f, columns=["path", "content_hash"])
        gone += sum(1 for path, content_hash in zip(table.column("path").to_pylist(),
                                                    table.column("content_hash").to_pylist())
                    if path not in paths and content_hash not in hashes)
    return gone
