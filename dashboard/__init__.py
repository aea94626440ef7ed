"""The Streamlit side: the shared page frame, the live pipeline view, the pages' helpers.

It imports doggos (any wing); nothing in doggos imports it (tests/test_layout.py).
"""
