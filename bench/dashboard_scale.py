"""Dashboard at scale: UMAP time and page render times for a synthetic run of 100,000 embeddings.

    python bench/dashboard_scale.py [--rows 100000] [--dim 512] [--workdir bench-data/dashboard]

Writes a synthetic finished run (clustered random vectors, stored thumbnails), projects it with the default
UMAP as a run's last step would, then renders Browse, Map and Run summary with Streamlit's AppTest: once cold
(filling the caches) and once in a fresh session (what a second visitor, or a reload, gets).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
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
    args = parser.parse_args()

    runs = Path(args.workdir).absolute()
    shutil.rmtree(runs, ignore_errors=True)
    per_label = args.rows // args.labels
    labels = {f"breed {i:03d}": per_label for i in range(args.labels)}
    run, write_s = timed(lambda: write_fake_run(runs, labels=labels, dim=args.dim, files=16))
    rows = per_label * args.labels
    os.environ["DOGGOS_RUNS_DIR"] = str(runs)

    from doggos import projection

    _, umap_s = timed(lambda: projection.compute(run, projection.DEFAULT_PARAMS))
    results = [("write synthetic run", write_s), ("UMAP, default parameters (import + fit)", umap_s)]
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
