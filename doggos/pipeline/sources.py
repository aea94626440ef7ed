"""Where images come from: resolve a folder or URI to a pyarrow filesystem, list its images, label them."""

from __future__ import annotations

import hashlib
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from doggos.base.config import ConfigError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
S3_CONNECT_TIMEOUT_S = 5  # an unreachable endpoint should fail a launch fast, not after minutes
S3_ATTEMPTS = 2


class SourceError(ConfigError):
    """The source cannot be used; the message says why, and `hint` what to try (each surface words it its own way)."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__("source", message, hint)


@dataclass(frozen=True)
class Source:
    """A resolved image source: a filesystem, the root inside it, and how to turn paths back into URIs."""

    uri: str  # what the user gave, normalized
    filesystem: pafs.FileSystem
    root: str  # the root as the filesystem names it (no scheme)
    scheme: str  # "s3://", "gs://", ... or "" for local paths

    def to_uri(self, fs_path: str) -> str:
        return self.scheme + fs_path


@dataclass(frozen=True)
class Listing:
    """The images found under a source, sorted, and how many other files were skipped."""

    paths: list[str]  # filesystem paths (no scheme)
    skipped_files: int


def label_of(path: str) -> str:
    """The label of an image is its parent folder's name, verbatim (`<root>/<label>/<file>`).

    An image lying directly in the source root takes the root folder's name (for s3://bucket/x.jpg, the bucket's).
    """
    parent = posixpath.dirname(path.rstrip("/"))
    return posixpath.basename(parent) or parent


def is_image_name(name: str) -> bool:
    base = posixpath.basename(name)
    # Hidden files include macOS "._x.jpg" resource forks, which carry an image extension but no image.
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


def open_source(uri: str, s3_endpoint: str | None = None) -> Source:
    """Resolve a local folder or URI to a filesystem without touching it (listing does that)."""
    uri = uri.strip()
    if "://" not in uri:
        root = os.path.abspath(os.path.expanduser(uri))
        return Source(uri=root, filesystem=pafs.LocalFileSystem(), root=root, scheme="")
    scheme, _, rest = uri.partition("://")
    scheme = scheme.lower()
    rest = rest.strip("/")
    if scheme == "file":
        return open_source("/" + rest)
    if not rest:
        raise SourceError(f"{uri!r} names no bucket or folder")
    if scheme in ("s3", "s3a"):
        return Source(uri=f"s3://{rest}", filesystem=s3_filesystem(rest.split("/")[0], s3_endpoint), root=rest, scheme="s3://")
    try:
        filesystem, root = pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError):  # pyarrow knows no such scheme: fsspec may
        filesystem, root = _fsspec_filesystem(uri)
    return Source(uri=f"{scheme}://{rest}", filesystem=filesystem, root=root.strip("/"), scheme=f"{scheme}://")


def s3_filesystem(bucket: str, endpoint: str | None = None) -> pafs.S3FileSystem:
    """An S3 filesystem: credentials from the usual AWS environment, else anonymous (public buckets)."""
    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    options: dict = dict(
        anonymous=not _aws_credentials_present(),
        connect_timeout=S3_CONNECT_TIMEOUT_S,
        request_timeout=30,
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=S3_ATTEMPTS),
    )
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        # Explicit keys travel with the filesystem to Ray workers, which may not share the driver's environment.
        options.update(access_key=os.environ["AWS_ACCESS_KEY_ID"], secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                       session_token=os.environ.get("AWS_SESSION_TOKEN"))
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        options.update(endpoint_override=host.rstrip("/"), scheme=scheme, region=region or "us-east-1")
    else:
        if not region:
            try:
                region = pafs.resolve_s3_region(bucket)
            except OSError as error:
                raise SourceError(*_s3_message(f"s3://{bucket}", error)) from None
        options.update(region=region)
    return pafs.S3FileSystem(**options)


def list_images(source: Source, limit: int | None = None) -> Listing:
    """All image files under the source root, recursively, sorted by path (with `limit`, an even sample across labels:
    `sample_across_labels`); raises SourceError with a fix."""
    try:
        info = source.filesystem.get_file_info(source.root)
        if info.type == pafs.FileType.NotFound:
            # S3 has no folders: a prefix "exists" only through its objects, so look before calling it missing.
            if not source.scheme:
                raise SourceError(f"{source.uri} does not exist; check the path", "demo_kit")
        elif info.type == pafs.FileType.File:
            raise SourceError(f"{source.uri} is a file; give the folder that holds <label>/<image> subfolders")
        selector = pafs.FileSelector(source.root, recursive=True, allow_not_found=bool(source.scheme))
        infos = source.filesystem.get_file_info(selector)
    except SourceError:
        raise
    except PermissionError as error:
        raise SourceError(f"cannot read {source.uri}: permission denied ({error})") from None
    except OSError as error:
        if source.scheme == "s3://":
            raise SourceError(*_s3_message(source.uri, error)) from None
        raise SourceError(f"cannot list {source.uri}: {error}") from None
    files = [i.path for i in infos if i.type == pafs.FileType.File]
    images = sorted(p for p in files if is_image_name(p) and "/__MACOSX/" not in p)
    skipped = len(files) - len(images)
    if not images:
        if not files and source.scheme == "s3://":
            bucket = source.root.split("/")[0]
            if source.filesystem.get_file_info(bucket).type == pafs.FileType.NotFound:
                raise SourceError(f"{source.uri}: the bucket {bucket!r} does not exist (check the name and, for a custom server, the endpoint)")
        if not files and source.scheme:
            raise SourceError(f"nothing found under {source.uri}: the prefix is empty or does not exist")
        raise SourceError(
            f"no images under {source.uri} ({len(files)} other files); looked for {', '.join(IMAGE_EXTENSIONS)}"
        )
    if limit is not None:
        images = sample_across_labels(images, limit, source.root)
    return Listing(paths=images, skipped_files=skipped)


def sample_across_labels(paths: list[str], limit: int, root: str = "") -> list[str]:
    """At most `limit` of `paths`, spread evenly over their labels, sorted by path: every label gets its turn, one
    image at a time (round robin, labels in name order) until the limit is reached or a label has no more.

    Which images a label gives is seeded, not random: its images ordered by a hash of (LIMIT_SEED, the path below
    `root`), an order that is the same on every listing, wherever the source is mounted. So the same files and limit
    pick the same images (a resume embeds the same set), and a larger limit keeps a smaller one's images. Adding
    files can change the pick: an image added to a label holding more than its share displaces at most one of that
    label's, but one added to a smaller label takes a place from another label, and a new label folder takes its
    share from the others. A resume finds its rows by path and an update by the files' bytes, so only the newly
    picked images are embedded."""
    if limit >= len(paths):
        return list(paths)
    by_label: dict[str, list[str]] = {}
    for path in paths:
        by_label.setdefault(label_of(path), []).append(path)
    prefix = root.rstrip("/") + "/" if root else ""
    queues = [sorted(group, key=lambda path: _seeded_rank(path.removeprefix(prefix))) for _, group in
              sorted(by_label.items())]
    # Round robin without the loop: each label takes `share` images, and the first `extra` labels still holding
    # more take one more (labels smaller than their share give theirs up to the others).
    taken, remaining = [0] * len(queues), limit
    while remaining:
        open_labels = [i for i, queue in enumerate(queues) if taken[i] < len(queue)]
        share = max(1, remaining // len(open_labels))
        for i in open_labels:
            step = min(share, len(queues[i]) - taken[i], remaining)
            taken[i] += step
            remaining -= step
            if not remaining:
                break
    return sorted(path for queue, count in zip(queues, taken) for path in queue[:count])


LIMIT_SEED = "doggos-limit-1"  # changing it changes which images every limited run picks: keep it


def _seeded_rank(relative_path: str) -> bytes:
    return hashlib.sha256(f"{LIMIT_SEED}\0{relative_path}".encode()).digest()


def _aws_credentials_present() -> bool:
    env = os.environ
    if env.get("AWS_ACCESS_KEY_ID") or env.get("AWS_PROFILE") or env.get("AWS_WEB_IDENTITY_TOKEN_FILE"):
        return True
    shared = env.get("AWS_SHARED_CREDENTIALS_FILE") or str(Path.home() / ".aws" / "credentials")
    return os.path.exists(shared)


def _s3_message(uri: str, error: Exception) -> tuple[str, str | None]:
    """What to say about an S3 error, and the hint, if any (offline, the demo kit)."""
    text = str(error)
    if "NoSuchBucket" in text or "does not exist" in text or "NOT_FOUND" in text:
        return f"{uri}: the bucket does not exist (check the name and, for a custom server, the endpoint)", None
    if "AccessDenied" in text or "ACCESS_DENIED" in text or "Forbidden" in text or "403" in text:
        return f"{uri}: access denied. For a private bucket set AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE)", None
    if "curlCode" in text or "connect" in text.lower() or "resolve" in text.lower() or "timed out" in text.lower():
        return f"{uri}: S3 is unreachable ({text.splitlines()[0][:200]}); check the network or the endpoint", "demo_kit"
    return f"{uri}: {text.splitlines()[0][:300] if text else type(error).__name__}", None


def _fsspec_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    try:
        import fsspec
    except ImportError:
        raise SourceError(f"{uri}: unsupported scheme; use a local folder or s3://") from None
    try:
        fs, root = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as error:
        raise SourceError(f"{uri}: unsupported filesystem ({error})") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), root
