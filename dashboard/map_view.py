"""The Map's scatter as a Streamlit component (its JavaScript and CSS in dashboard/map_component/): what it is sent,
and what it sends back (a clicked point, a selection). The points themselves travel by the routes in dashboard.routes.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from plotly.colors import qualitative

from dashboard import routes
from dashboard.quality_view import AGREEMENT_SCALE
from doggos.base import store

FOLDER = Path(__file__).parent / "map_component"
PALETTE = qualitative.Dark24 + qualitative.Light24  # 48 distinct colours before any repeats
IMAGE_LIMIT = 300  # at most this many points in view: each is drawn as its image
HEIGHT = 640  # px
# A larger selection is not sent back to the map (it drew it itself; 7 MB of JSON per rerun at a million rows): a new
# browser tab then shows it in the list below, not greyed on the map.
SELECTION_SENT = 50_000

_component = st.components.v2.component(
    "doggos_map", js=(FOLDER / "map.js").read_text(encoding="utf-8"),
    css=(FOLDER / "map.css").read_text(encoding="utf-8"))


def _hex(colour: str) -> str:
    """Plotly's palettes mix '#rrggbb' and 'rgb(r, g, b)'; the component reads '#rrggbb'."""
    if colour.startswith("#"):
        return colour
    red, green, blue = (int(part) for part in colour[colour.index("(") + 1:colour.index(")")].split(","))
    return f"#{red:02x}{green:02x}{blue:02x}"


def component_data(run, map_path: Path, labels: list[str], counts: list[int], colour_by: str,
                   quality_path: Path | None, selected: list[int], selection_version: int,
                   labels_version: tuple[int, int] = (0, 0), show_excluded: bool = False) -> dict:
    """What the component is sent on each rerun: URLs (each with the version of what it names: the points and facts
    also the run's label decisions', so a decision refetches them), the label legend (effective labels), the colours,
    and the current selection with its version (the component applies it only when the version is new: see map.js).
    A few KB, whatever the run's size, but for a selection of up to SELECTION_SENT rows. `show_excluded`: the points
    keep the images a label decision excluded."""
    base_path = st.get_option("server.baseUrlPath").strip("/")  # the app served under a path: the routes are too
    base = f"/{base_path}" if base_path else ""
    map_name, run_version = map_path.stem, store.run_version(run.path)
    quality = f"&quality={quality_path.stem}" if quality_path is not None else ""
    version = f"{map_path.stat().st_mtime_ns}-{quality_path.stat().st_mtime_ns if quality_path else 0}"
    decided = f"&labels={labels_version[0]}-{labels_version[1]}"
    maps = f"{base}{routes.PREFIX}/{run.id}/maps/{map_name}"
    shown = f"&excluded={routes.SHOW_EXCLUDED}" if show_excluded else ""
    return {
        "points_url": f"{maps}/points.bin?v={version}{decided}{quality}{shown}",
        "point_url": f"{maps}/points/{{row}}.json?v={version}{decided}{quality}",
        "thumb_url": f"{base}{routes.PREFIX}/{run.id}/thumbnails/{{row}}.jpg?v={run_version}",
        "labels": labels, "counts": counts, "colours": [_hex(PALETTE[n % len(PALETTE)]) for n in range(len(labels))],
        "colour_by": colour_by, "agreement_scale": [[at, _hex(colour)] for at, colour in AGREEMENT_SCALE],
        "image_limit": IMAGE_LIMIT, "height": HEIGHT, "selection_version": selection_version,
        "selected": selected if len(selected) <= SELECTION_SENT else [],
        "view_key": f"{run.id}/{map_name}",
    }


def draw(data: dict, key: str):
    """Mount the map; the result's `clicked` (a row) and `selected` (rows) are set on the rerun after the user's action,
    and None on every other."""
    return _component(key=key, data=data, height="content", on_clicked_change=_ignore, on_selected_change=_ignore)


def _ignore() -> None:
    """The component sends its events as trigger values; the page reads them from the result, so nothing to do here."""
