"""Start a peer's worker entry point (`python -m <module> ...`) so that it, and every process
it forks, dies when its parent dies (Linux PR_SET_PDEATHSIG). Used by _common_sync.py, and by
the taskiq and streaq adapters for their W2P commands (which fork their worker processes):

    python _launch.py <module> [args...]
"""

import os
import runpy
import sys

from _common_sync import die_with_parent

die_with_parent()
os.register_at_fork(after_in_child=die_with_parent)

module = sys.argv[1]
sys.argv = [module, *sys.argv[2:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
