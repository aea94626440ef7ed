"""Dashboard at scale: map time and page render times for a synthetic run of 100,000 embeddings.

    python bench/dashboard_scale.py [--rows 100000] [--dim 512] [--workdir bench-data/dashboard] [--maps 2] [--cold]

Writes a synthetic finished run (clustered random vectors, stored thumbnails), computes its default UMAP map the
way the Map page does, in a fresh process (`python -m doggos.runs.steps` with the map's step: imports and numba's cache
load included), `--maps` times; with `--cold` the first of them starts from an empty numba cache, as on a machine
that never drew a map. Then renders Browse, Map and Run summary with Streamlit's AppTest: once cold (filling the
caches) and once in a fresh session (what a second visitor, or a reload, gets).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from _dashboard_fixtures import write_fake_run  # noqa: E402  (the tests' synthetic-run writer)

PAGES = ("pages/browse.py", "pages/map.py", "pages/summary.py")


def timed(action):
    started = time.perf_counter()
    result = action()
    return result, time.perf_counter() - started


def map_seconds(run: Path, cold: bool) -> float:
    """The default map computed as the Map page has it computed: `python -m doggos.runs.steps` in a fresh process."""
    from doggos.explore import projection
    from doggos.runs import steps

    environment = dict(os.environ, PYTHONPATH=str(ROOT))
    with tempfile.TemporaryDirectory() as empty:
        if cold:
            environment["NUMBA_CACHE_DIR"] = empty  # numba looks there first: nothing compiled is found
        params = json.dumps(steps.params_dict(projection.DEFAULT_PARAMS))
        command = [sys.executable, "-m", "doggos.runs.steps", projection.MAP.home, str(run), params, "--force"]
        _, seconds = timed(lambda: subprocess.run(command, env=environment, check=True, capture_output=True))
    return seconds


def render(page: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600).run()
    at.switch_page(page)
    _, seconds = timed(at.run)
    if at.exception:
        raise RuntimeError(f"{page}: {[e.value for e in at.exception]}")
    return at, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--labels", type=int, default=120)
    parser.add_argument("--workdir", default=str(ROOT / "bench-data" / "dashboard"))
    parser.add_argument("--maps", type=int, default=2, help="times the map is computed, each in a fresh process")
    parser.add_argument("--cold", action="store_true", help="the first map starts from an empty numba cache")
    args = parser.parse_args()

    runs = Path(args.workdir).absolute()
    shutil.rmtree(runs, ignore_errors=True)
    per_label = args.rows // args.labels
    labels = {f"breed {i:03d}": per_label for i in range(args.labels)}
    run, write_s = timed(lambda: write_fake_run(runs, labels=labels, dim=args.dim, files=16))
    rows = per_label * args.labels
    os.environ["DOGGOS_RUNS_DIR"] = str(runs)

    results = [("write synthetic run", write_s)]
    for number in range(args.maps):
        cold = args.cold and number == 0
        cache = "empty" if cold else "warm"
        results.append((f"default UMAP map, fresh process, {cache} numba cache", map_seconds(run, cold)))
    for page in PAGES:
        at, cold = render(page)
        _, warm = render(page)
        results += [(f"{page}: first render, cold caches", cold), (f"{page}: render in a fresh session, cached", warm)]
        if page.endswith("map.py"):
            figure = at.get("plotly_chart")[0].proto.spec
            webgl = '"type":"scattergl"' in figure.replace(" ", "")
            results.append((f"{page}: traces drawn with WebGL (scattergl): {webgl}", 0.0))

    print(f"\n{rows:,} embeddings of dimension {args.dim}, {args.labels} labels; {os.cpu_count()} CPUs")
    print("| step | seconds |\n|---|---:|")
    for name, seconds in results:
        print(f"| {name} | {seconds:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
