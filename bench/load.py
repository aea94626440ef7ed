"""`python bench/load.py --sessions N`: N light sessions open Map, Browse, Search and Quality on one server.

A session speaks Streamlit's own websocket protocol (`streamlit.proto`): no browser, so the server's CPU is what is
measured. It lives here, not in doggos.bench, because nothing in doggos/ may import Streamlit (tests/test_layout.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/load.py`: doggos is found from the project folder
    sys.path.insert(0, str(ROOT))

from doggos.bench import app_server  # noqa: E402
from doggos.bench.map_scale import positive  # noqa: E402

PAGES = ("map", "browse", "search", "quality")  # url paths, in the order each session opens them
READY_GOAL_S = 5.0  # issue 24: p95 page ready with 30 sessions
CPU_GOAL_S = 0.15  # issue 24: server CPU-seconds per page view
RSS_GOAL_MB = 2048  # issue 24: the server's peak RSS
PAGE_TIMEOUT_S = 120.0  # a page not ready by then counts as failed
SAMPLE_EVERY_S = 0.1  # the server's CPU and memory are sampled this often
FETCHES_PER_SESSION = 6  # HTTP requests a session makes at once: a browser's per-host limit
RUN_ID = "20260101-000000-synthetic-{rows}"  # the synthetic run measured on, reused when it exists
MB = 1024 * 1024
DEFINITIONS = """\
- a session is one light client: Streamlit's own websocket protocol (`/_stcore/stream`, `streamlit.proto` BackMsg and
  ForwardMsg), no browser. It opens the app at `/map` (a first request by URL), then Browse, Search and Quality as
  the sidebar's links do (a rerun BackMsg with the page's script hash), one after the other; sessions start evenly
  spread over the spread seconds and stay connected until every session is done.
- ready: from the rerun's request to the page script's last `script_finished` (after any rerun it asked for), plus
  the HTTP fetches the page's elements name, as a browser makes them: every `st.image` media URL and the Map
  component's point buffer. Not the browser's drawing (see the map-scale benchmark for that).
- server CPU: user + system seconds of the `streamlit run` process and its children (psutil), over the measured
  sessions; per page view: divided by sessions × 4. RSS: the server tree's peak, sampled every {every:.1f} s.
- warm-up: one session opens the four pages before the measured ones (not counted): the first reader of a run pays
  its cold caches (reading the Parquet, the map, the quality results) once per server, whoever it is."""


@dataclass
class PageView:
    """One page opened by one session: when it was ready, what went wrong."""

    session: int
    page: str
    ready_s: float | None = None
    script_s: float | None = None  # to the last script_finished, before the fetches
    fetched: int = 0  # media and points URLs fetched
    fetched_kb: float = 0.0
    exceptions: list[str] = field(default_factory=list)  # st.exception elements the page drew
    errors: list[str] = field(default_factory=list)  # st.error alerts, fetch failures, timeouts


@dataclass
class Sampler:
    """The server tree's CPU seconds and peak RSS, sampled in a thread."""

    pid: int
    peak_rss_mb: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def cpu_s(self) -> float:
        """User + system CPU seconds of the server and its live children so far."""
        import psutil

        total = 0.0
        for process in self._tree():
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
        return total

    def rss_mb(self) -> float:
        import psutil

        total = 0
        for process in self._tree():
            try:
                total += process.memory_info().rss
            except psutil.Error:
                pass
        return total / MB

    def _tree(self) -> list:
        import psutil

        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.wait(SAMPLE_EVERY_S):
                self.peak_rss_mb = max(self.peak_rss_mb, self.rss_mb())

        self.peak_rss_mb = self.rss_mb()
        self._thread = threading.Thread(target=loop, name="doggos-load-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_rss_mb = max(self.peak_rss_mb, self.rss_mb())


class Session:
    """One browser session, spoken over the websocket: page requests in, ForwardMsgs out."""

    def __init__(self, number: int, url: str):
        self.number = number
        self.url = url
        self.pages: dict[str, str] = {}  # url path → page script hash, from the navigation message
        self._socket = None

    async def __aenter__(self) -> Session:
        from websockets.asyncio.client import connect

        stream = self.url.replace("http://", "ws://", 1) + "/_stcore/stream"
        # Streamlit reads the subprotocol header's entries as (protocol, XSRF token, session to resume).
        self._socket = await connect(stream, subprotocols=["streamlit"], max_size=None, open_timeout=PAGE_TIMEOUT_S)
        return self

    async def __aexit__(self, *exc) -> None:
        await self._socket.close()

    async def open(self, page: str) -> PageView:
        """Open `page` (a url path): the first one by URL, the next ones as the sidebar's links do."""
        from streamlit.proto.BackMsg_pb2 import BackMsg

        view = PageView(self.number, page)
        message = BackMsg()
        state = message.rerun_script
        state.query_string = ""
        if page in self.pages:
            state.page_script_hash = self.pages[page]
        else:
            state.page_name = page
        started = time.monotonic()
        await self._socket.send(message.SerializeToString())
        try:
            urls = await asyncio.wait_for(self._until_finished(view), PAGE_TIMEOUT_S)
        except TimeoutError:
            view.errors.append(f"not finished within {PAGE_TIMEOUT_S:.0f} s")
            return view
        view.script_s = time.monotonic() - started
        await self._fetch(view, urls)
        view.ready_s = time.monotonic() - started
        return view

    async def _until_finished(self, view: PageView) -> list[str]:
        """Read ForwardMsgs up to the script's successful end; the URLs a browser would fetch for what it drew."""
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        urls: list[str] = []
        while True:
            message = ForwardMsg()
            message.ParseFromString(await self._socket.recv())
            kind = message.WhichOneof("type")
            if kind == "navigation":
                self.pages = {page.url_pathname: page.page_script_hash for page in message.navigation.app_pages}
            elif kind == "delta" and message.delta.WhichOneof("type") == "new_element":
                _read_element(message.delta.new_element, view, urls)
            elif kind == "page_not_found":
                view.errors.append(f"page not found: {message.page_not_found.page_name}")
            elif kind == "script_finished":
                if message.script_finished == ForwardMsg.FINISHED_SUCCESSFULLY:
                    return urls
                if message.script_finished == ForwardMsg.FINISHED_WITH_COMPILE_ERROR:
                    view.errors.append("the script failed to compile")
                    return urls
                urls.clear()  # finished early for a rerun (st.switch_page, st.rerun): the next run draws anew

    async def _fetch(self, view: PageView, urls: list[str]) -> None:
        gate = asyncio.Semaphore(FETCHES_PER_SESSION)

        async def one(url: str) -> None:
            async with gate:
                try:
                    size = await asyncio.to_thread(_get, self.url + url)
                except OSError as error:
                    view.errors.append(f"GET {url}: {error}")
                    return
                view.fetched += 1
                view.fetched_kb += size / 1024

        await asyncio.gather(*(one(url) for url in dict.fromkeys(urls)))


def _read_element(element, view: PageView, urls: list[str]) -> None:
    kind = element.WhichOneof("type")
    if kind == "exception":
        view.exceptions.append(f"{element.exception.type}: {element.exception.message}"[:300])
    elif kind == "alert" and element.alert.format == element.alert.ERROR:
        view.errors.append(element.alert.body[:300])
    elif kind == "imgs":
        urls.extend(image.url for image in element.imgs.imgs if image.url.startswith("/"))
    elif kind == "bidi_component":
        component = element.bidi_component
        data = component.json or (component.mixed.json if component.HasField("mixed") else "")
        urls.extend(_points_urls(json.loads(data)) if data else [])


def _points_urls(value) -> list[str]:
    """The Map component's point buffer URL, wherever its data nests it."""
    if isinstance(value, dict):
        found = [value["points_url"]] if isinstance(value.get("points_url"), str) else []
        return found + [url for item in value.values() for url in _points_urls(item)]
    if isinstance(value, list):
        return [url for item in value for url in _points_urls(item)]
    return []


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=PAGE_TIMEOUT_S) as response:
        return len(response.read())


async def _session(number: int, url: str, delay_s: float, opened, done: asyncio.Event) -> list[PageView]:
    """One session's page views; `opened()` once they are (or failed), then connected until `done`, as a tab stays."""
    from websockets.exceptions import WebSocketException

    await asyncio.sleep(delay_s)
    views: list[PageView] = []
    try:
        async with Session(number, url) as session:
            for page in PAGES:
                views.append(await session.open(page))
                if views[-1].ready_s is None:  # its messages may still arrive: the next page could not be told apart
                    views += [PageView(number, later, errors=[f"not opened: {page} failed"])
                              for later in PAGES[len(views):]]
                    break
            opened, tell = None, opened
            tell()
            await done.wait()
    except (OSError, WebSocketException) as error:  # refused or dropped: the pages it did not open count as failed
        views += [PageView(number, page, errors=[f"connection: {error}"]) for page in PAGES[len(views):]]
    finally:
        if opened is not None:
            opened()
    return views


async def drive(url: str, sessions: int, spread_s: float) -> list[PageView]:
    """Open the four pages in `sessions` sessions started evenly over `spread_s` seconds; every page view."""
    done = asyncio.Event()
    count = [0]

    def opened() -> None:
        count[0] += 1
        if count[0] == sessions:
            done.set()

    step = spread_s / max(sessions - 1, 1)
    per_session = await asyncio.gather(*(_session(n, url, n * step, opened, done) for n in range(sessions)))
    return [view for views in per_session for view in views]


def percentile(values: list[float], share: float) -> float:
    """The `share` quantile by the nearest rank (p95 of 120 page views: the 114th fastest)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(-(-share * len(ordered) // 1)) - 1))]


def prepare_runs(workdir: Path, rows: int) -> Path:
    """The runs folder holding a synthetic finished run of `rows` rows (map and quality ready), written if missing."""
    from doggos.bench import synthetic

    runs = workdir / "load-runs"
    if not (runs / RUN_ID.format(rows=rows) / "manifest.json").exists():
        synthetic.write_run(runs, rows, run_id=RUN_ID.format(rows=rows))
    return runs


@dataclass
class LoadResult:
    """Everything one load benchmark measured."""

    sessions: int
    spread_s: float
    rows: int
    cpus: int
    server_start_s: float
    warmup: list[PageView]
    views: list[PageView]
    cpu_s: float  # the server tree's, over the measured sessions
    client_cpu_s: float  # this process's (the light clients'), over the same stretch
    wall_s: float
    rss_before_mb: float
    peak_rss_mb: float
    load_average: tuple[float, float]  # 1-minute load before and after the measured sessions

    def ready(self, page: str | None = None) -> list[float]:
        return [v.ready_s for v in self.views if v.ready_s is not None and page in (None, v.page)]

    def cpu_per_view(self) -> float:
        return self.cpu_s / max(len(self.views), 1)

    def exceptions(self) -> list[str]:
        return [f"{v.page} (session {v.session}): {e}" for v in self.warmup + self.views for e in v.exceptions]

    def errors(self) -> list[str]:
        return [f"{v.page} (session {v.session}): {e}" for v in self.warmup + self.views for e in v.errors]

    def failed(self) -> int:
        """Page views that never became ready."""
        return sum(v.ready_s is None for v in self.views)

    def figures(self) -> dict:
        """The headline figures, as written to the JSON."""
        ready = self.ready()
        return {"page_views": len(self.views), "ready_views": len(ready),
                "ready_p50_s": statistics.median(ready) if ready else None,
                "ready_p95_s": percentile(ready, 0.95) if ready else None,
                "cpu_s_per_view": self.cpu_per_view(), "peak_rss_mb": self.peak_rss_mb,
                "exceptions": len(self.exceptions()), "errors": len(self.errors())}


def measure(server: app_server.AppServer, sessions: int, spread_s: float, warmup: bool = True) -> dict:
    """The warm-up session (unless not `warmup`), then `sessions` sessions measured: (warm-up views, LoadResult
    fields)."""
    warm = asyncio.run(drive(server.url, 1, 0.0)) if warmup else []
    sampler = Sampler(server.process.pid)
    sampler.start()
    load_before = os.getloadavg()[0]
    cpu_before, client_before, started = sampler.cpu_s(), time.process_time(), time.monotonic()
    rss_before = sampler.rss_mb()
    views = asyncio.run(drive(server.url, sessions, spread_s))
    cpu_s, client_s, wall_s = sampler.cpu_s() - cpu_before, time.process_time() - client_before, \
        time.monotonic() - started
    sampler.stop()
    return {"warmup": warm, "views": views, "cpu_s": cpu_s, "client_cpu_s": client_s, "wall_s": wall_s,
            "rss_before_mb": rss_before, "peak_rss_mb": sampler.peak_rss_mb,
            "load_average": (load_before, os.getloadavg()[0])}


def run_load(runs: Path, rows: int, sessions: int, spread_s: float, log_path: Path, warmup: bool = True) -> LoadResult:
    """Serve the app over `runs` and measure `sessions` sessions against it."""
    started = time.monotonic()
    server = app_server.serve(runs, log_path)
    try:
        server_start_s = time.monotonic() - started
        measured = measure(server, sessions, spread_s, warmup)
    finally:
        server.stop()
    return LoadResult(sessions=sessions, spread_s=spread_s, rows=rows, cpus=os.cpu_count() or 1,
                      server_start_s=server_start_s, **measured)


def format_report(result: LoadResult) -> str:
    lines = [f"{result.sessions} sessions over {result.spread_s:.0f} s, each opening {', '.join(PAGES)} "
             f"({len(result.views)} page views) on a {result.rows:,}-row run", "",
             "| page | views | ready p50 (s) | ready p95 (s) | script p50 (s) | fetched per view (KB) |",
             "|---|---:|---:|---:|---:|---:|"]
    for page in PAGES:
        views = [v for v in result.views if v.page == page]
        ready = result.ready(page)
        script = [v.script_s for v in views if v.script_s is not None]
        kb = statistics.mean(v.fetched_kb for v in views) if views else 0.0
        lines.append(f"| {page} | {len(views)} | {_s(statistics.median(ready) if ready else None)} | "
                     f"{_s(percentile(ready, 0.95) if ready else None)} | "
                     f"{_s(statistics.median(script) if script else None)} | {kb:,.0f} |")
    figures = result.figures()
    warm = [v.ready_s for v in result.warmup if v.ready_s is not None]
    lines += ["", "| figure | value |", "|---|---:|",
              f"| page views ready / made | {figures['ready_views']} / {figures['page_views']} |",
              f"| ready p50 / p95 (s) | {_s(figures['ready_p50_s'])} / {_s(figures['ready_p95_s'])} |",
              f"| server CPU (s), all measured views | {result.cpu_s:.2f} |",
              f"| server CPU per page view (s) | {result.cpu_per_view():.3f} |",
              f"| light clients' CPU (s), this process | {result.client_cpu_s:.2f} |",
              f"| wall time of the measured sessions (s) | {result.wall_s:.1f} |",
              f"| server RSS before → peak (MB) | {result.rss_before_mb:,.0f} → {result.peak_rss_mb:,.0f} |",
              f"| warm-up session: four pages (s) | {sum(warm):.1f} |" if result.warmup else "| warm-up | none |",
              f"| server start (s) | {result.server_start_s:.1f} |",
              f"| exceptions drawn | {figures['exceptions']} |"]
    ready95 = figures["ready_p95_s"]
    lines += ["", "| goal | measured | met |", "|---|---:|---|",
              f"| p95 ready ≤ {READY_GOAL_S:.0f} s | {_s(ready95)} | "
              f"{_met(ready95 is not None and ready95 <= READY_GOAL_S)} |",
              f"| server CPU per page view ≤ {CPU_GOAL_S} s | {result.cpu_per_view():.3f} | "
              f"{_met(result.cpu_per_view() <= CPU_GOAL_S)} |",
              f"| server peak RSS ≤ {RSS_GOAL_MB:,} MB | {result.peak_rss_mb:,.0f} | "
              f"{_met(result.peak_rss_mb <= RSS_GOAL_MB)} |",
              f"| no exception, every page ready | {figures['exceptions']} exceptions, {result.failed()} not ready | "
              f"{_met(not figures['exceptions'] and not result.failed())} |"]
    problems = result.exceptions() + result.errors()
    if problems:
        lines += ["", "Problems:", *(f"- {problem}" for problem in problems[:20])]
    load = result.load_average
    lines += ["", DEFINITIONS.format(every=SAMPLE_EVERY_S), "",
              f"{result.cpus} CPUs, load average {load[0]:.1f} → {load[1]:.1f}"]
    return "\n".join(lines)


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _met(ok: bool) -> str:
    return "yes" if ok else "NO"


def write_json(path: Path, result: LoadResult) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**asdict(result), "figures": result.figures()}, indent=2) + "\n", encoding="utf-8")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python bench/load.py", description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=positive, default=30, help="sessions (default 30)")
    parser.add_argument("--spread", type=float, default=15.0,
                        help="seconds over which the sessions start, evenly (default 15)")
    parser.add_argument("--rows", type=positive, default=2880,
                        help="rows of the synthetic run measured on (default 2880)")
    parser.add_argument("--workdir", default="bench-data",
                        help="where the runs folder (load-runs) and the server's log go (default bench-data)")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="measure from a cold server: no warm-up session first")
    parser.add_argument("--json", help="also write the results here")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit 0 once measured, goals met or not (speed is a figure, not a test); 1 when a page failed or drew an
    exception: a bug."""
    args = build_parser().parse_args(argv)
    if args.spread < 0:
        build_parser().error(f"argument --spread: not a number of seconds of at least 0: {args.spread}")
    workdir = Path(args.workdir)
    runs = prepare_runs(workdir, args.rows)
    print(f"{args.sessions} sessions over {args.spread:.0f} s on {runs} ...", flush=True)
    result = run_load(runs, args.rows, args.sessions, args.spread, workdir / "load-server.log", args.warmup)
    print(format_report(result))
    if args.json:
        write_json(Path(args.json), result)
    return 1 if result.exceptions() or result.failed() else 0


if __name__ == "__main__":
    sys.exit(main())
