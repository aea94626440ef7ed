"""The explore wing: over finished runs. Imports doggos.base, doggos.pipeline and doggos.runs.

Search, neighbours, label quality, maps and their neighbour graph, comparing runs, and the post-run steps that
compute them (`post_run.steps_for`).
"""
