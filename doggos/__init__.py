"""doggos: CLIP image embeddings with Ray Data, and a Streamlit dashboard to explore them.

The code is grouped in wings, each a subpackage that imports only the wings below it (tests/test_layout.py checks
it); `cli.py` and `__main__.py` sit on top and may import any of them. The Streamlit side is `dashboard/`, beside
`app.py` and `pages/`: it imports doggos, never the other way round.
"""

WINGS = ("base", "pipeline", "runs", "explore", "bench")  # bottom to top: a wing imports only the wings before it
