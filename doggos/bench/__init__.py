"""The bench wing: the speed benchmark. Imports every other wing.

Launch to a finished run against a plain-process ceiling, and the post-run steps at scale.
"""
