"""The base wing: a run on disk. Imports no other wing.

Its settings and resource plan, its folder and typed records, its stored table; image decoding; processes and the
terminal they print to.
"""
