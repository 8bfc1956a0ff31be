"""What the tests and the benchmarks share, so that bench/ never imports from tests/ (not part of the wheel).

procs.py     a server process on loopback: start, wait until ready, restart, stop (a signal, then SIGKILL), its log
stack.py     `python -m stack` as a process: ready when its console says so, its state file, orphans killed
backend.py   a canned OpenAI backend with faults (`python -m testkit.backend`), for the router's tests and benchmark
upstream.py  a fake of the router's upstream transport (route/upstream.py) for its unit tests: no sockets
supervisor.py a fake of the supervisor's control channel (stack/control.py) for the router's on-demand tests
fixtures/    tiny random checkpoints of every architecture (build.py), llama.cpp's vocabularies and templates
"""
