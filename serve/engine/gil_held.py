"""llama.cpp calls that keep the GIL: the quick ones the decode thread makes between two llama_decode calls.

ctypes releases the GIL around every foreign call. Around a call of a microsecond that only opens a door: the
event loop thread takes the GIL and keeps it for its whole turn (or up to the 5 ms switch interval) while the
decode thread, and with it llama.cpp, waits to get it back. Bound through ctypes.PYFUNCTYPE the GIL stays held,
so that llama_decode (and the sampler chain's full-vocabulary work) is where the decode thread hands it over.
"""

from __future__ import annotations

import ctypes
from typing import Any

import llama_cpp as ll


def _held(fn: Any) -> Any:
    """`fn` (a binding with its argument and result types declared) called without releasing the GIL."""
    prototype = ctypes.PYFUNCTYPE(fn.restype, *fn.argtypes)
    address = ctypes.cast(fn, ctypes.c_void_p).value
    assert address is not None
    return prototype(address)


llama_get_logits_ith = _held(ll.llama_get_logits_ith)
llama_memory_seq_rm = _held(ll.llama_memory_seq_rm)
llama_memory_seq_pos_min = _held(ll.llama_memory_seq_pos_min)
llama_tokenize = _held(ll.llama_tokenize)
