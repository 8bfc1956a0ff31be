"""Ids of responses, output items and tool calls: unique, not secret.

From a pseudo-random generator seeded once from the OS, not from os.urandom per id: that system call gives the
GIL away, and on a machine whose cores llama.cpp's threads keep busy the event loop then waits milliseconds to be
scheduled and get it back (bench/anatomy.py showed uuid4 among the event loop's largest costs per request).
"""

from __future__ import annotations

import os
import random
import string

_rng = random.Random()  # its own: a test or library seeding the global generator cannot make ids repeat
os.register_at_fork(after_in_child=_rng.seed)  # nor can a forked worker repeat its parent's

ALNUM = string.ascii_letters + string.digits


def hex_id(nbytes: int = 16) -> str:
    """`nbytes` random bytes as lowercase hex (uuid4().hex's shape at 16)."""
    return f"{_rng.getrandbits(nbytes * 8):0{nbytes * 2}x}"


def alnum_id(length: int) -> str:
    """`length` random letters and digits."""
    return "".join(_rng.choices(ALNUM, k=length))
