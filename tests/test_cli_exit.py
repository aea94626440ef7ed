"""A finished `embed` ends at once with exit 0, starts one Ray, and shows only doggos' own lines on the terminal."""

import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from doggos.base.processes import PROJECT_ROOT
from doggos.base.records import read_manifest
from doggos.base.rundir import RunDir
from doggos.cli import summary

SUMMARY_TO_EXIT_S = 3.0  # the bound on this 2-core machine; measured 1.4-1.6 s (Ray's shutdown is ~1.4 s)
PROGRESS_LINE = re.compile(r"^  (\S[^·]* · )?\d+/\d+ images embedded")  # doggos' progress line (cli.format_progress)
NOT_DOGGOS = ("INFO", "WARNING", "core_worker", "Loading weights", "pid=", "Started a local Ray", "Token auth")


def timed_lines(command: list[str], env: dict) -> tuple[int, list[tuple[float, str, str]], float]:
    """Run `command`: its exit code, every line it printed as (seconds since start, stream, text), when it exited."""
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               cwd=PROJECT_ROOT)
    lines: list[tuple[float, str, str]] = []

    def read(stream, name):
        for line in stream:
            lines.append((time.monotonic() - started, name, line.rstrip("\n")))

    readers = [threading.Thread(target=read, args=(process.stdout, "out")),
               threading.Thread(target=read, args=(process.stderr, "err"))]
    for reader in readers:
        reader.start()
    code = process.wait(timeout=300)
    exited = time.monotonic() - started
    for reader in readers:
        reader.join()
    return code, lines, exited


@pytest.mark.ray
@pytest.mark.slow
def test_repeated_runs_exit_0_soon_after_the_summary_with_one_ray_and_only_doggos_lines(tmp_path, image_tree,
                                                                                        tiny_clip):
    source, _ = image_tree
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths must stay under 107 bytes
    env = dict(os.environ, RAY_TMPDIR=str(ray_tmp), PYTHONPATH=str(PROJECT_ROOT))
    out = tmp_path / "run"
    for attempt in range(3):
        verbose = attempt == 2
        sessions_before = set(ray_tmp.glob("ray/session_2*"))
        code, lines, exited = timed_lines([sys.executable, "-m", "doggos", "embed", "--source", str(source),
                                           "--model", tiny_clip, "--out", str(out), "--overwrite", "--batch-size", "4"]
                                          + (["--verbose"] if verbose else []), env)
        shown = "\n".join(f"{t:6.2f} {name} {text}" for t, name, text in lines)
        assert code == 0, shown
        summary_at = next(t for t, name, text in lines if name == "out" and text.startswith("done: "))
        assert exited - summary_at <= SUMMARY_TO_EXIT_S, shown
        # One Ray per run: no call after the run's shutdown started a second one.
        assert len(set(ray_tmp.glob("ray/session_2*")) - sessions_before) == 1, shown
        output = RunDir(out).output.read_text(errors="replace")
        assert "Started a local Ray" not in output and "Can't find actor" not in output, output
        assert "Starting execution of Dataset" in output  # Ray Data's INFO lines went here, not to the terminal
        if verbose:  # ... and with --verbose, to the terminal as well
            assert any("Starting execution of Dataset" in text for _, _, text in lines), shown
            continue
        own = {line.split(" ", 1)[1] for line in RunDir(out).log.read_text().splitlines() if " " in line}
        summary_lines = set(summary(read_manifest(RunDir(out))).splitlines())
        for _, name, text in lines:
            assert not any(mark in text for mark in NOT_DOGGOS), shown
            assert (text in own or text in summary_lines or PROGRESS_LINE.match(text)
                    or text.startswith("embedding ")), f"not a doggos line: {text!r}\n{shown}"


@pytest.mark.ray
@pytest.mark.slow
def test_nothing_asks_ray_for_progress_once_its_shutdown_begins(tmp_path, image_tree, tiny_clip):
    """The heartbeat and the operator sampler stop, with their last sample, before the run's Ray shuts down."""
    source, _ = image_tree
    script = textwrap.dedent(f"""
        import json, threading
        import ray
        from doggos.runs import driver
        from doggos.base.config import RunConfig

        seen = {{}}
        shut_down = ray.shutdown
        def shutdown(*args, **kwargs):
            seen["threads"] = [t.name for t in threading.enumerate() if t.name.startswith("doggos-heartbeat")]
            return shut_down(*args, **kwargs)
        ray.shutdown = shutdown
        driver.run(RunConfig(source={str(source)!r}, model={tiny_clip!r}, output={str(tmp_path / "run")!r},
                             projection=False, quality=False))
        print(json.dumps(seen))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            cwd=PROJECT_ROOT)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"threads": []}
    lines = [json.loads(line) for line in (tmp_path / "run" / "operators.jsonl").read_text().splitlines()]
    assert lines[-1]["state"] == "finished"  # the sampler's last sample was taken while Ray was up


def test_a_stray_ray_call_fails_instead_of_starting_a_ray(tmp_path):
    """Once doggos connects, Ray's auto-init is off in that process: a call without a connection raises."""
    script = textwrap.dedent("""
        import ray
        from doggos.pipeline.cluster import forbid_implicit_ray
        forbid_implicit_ray()
        try:
            ray.put(1)
        except Exception as error:
            print("refused:", type(error).__name__)
        print("initialized:", ray.is_initialized())
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=PROJECT_ROOT, env={**os.environ, "RAY_TMPDIR": str(tmp_path)})
    assert "refused: " in result.stdout and "initialized: False" in result.stdout, result.stdout + result.stderr
    assert not list(tmp_path.glob("ray/session_2*"))  # no Ray was started
