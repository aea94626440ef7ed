"""The Search page through AppTest: words, an uploaded file, a run's own image, and More like this from Browse."""

from __future__ import annotations

import io

import pytest
from _dashboard_fixtures import NASTY_LABEL, open_page, unescape_markdown, write_fake_run
from PIL import Image

from dashboard import frame

pytestmark = pytest.mark.usefixtures("every_run_goes_through_app_py")  # conftest.py says why
RUN_ID = "20250101-120000-0001"


@pytest.fixture
def searchable_run(runs_root, tiny_clip):
    """A finished run whose recorded model is here (the tiny CLIP: 32-dimensional, like the run's vectors)."""
    return write_fake_run(runs_root, RUN_ID, dim=32, model=tiny_clip)


def png(colour=(200, 120, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (80, 60), colour).save(out, format="PNG")
    return out.getvalue()


def result_captions(at) -> list[str]:
    return [unescape_markdown(c) for image in at.image for c in image.captions if c != "the query"]


def test_search_by_words_shows_scored_results_a_label_summary_and_a_csv(searchable_run):
    at = open_page("pages/search.py")
    assert any("random weights" in w.value for w in at.warning)  # the demo model: results carry no meaning
    at.text_input(key="search_text").input("a beagle in the grass").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    captions = result_captions(at)
    assert len(captions) == 12 and all(c.split(" · ")[0].replace(".", "").replace("-", "").isdigit() for c in captions)
    assert any(" of 12 nearest " in unescape_markdown(m.value) for m in at.markdown)
    downloads = at.get("download_button")
    assert len(downloads) == 1


def test_search_filters_by_label_and_takes_k(searchable_run):
    at = open_page("pages/search.py")
    at.number_input(key="search_k").set_value(3)
    at.multiselect(key="search_labels").select("border collie")
    at.text_input(key="search_text").input("dog").run()
    captions = result_captions(at)
    assert len(captions) == 3 and all(" · border collie · " in c for c in captions)


def test_search_by_an_uploaded_file_and_a_bad_upload(searchable_run):
    at = open_page("pages/search.py")
    at.segmented_control(key="search_mode").set_value("upload").run()
    at.file_uploader(key="search_upload").upload("photo.png", png(), "image/png").run()
    assert not at.error and len(at.image) == 12
    at.file_uploader(key="search_upload").upload("notes.png", b"not an image at all", "image/png").run()
    errors = [unescape_markdown(e.value) for e in at.error]
    assert len(errors) == 1 and "(`image`)" in errors[0] and "not an image" in errors[0]
    assert not at.exception


def test_search_says_when_the_text_tower_cannot_load_and_row_queries_still_work(runs_root):
    write_fake_run(runs_root, RUN_ID)  # its model folder is not on this machine
    at = open_page("pages/search.py")
    at.text_input(key="search_text").input("a beagle").run()
    errors = [unescape_markdown(e.value) for e in at.error]
    assert len(errors) == 1 and "(`text`)" in errors[0] and "still works" in errors[0]
    at.segmented_control(key="search_mode").set_value("row").run()
    at.selectbox(key="search_row").set_value(5).run()
    assert not at.error and len(result_captions(at)) == 12
    assert not any("beagle-0005.jpg" in c for c in result_captions(at))  # the row itself is left out


def test_search_more_like_this_arrives_as_a_row_query(searchable_run):
    """What Browse's image dialog and the Map send (the click itself is walked in the browser tests)."""
    at = open_page("pages/search.py", **{frame.SEARCH_REQUEST: {"run": RUN_ID, "row": 7}})
    assert at.session_state["search_mode"] == "row" and at.session_state["search_row"] == 7
    assert len(result_captions(at)) == 12 and not any("-0007.jpg" in c for c in result_captions(at))
    assert frame.SEARCH_REQUEST not in at.session_state  # used once
    other = open_page("pages/search.py", **{frame.SEARCH_REQUEST: {"run": "another-run", "row": 7}})
    assert other.session_state["search_mode"] == "text"  # a request for another run is ignored


def test_search_draws_its_form_before_reading_the_embeddings(runs_root, monkeypatch):
    """A 1,000,000-row run's embeddings are 2 GB: the page reads them when a query first needs them, not to draw."""
    from doggos.explore import search

    write_fake_run(runs_root, RUN_ID)
    loads = []
    real = search.load_index
    monkeypatch.setattr(search, "load_index", lambda run: loads.append(run) or real(run))
    at = open_page("pages/search.py")
    assert not at.exception and loads == []
    assert at.multiselect(key="search_labels").options == sorted(["beagle", "border collie", NASTY_LABEL])
    at.segmented_control(key="search_mode").set_value("row").run()
    assert not at.error and len(result_captions(at)) == 12 and len(loads) == 1
    assert len(at.selectbox(key="search_row").options) == 27  # the run's 27 rows' names, from its index


def test_search_picks_a_run_image_by_file_name_with_type_ahead(searchable_run):
    """Issue 25 item 9: the run's images are offered by file name (a selectbox: type-ahead in the browser), not as
    a bare row number; the pick is the query, itself left out."""
    at = open_page("pages/search.py")
    at.segmented_control(key="search_mode").set_value("row").run()
    picker = at.selectbox(key="search_row")
    assert picker.label == "Image of the run" and "beagle-0005.jpg" in picker.options
    picker.select("beagle-0005.jpg").run()
    assert not at.error and at.session_state["search_row"] == 5
    assert len(result_captions(at)) == 12 and not any("beagle-0005.jpg" in c for c in result_captions(at))
    assert any("beagle-0005.jpg" in t.value for t in at.text)  # the query, named under its picture


def test_the_run_image_picker_cannot_be_cleared(searchable_run):
    """A cleared selectbox reaches the page as its first option: the page searched row 0 under an empty picker.
    The picker is required, so the browser offers no way to clear it."""
    at = open_page("pages/search.py")
    at.segmented_control(key="search_mode").set_value("row").run()
    picker = at.selectbox(key="search_row")
    assert picker.proto.required and picker.value == 0 and len(result_captions(at)) == 12
