"""`python -m doggos.bench.map_scale --rows N…`: the dashboard on synthetic runs of N rows, measured in Chromium."""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from doggos.bench import app_server

# The map component's "drawn and interactive" state: adjust here if the component names it differently.
MAP_READY = '[data-testid="doggos-map"][data-state="ready"]'
MAP_ROOT = '[data-testid="doggos-map"]'
CANVAS = '[data-testid="doggos-map-canvas"]'  # inside the map root: where points are drawn (hovers, wheel steps)
CARD = '[data-testid="doggos-map-card"]'  # inside the map root: the hover card and its thumbnail

PAGES = {"map": "Map", "browse": "Browse", "search": "Search", "quality": "Quality"}  # url path → h1 title
CHROMIUM = "/usr/bin/chromium"  # Debian's package; never a browser downloaded by `playwright install`
LAUNCH_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 900}  # the browser tests' size: the Map and its legend side by side
START_TIMEOUT_S = 180.0  # a cold streamlit start beside a just-written million-row run on 2 busy cores
RSS_EVERY_S = 0.1  # the server's memory is sampled this often: a page's peak lasts a fraction of a second
POLL_MS = 50  # how often the browser re-checks a page's readiness: the timing's resolution
HOVER_AWAY_MS = 2_000  # the card must be gone before the next hover is timed; else its old image would count
HOVER_TIMEOUT_MS = 10_000  # a card slower than this counts as a failed hover
WHEEL_DELTA = 240  # px per wheel step: two notches of a mouse wheel
MB = 1024 * 1024

# Readiness as the browser sees it, polled in the page (each condition, and `ready`: all of them). Playwright's CSS
# pierces open shadow roots, plain DOM queries do not: `deepAll` walks them, since the map component lives in one.
_READY_JS = """([kind, title, mapReady]) => {
  const deepAll = (selector, root = document) => {
    const found = [...root.querySelectorAll(selector)];
    for (const node of root.querySelectorAll('*')) {
      if (node.shadowRoot) found.push(...deepAll(selector, node.shadowRoot));
    }
    return found;
  };
  const shown = (node) => !!node && node.getClientRects().length > 0 && node.checkVisibility();
  const app = document.querySelector('[data-testid="stApp"]');
  const state = {
    connected: app?.getAttribute('data-test-connection-state') === 'CONNECTED',
    idle: app?.getAttribute('data-test-script-state') === 'notRunning',
    statusHidden: !shown(document.querySelector('[data-testid="stStatusWidget"]')),
    // Streamlit draws a grey skeleton where an element's code is still loading (lazy chunks): not drawn yet.
    noSkeleton: ![...document.querySelectorAll('[data-testid="stSkeleton"]')].some(shown),
  };
  if (kind === 'map') state.mapReady = deepAll(mapReady).length > 0;
  else if (kind === 'browse') state.imageLoaded = [...document.querySelectorAll('[data-testid="stImage"] img')]
    .some((img) => img.complete && img.naturalWidth > 0);
  else state.title = [...document.querySelectorAll('h1')].some((h) => shown(h) && h.innerText.trim() === title);
  state.ready = Object.values(state).every(Boolean);
  return state;
}"""

# Installed before the mouse moves: resolves with the ms from the pointer's arrival over the map to its hover card
# showing a loaded thumbnail (both on the page's clock).
_HOVER_WATCH_JS = """(root, [cardSelector, timeoutMs]) => {
  root.__benchHover = new Promise((resolve) => {
    const card = root.querySelector(cardSelector);
    const shownBefore = card && !card.hidden ? card.querySelector('img')?.src : null;  // a card that did not hide
    let arrived = null;
    const onMove = (event) => { arrived = arrived ?? event.timeStamp; };
    root.addEventListener('pointermove', onMove, {capture: true});
    const done = (outcome) => { root.removeEventListener('pointermove', onMove, {capture: true}); resolve(outcome); };
    const started = performance.now();
    const check = () => {
      const img = card?.querySelector('img');
      if (arrived !== null && !card.hidden && img && img.getAttribute('src') && img.src !== shownBefore
          && img.complete && img.naturalWidth > 0) return done({ms: performance.now() - arrived, row: img.dataset.row});
      if (performance.now() - started > timeoutMs) return done({ms: null, arrived: arrived !== null});
      requestAnimationFrame(check);
    };
    check();
  });
}"""

_NEXT_FRAME_JS = """(root) => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(
  () => resolve(root.getAttribute('data-frame-ms')))))"""


@dataclass
class Cell:
    """One page at one size: seconds to ready, megabytes the browser received, its JS heap; or why it failed."""

    page: str
    ready_s: float | None = None
    mb: float | None = None
    heap_mb: float | None = None
    peak_rss_mb: float | None = None  # the server's, while this page loaded
    error: str | None = None


@dataclass
class SizeResult:
    """Everything measured at one run size."""

    rows: int
    run: str = ""
    write_s: float | None = None  # None: an existing run was reused (--keep)
    server_start_s: float | None = None
    peak_rss_mb: float | None = None  # the server's, over every page at this size
    cells: list[Cell] = field(default_factory=list)
    hover_ms: list[float] = field(default_factory=list)
    frame_ms: list[float] = field(default_factory=list)
    screenshot: str | None = None
    problems: list[str] = field(default_factory=list)  # what could not be measured at this size, and why


# ---- the command line ------------------------------------------------------------------------------------------------

def row_count(text: str) -> int:
    """A row count as typed: 100000, 100_000, 100,000, 100k or 1M; ArgumentTypeError otherwise."""
    cleaned = text.strip().replace("_", "").replace(",", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(cleaned[-1:].lower(), 1)
    digits = cleaned[:-1] if scale > 1 else cleaned
    if not digits.isdigit() or int(digits) * scale < 1:
        raise argparse.ArgumentTypeError(f"not a positive number of rows: {text!r} (e.g. 100000, 100k or 1M)")
    return int(digits) * scale


def positive(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a whole number of at least 1: {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m doggos.bench.map_scale", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=row_count, action="append", metavar="N",
                        help="a run size to measure (repeatable; 100k and 1M work too; default 100000)")
    parser.add_argument("--keep", metavar="DIR", help="keep the synthetic runs here and reuse them on the next call "
                                                      "(default: a temporary folder, deleted after each size)")
    parser.add_argument("--dim", type=positive, default=512, help="embedding dimensions (default 512)")
    parser.add_argument("--labels", type=positive, default=120, help="labels of the synthetic runs (default 120)")
    parser.add_argument("--out", default="bench-data/map-scale",
                        help="for the JSON, the Map's screenshots and the server logs (default bench-data/map-scale)")
    parser.add_argument("--timeout", type=positive, default=120,
                        help="seconds a page may take to be ready (default 120)")
    parser.add_argument("--hovers", type=positive, default=5, help="hovers timed on the Map (default 5; the median)")
    parser.add_argument("--wheel-steps", type=positive, default=10, help="wheel steps over the Map (default 10)")
    parser.add_argument("--pages", nargs="+", choices=list(PAGES), default=list(PAGES),
                        help="pages to measure, in this order (default: all four)")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    args.rows = args.rows or [100_000]
    return args


# ---- what is measured ------------------------------------------------------------------------------------------------

def frame_bytes(payload: str, opcode: int) -> int:
    """Bytes a WebSocket frame carried: CDP hands binary frames (opcode 2) over as base64, text frames as text."""
    if opcode == 2:
        return len(base64.b64decode(payload))
    return len(payload.encode("utf-8"))


class ByteCounter:
    """Bytes the browser received for one page: HTTP responses as sent (encodedDataLength) and WebSocket frames."""

    def __init__(self, cdp):
        self.total = 0
        cdp.on("Network.loadingFinished", self._loaded)
        cdp.on("Network.webSocketFrameReceived", self._frame)

    def _loaded(self, event: dict) -> None:
        self.total += int(event.get("encodedDataLength") or 0)

    def _frame(self, event: dict) -> None:
        response = event.get("response") or {}
        self.total += frame_bytes(response.get("payloadData", ""), int(response.get("opcode", 1)))


class PeakRss:
    """The peak resident memory of one process, sampled in a thread; `window()` starts a second, shorter peak."""

    def __init__(self, pid: int):
        import psutil

        self.process = psutil.Process(pid)
        self.peak = self.window_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        import psutil

        while not self._stop.wait(RSS_EVERY_S):
            try:
                rss = self.process.memory_info().rss
            except psutil.Error:  # the server exited: its last sample stands
                return
            self.peak, self.window_peak = max(self.peak, rss), max(self.window_peak, rss)

    def window(self) -> None:
        self.window_peak = 0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# ---- the run and the server ------------------------------------------------------------------------------------------

def synthetic_runs(args, rows: int, scratch: Path) -> tuple[Path, Path, float | None]:
    """(runs folder, run folder, seconds spent writing it: None when an earlier one from --keep was reused)."""
    from doggos.base.records import read_manifest
    from doggos.base.rundir import RunDir
    from doggos.bench import synthetic

    home = (Path(args.keep) if args.keep else scratch) / f"rows-{rows}-dim-{args.dim}-labels-{args.labels}"
    runs = home / "runs"
    existing = sorted(p for p in runs.glob("*") if p.is_dir()) if runs.is_dir() else []
    if args.keep and len(existing) == 1:
        manifest = read_manifest(RunDir(existing[0]))
        if manifest is not None and manifest.rows == rows and manifest.embedding_dim == args.dim:
            return runs, existing[0], None
    shutil.rmtree(home, ignore_errors=True)  # half-written by an interrupted call, or other settings: start over
    runs.mkdir(parents=True)
    started = time.monotonic()
    run = synthetic.write_run(runs, rows, labels=args.labels, dim=args.dim)
    return runs, run, time.monotonic() - started


# ---- one page in the browser -----------------------------------------------------------------------------------------

def measure_page(browser, url: str, kind: str, timeout_s: float, rss: PeakRss, result: SizeResult, args,
                 out: Path) -> Cell:
    """Open one page in a fresh context (no cache, a new session); what a failure stops is recorded, never raised."""
    from playwright.sync_api import Error

    cell = Cell(PAGES[kind])
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send("Performance.enable")
        received = ByteCounter(cdp)
        rss.window()
        cell.ready_s, cell.error = open_until_ready(page, f"{url}/{kind}", kind, timeout_s)
        cell.peak_rss_mb = rss.window_peak / MB
        metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
        cell.heap_mb = metrics.get("JSHeapUsedSize", 0) / MB
        cell.mb = received.total / MB  # read after a CDP round trip: every event before it has been counted
        cell.error = cell.error or _shown_exception(page)
        if kind == "map":
            result.screenshot = _screenshot(page, out / f"map-{result.rows}.png")
            if cell.error is None:
                _interact_with_map(page, result, args)
    except Error as error:  # the browser or page went away: this cell fails, the bench goes on
        cell.error = cell.error or f"browser error: {str(error).splitlines()[0][:300]}"
    finally:
        context.close()
    return cell


def open_until_ready(page, url: str, kind: str, timeout_s: float) -> tuple[float | None, str | None]:
    """(seconds from navigating to ready, None) or (None, what was still missing at the timeout)."""
    from playwright.sync_api import Error

    started = time.perf_counter()
    try:
        page.goto(url, wait_until="commit", timeout=timeout_s * 1000)
        left_ms = max(1.0, timeout_s - (time.perf_counter() - started)) * 1000
        page.wait_for_function(f"(arg) => ({_READY_JS})(arg).ready", arg=[kind, PAGES[kind], MAP_READY],
                               polling=POLL_MS, timeout=left_ms)
    except Error as error:
        return None, _not_ready(page, kind, timeout_s, error)
    return time.perf_counter() - started, None


def _shown_exception(page) -> str | None:
    boxes = page.get_by_test_id("stException")
    if not boxes.count():
        return None
    return "Streamlit shows an exception: " + " | ".join(boxes.all_inner_texts())[:300]


def _not_ready(page, kind: str, timeout_s: float, error: Exception) -> str:
    """Which part of `ready` was still missing when the wait ended."""
    from playwright.sync_api import Error

    try:
        state = page.evaluate(_READY_JS, [kind, PAGES[kind], MAP_READY])
    except Error:
        return f"not ready: {str(error).splitlines()[0][:200]}"
    missing = [name for name, value in state.items() if name != "ready" and not value]
    what = {"mapReady": MAP_READY, "imageLoaded": "a loaded [data-testid=stImage] img", "title": f"h1 {PAGES[kind]!r}",
            "connected": "connection CONNECTED", "idle": "script idle", "statusHidden": "status widget hidden",
            "noSkeleton": "no stSkeleton (elements still loading)"}
    return f"not ready in {timeout_s:.0f} s: missing " + ", ".join(what.get(name, name) for name in missing)


def _screenshot(page, path: Path) -> str | None:
    from playwright.sync_api import Error

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=path)
    except Error:
        return None
    return str(path)


def _interact_with_map(page, result: SizeResult, args) -> None:
    """Hover latency (median of args.hovers random rows) and the frame time of args.wheel_steps wheel steps."""
    from playwright.sync_api import Error

    root = page.locator(MAP_ROOT).first
    try:
        result.hover_ms = hover_times(page, root, result.rows, args.hovers)
    except Error as error:
        result.problems.append(f"hover: {str(error).splitlines()[0][:300]}")
    try:
        result.frame_ms = wheel_frame_times(page, root, args.wheel_steps)
    except Error as error:
        result.problems.append(f"pan/zoom: {str(error).splitlines()[0][:300]}")
    if args.hovers and not result.hover_ms:
        result.problems.append("hover: no hover card showed a loaded thumbnail")


def hover_times(page, root, rows: int, hovers: int, seed: int = 0) -> list[float]:
    """ms from the pointer arriving over a random row's point to its card's loaded thumbnail, per hover that worked."""
    from playwright.sync_api import TimeoutError

    box = root.locator(CANVAS).bounding_box()
    if box is None:  # not on screen: nothing to hover
        return []
    rng = np.random.default_rng(seed)
    times, tries = [], 0
    while len(times) < hovers and tries < hovers * 4:
        tries += 1
        row = int(rng.integers(rows))
        point = root.evaluate("(el, row) => el.doggosMap.screenOf(row)", row)
        if not (box["x"] < point["x"] < box["x"] + box["width"] and box["y"] < point["y"] < box["y"] + box["height"]):
            continue  # outside the drawn area (zoomed, or the page too small): another row
        page.mouse.move(1, 1)  # away, so the card hides and the next one is a new card
        try:
            root.locator(CARD).wait_for(state="hidden", timeout=HOVER_AWAY_MS)
        except TimeoutError:  # a card that stays: the watcher then waits for a different thumbnail
            pass
        root.evaluate(_HOVER_WATCH_JS, [CARD, HOVER_TIMEOUT_MS])
        page.mouse.move(point["x"], point["y"])  # one step: the first pointermove over the map is at the point
        outcome = root.evaluate("(el) => el.__benchHover")
        if outcome.get("ms") is not None:
            times.append(float(outcome["ms"]))
    return times


def wheel_frame_times(page, root, steps: int) -> list[float]:
    """The map's own draw time (data-frame-ms) after each wheel step over its centre: half in, then half out."""
    box = root.locator(CANVAS).bounding_box()
    if box is None:
        return []
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    times = []
    for step in range(steps):
        page.mouse.wheel(0, -WHEEL_DELTA if step < (steps + 1) // 2 else WHEEL_DELTA)
        value = root.evaluate(_NEXT_FRAME_JS)
        if value is not None:
            times.append(float(value))
    return times


# ---- one size, every size --------------------------------------------------------------------------------------------

def measure_size(browser, args, rows: int, out: Path) -> SizeResult:
    result = SizeResult(rows)
    scratch = Path(tempfile.mkdtemp(prefix="doggos-map-scale-"))
    try:
        try:
            runs, run, result.write_s = synthetic_runs(args, rows, scratch)
        except (OSError, ValueError) as error:
            result.problems.append(f"synthetic run: {error}")
            return result
        result.run = str(run)
        started = time.monotonic()
        try:
            server = app_server.serve(runs, out / f"server-{rows}.log", START_TIMEOUT_S)
            url = server.url
        except RuntimeError as error:
            result.problems.append(str(error))
            return result
        result.server_start_s = time.monotonic() - started
        rss = PeakRss(server.process.pid)
        try:
            result.cells = [measure_page(browser, url, kind, args.timeout, rss, result, args, out)
                            for kind in args.pages]
        finally:
            rss.stop()
            result.peak_rss_mb = rss.peak / MB
            server.stop()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # a million rows are ~3 GB: never left behind without --keep
    return result


def run_bench(args) -> list[SizeResult]:
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_FLAGS)
        try:
            for rows in args.rows:
                results.append(measure_size(browser, args, rows, out))
                write_json(out / "map-scale.json", args, results)  # each size as it ends: a crash keeps the others
        finally:
            browser.close()
    return results


def write_json(path: Path, args, results: list[SizeResult]) -> None:
    settings = {"dim": args.dim, "labels": args.labels, "timeout_s": args.timeout, "hovers": args.hovers,
                "wheel_steps": args.wheel_steps, "map_ready": MAP_READY, "cpus": os.cpu_count(),
                "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path.write_text(json.dumps({"settings": settings, "results": [asdict(r) for r in results]}, indent=2) + "\n",
                    encoding="utf-8")


# ---- the tables ------------------------------------------------------------------------------------------------------

def _number(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _spread(values: list[float]) -> str:
    return "–" if not values else f"{statistics.median(values):,.1f} / {max(values):,.1f}"


def format_table(results: list[SizeResult]) -> str:
    """Per size and page: ready s, MB received, JS heap MB (a failed cell says so); then per size: writing the run,
    the server's peak RSS, hover and frame times; then every failure's reason."""
    lines = ["| rows | page | ready (s) | received (MB) | JS heap (MB) | server peak while loading (MB) |",
             "|---:|---|---:|---:|---:|---:|"]
    for result in results:
        for cell in result.cells:
            ready = "FAILED" if cell.error else _number(cell.ready_s, 2)
            lines.append(f"| {result.rows:,} | {cell.page} | {ready} | {_number(cell.mb)} | {_number(cell.heap_mb)} "
                         f"| {_number(cell.peak_rss_mb, 0)} |")
        if not result.cells:
            lines.append(f"| {result.rows:,} | (none) | FAILED | – | – | – |")
    lines += ["", "| rows | write run (s) | server start (s) | server peak RSS (MB) | hover ms (median, n) "
                  "| frame ms (median / max) |", "|---:|---:|---:|---:|---:|---:|"]
    for result in results:
        written = "reused" if result.write_s is None and result.run else _number(result.write_s)
        hover = f"{statistics.median(result.hover_ms):,.0f} (n={len(result.hover_ms)})" if result.hover_ms else "–"
        lines.append(f"| {result.rows:,} | {written} | {_number(result.server_start_s)} "
                     f"| {_number(result.peak_rss_mb, 0)} | {hover} | {_spread(result.frame_ms)} |")
    failures = [f"- {r.rows:,} {c.page}: {c.error}" for r in results for c in r.cells if c.error]
    failures += [f"- {r.rows:,}: {problem}" for r in results for problem in r.problems]
    return "\n".join(lines + ([""] + failures if failures else []))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = run_bench(args)
    print(format_table(results))
    print(f"\n{os.cpu_count()} CPUs; JSON, screenshots and server logs in {args.out}")
    return 0 if all(r.cells and not any(c.error for c in r.cells) and not r.problems for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
