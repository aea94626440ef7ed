"""The load benchmark (bench/load.py): light websocket sessions against the app served for real, and what its
client reads from Streamlit's messages."""

from __future__ import annotations

import json

import pytest
from streamlit.proto.Element_pb2 import Element

from bench import load


@pytest.mark.slow
def test_five_sessions_open_every_page_without_an_exception(tmp_path, capsys):
    # ~15 s on 2 cores: the server's start, a 300-row synthetic run, a warm-up session and 5 sessions of 4 pages.
    code = load.main(["--sessions", "5", "--spread", "1", "--rows", "300", "--workdir", str(tmp_path),
                      "--json", str(tmp_path / "load.json")])
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads((tmp_path / "load.json").read_text(encoding="utf-8"))
    figures = report["figures"]
    assert figures["page_views"] == figures["ready_views"] == 5 * len(load.PAGES)
    assert figures["exceptions"] == 0 and figures["errors"] == 0, printed
    assert figures["cpu_s_per_view"] > 0 and figures["peak_rss_mb"] > 0
    assert 0 < figures["ready_p50_s"] <= figures["ready_p95_s"]
    assert sorted((v["session"], v["page"]) for v in report["views"]) == sorted(
        (n, page) for n in range(5) for page in load.PAGES)
    views = {v["page"]: v for v in report["views"] if v["session"] == 0}
    assert views["map"]["fetched"] >= 1  # the Map component's point buffer, fetched as its browser side does
    assert views["browse"]["fetched"] >= 1  # the thumbnails' media URLs
    for row in ("| p95 ready ≤ 5 s |", "| server CPU per page view ≤ 0.15 s |", "| server peak RSS ≤ 2,048 MB |"):
        assert row in printed


def test_an_exception_element_is_counted_and_its_urls_are_not():
    view = load.PageView(0, "map")
    urls: list[str] = []
    element = Element()
    element.exception.type = "KeyError"
    element.exception.message = "'row'"
    load._read_element(element, view, urls)
    images = Element()
    images.imgs.imgs.add().url = "/media/abc.jpg"
    images.imgs.imgs.add().url = "data:image/png;base64,AAAA"  # inline: nothing to fetch
    load._read_element(images, view, urls)
    assert view.exceptions == ["KeyError: 'row'"] and urls == ["/media/abc.jpg"]


def test_the_map_components_points_url_is_found_where_it_nests():
    data = {"data": {"points_url": "/doggos/runs/r/maps/m/points.bin?v=1", "labels": ["a"]}, "other": [{"x": 1}]}
    assert load._points_urls(data) == ["/doggos/runs/r/maps/m/points.bin?v=1"]
    assert load._points_urls({"points_url": None}) == []


def test_percentile_is_the_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert load.percentile(values, 0.95) == 95.0
    assert load.percentile(values, 0.5) == 50.0
    assert load.percentile([3.0], 0.95) == 3.0


@pytest.mark.parametrize("bad", [["--sessions", "0"], ["--rows", "x"]])
def test_bad_options_are_refused(bad, capsys):
    with pytest.raises(SystemExit):
        load.build_parser().parse_args(bad)
    assert f"error: argument {bad[0]}: not a" in capsys.readouterr().err
