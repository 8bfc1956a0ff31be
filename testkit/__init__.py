"""What the tests and the benchmarks share, so that bench/ never imports from tests/ (not part of the wheel).

procs.py     a server process on loopback: start, wait until ready, restart, stop (a signal, then SIGKILL), its log
"""
