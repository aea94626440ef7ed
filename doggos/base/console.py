"""The terminal kept for doggos' own lines: what Ray, its workers and the libraries print goes to the run's output.txt.

Ray writes to this process's file descriptors from C++ (`core_worker.cc …`), from its log monitor (the actors' output:
transformers' `Loading weights` bars and config warnings) and from its loggers (Ray Data's INFO lines, the token-auth
warning). Redirecting descriptors 1 and 2 catches all of them, and the processes Ray starts inherit it; doggos' own
lines are written to duplicates of the terminal's descriptors taken before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, TextIO

ECHO_JOIN_S = 2.0  # how long to wait for the echo of --verbose to drain at the end (a dying Ray may hold the pipe)


@dataclass
class Console:
    """Streams that reach the terminal while descriptors 1 and 2 write to a file."""

    out: TextIO  # for results (the summary)
    err: TextIO  # for progress, log lines and messages

    def say(self, line: str) -> None:
        print(line, file=self.err, flush=True)


@contextlib.contextmanager
def everything_else_to(path: str | os.PathLike, echo: bool = False) -> Iterator[Console]:
    """While inside, descriptors 1 and 2 (and those of the processes started meanwhile) append to `path`; the yielded
    Console still writes to the terminal, and so do doggos' log records. `echo`: the file's lines reach the terminal
    too (`--verbose`). Everything is put back on the way out, so later messages reach the terminal as before."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = os.dup(1), os.dup(2)
    console = Console(out=open(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace"),
                      err=open(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace"))
    echo_thread = None
    if echo:
        target, write_end = os.pipe()
        # The thread owns its pipe end, file and terminal descriptor: it may outlive this block by a moment.
        echo_thread = threading.Thread(target=_tee, args=(target, Path(path), os.dup(saved[1])), name="doggos-echo",
                                       daemon=True)
        echo_thread.start()
        os.dup2(write_end, 1)
        os.dup2(write_end, 2)
        os.close(write_end)
    else:
        with open(Path(path), "ab") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
    try:
        with doggos_log_to(console.err):
            yield console
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(saved[0], 1)  # the pipe's last writer here goes, so the echo sees its end
        os.dup2(saved[1], 2)
        if echo_thread is not None:
            echo_thread.join(ECHO_JOIN_S)
        for handle in (console.out, console.err):
            handle.close()
        for fd in saved:
            os.close(fd)


def _tee(read_fd: int, path: Path, terminal_fd: int) -> None:
    """Copy what arrives on the pipe to the file and to the terminal, until every writer has closed it."""
    with open(read_fd, "rb", buffering=0) as pipe, open(path, "ab", buffering=0) as log:
        while chunk := pipe.read(65536):
            log.write(chunk)
            with contextlib.suppress(OSError):  # the terminal went away: the file still gets it
                os.write(terminal_fd, chunk)
    os.close(terminal_fd)


@contextlib.contextmanager
def doggos_log_to(stream: TextIO) -> Iterator[None]:
    """doggos' log records (INFO and up) as bare lines on `stream`, and only there, while inside."""
    logger = logging.getLogger("doggos")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(logging.INFO)
    before = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the root logger's handlers write to descriptor 2: the file, not the terminal
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before[0])
        logger.propagate = before[1]
