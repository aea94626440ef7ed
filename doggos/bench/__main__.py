"""`python -m doggos.bench`: the benchmark, with the options of `python -m doggos bench`."""

import argparse
import logging
import sys

from doggos.bench.command import add_arguments, main

logging.basicConfig(level=logging.WARNING)
parser = argparse.ArgumentParser(prog="python -m doggos.bench", description=__doc__.splitlines()[0])
add_arguments(parser)
sys.exit(main(parser.parse_args()))
