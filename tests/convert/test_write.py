"""The writer's bulk metadata packing gives exactly gguf-py's bytes."""

from __future__ import annotations

import pytest
from gguf import GGUFValueType, GGUFWriter

from convert.write import _Writer


@pytest.mark.parametrize(
    ("value", "sub_type"),
    [
        (["a", "héllo", "", "😀", "Ġthe", "<|im_end|>"] * 40, None),
        (["x y", "\u0120\u0120"] * 100, GGUFValueType.STRING),
        ([1, -2, 3] * 40, None),
        ([1, 2] * 40, GGUFValueType.UINT32),
        ([0.5, -1000.0, 3.25] * 40, None),
        ([True, False] * 40, None),  # left to gguf-py
        (["short"], None),  # left to gguf-py
    ],
)
def test_bulk_array_packing_matches_gguf_py(value, sub_type):
    ours, theirs = _Writer(None, "llama"), GGUFWriter(None, "llama")
    assert ours._pack_val(value, GGUFValueType.ARRAY, True, sub_type) == theirs._pack_val(
        value, GGUFValueType.ARRAY, True, sub_type
    )
