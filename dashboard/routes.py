"""The app's own web routes, served by `streamlit run app.py` beside its pages (app.py hands them to `st.App`).

The Map's browser side fetches from these without a rerun: a run's point buffer once per map and colouring, then the
thumbnails and facts of the points it hovers or shows. A URL carries the run's version (`?v=`) and, for points and
facts, the version of its label decisions (`&labels=`), so the browser may keep each answer: a republished run or a
new decision gets new URLs. The points leave excluded images out unless the URL says `&excluded=shown`. Handlers are
plain functions: Starlette runs them in its thread pool, off the event loop that carries every session's websocket.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from doggos.explore import map_serving
from doggos.runs.manager import default_root

PREFIX = "/doggos/runs"
# The URL changes with the run's version, so an answer may be kept for good (a week: long enough for any workshop).
CACHED = {"Cache-Control": "private, max-age=604800, immutable"}
SHOW_EXCLUDED = "shown"  # the points URL's `excluded=` value that keeps the images a label decision excluded


def _run(request: Request):
    return map_serving.finished_run(default_root(), request.path_params["run_id"])


def _not_found(error: Exception) -> Response:
    return Response(str(error), status_code=404, media_type="text/plain")


def thumbnail(request: Request) -> Response:
    try:
        data = map_serving.thumbnail(_run(request), request.path_params["row"])
    except map_serving.NotServed as error:
        return _not_found(error)
    return Response(data, media_type="image/jpeg", headers=CACHED)


def points(request: Request) -> Response:
    try:
        data = map_serving.points_buffer(_run(request), request.path_params["map_name"],
                                         request.query_params.get("quality") or None,
                                         include_excluded=request.query_params.get("excluded") == SHOW_EXCLUDED)
    except map_serving.NotServed as error:
        return _not_found(error)
    return Response(data, media_type="application/octet-stream", headers=CACHED)


def point(request: Request) -> Response:
    try:
        facts = map_serving.point_facts(_run(request), request.path_params["map_name"], request.path_params["row"],
                                        request.query_params.get("quality") or None)
    except map_serving.NotServed as error:
        return _not_found(error)
    return JSONResponse(facts, headers=CACHED)


ROUTES = [
    Route(PREFIX + "/{run_id}/thumbnails/{row:int}.jpg", thumbnail, methods=["GET"]),
    Route(PREFIX + "/{run_id}/maps/{map_name}/points.bin", points, methods=["GET"]),
    Route(PREFIX + "/{run_id}/maps/{map_name}/points/{row:int}.json", point, methods=["GET"]),
]
