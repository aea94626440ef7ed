"""The doggos dashboard: `streamlit run app.py`. Navigation and the shared sidebar run picker; pages draw the rest.

`streamlit run` finds the `st.App` below and serves it: the pages, plus the app's own routes (dashboard.routes: the
Map's points and thumbnails, fetched by the browser without a rerun). The same file then runs as the page script,
as `__main__`, on every rerun of every session.
"""

from pathlib import Path

import streamlit as st

from dashboard import routes

PAW_ICON = Path(__file__).parent / "dashboard" / "paw.png"  # the browser tab's icon


def main() -> None:
    # Imported here, not above: the web server imports this file before Streamlit's runtime exists, and the caches
    # these modules declare must be made inside it.
    from dashboard import frame, host, ui
    from doggos.pipeline.cluster import forbid_implicit_ray
    from doggos.runs.manager import RunManager

    forbid_implicit_ray()  # runs and steps have processes of their own: a Ray call here is a bug, never a new local Ray
    # No emoji: without an emoji font (Debian's chromium) one draws as an empty box. The tab's icon is a file of
    # ours, because a Material icon there is fetched from Google's font servers, out of reach offline.
    st.set_page_config(page_title="doggos", page_icon=str(PAW_ICON), layout="wide")

    pages = [
        st.Page("pages/run.py", title="Run", icon=":material/rocket_launch:", default=True),
        st.Page("pages/browse.py", title="Browse", icon=":material/photo_library:", url_path="browse"),
        st.Page("pages/map.py", title="Map", icon=":material/scatter_plot:", url_path="map"),
        st.Page("pages/search.py", title="Search", icon=":material/image_search:", url_path="search"),
        st.Page("pages/quality.py", title="Quality", icon=":material/fact_check:", url_path="quality"),
        st.Page("pages/summary.py", title="Run summary", icon=":material/summarize:", url_path="summary"),
        st.Page("pages/compare.py", title="Compare", icon=":material/compare:", url_path="compare"),
    ]
    navigation = st.navigation(pages)

    # Streamlit forgets a widget's value when its page is not shown; re-storing keeps the Run form filled in.
    for key in [key for key in st.session_state if str(key).startswith("form_")]:
        st.session_state[key] = st.session_state[key]

    manager = RunManager()
    finished = frame.finished_runs(manager.root)  # newest first; listed once per server and change of the runs folder

    # A page may ask for a run to become current (e.g. the one it just watched finish); the picker can only be
    # changed before it is drawn, so the request waits here.
    requested = st.session_state.pop(frame.REQUEST_CURRENT_RUN, None)
    if requested in finished:
        st.session_state[frame.CURRENT_RUN_ID] = requested
    if st.session_state.get(frame.CURRENT_RUN_ID) not in finished:
        st.session_state[frame.CURRENT_RUN_ID] = next(iter(finished), None)  # the latest succeeded run, or none

    with st.sidebar:
        st.markdown("### :material/pets: doggos")
        if finished:
            st.selectbox(
                "Current run",
                options=list(finished),
                format_func=ui.run_choice_labels(finished).get,
                key=frame.CURRENT_RUN_ID,
                help="Browse, Map and Run summary show this run. Only finished (succeeded) runs are listed.",
            )
        st.caption(f"Runs folder: {ui.markdown_literal(manager.root)}")
        host.sidebar()  # host mode: the participant/host badge and the password field, or the open-app note

    st.session_state[frame.CURRENT_RUN] = finished.get(st.session_state.get(frame.CURRENT_RUN_ID))
    st.session_state[frame.RUNS_ROOT] = str(manager.root)
    deep_link = st.session_state.pop(frame.DEEP_LINK, None)  # see frame.start_page
    if deep_link:
        st.switch_page(deep_link)
    navigation.run()


if __name__ == "__main__":
    main()
else:  # imported by `streamlit run` as the web server
    app = st.App(__file__, routes=routes.ROUTES)
