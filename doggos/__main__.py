"""`python -m doggos`: the command-line interface."""

import atexit
import os
import sys

from doggos.cli import main

code = main()
# All that doggos wrote is closed by now. What is left is the interpreter unloading torch, umap and Ray, about 1 s on
# 2 cores: the exit handlers run (logging's flush, Ray's own), then the prompt comes back without that wait.
atexit._run_exitfuncs()
for stream in (sys.stdout, sys.stderr):
    stream.flush()
os._exit(code)
