"""The chat template travels into the GGUF: llama-cpp-python renders the same prompt transformers does.

The renderer is built exactly as llama_cpp.Llama builds its default chat handler (the GGUF's
tokenizer.chat_template, with BOS/EOS text taken from the GGUF's own vocabulary), and the rendered prompt,
tokenized by llama.cpp with special tokens parsed, gives the ids transformers gives.
"""

from __future__ import annotations

import pytest

llama_cpp = pytest.importorskip("llama_cpp")
transformers = pytest.importorskip("transformers")

from llama_cpp.llama_chat_format import Jinja2ChatFormatter  # noqa: E402

from testkit.fixtures.build import DENSE_ARCHES, build_fixture  # noqa: E402

pytestmark = pytest.mark.slow

CONVERSATIONS = [
    [{"role": "user", "content": "Hello! What is 2+2?"}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Name a city in Japan. 日本語でどうぞ 😀"},
        {"role": "assistant", "content": "Tokyo."},
        {"role": "user", "content": "  And in France?\n"},
    ],
    [
        {"role": "user", "content": "def f(x):\n    return x"},
        {"role": "assistant", "content": "It doubles nothing; it returns x."},
        {"role": "user", "content": "Thanks."},
    ],
]


def gguf_formatter(llm: llama_cpp.Llama) -> Jinja2ChatFormatter:
    bos, eos = llm.token_bos(), llm.token_eos()
    return Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"],
        bos_token=llm._model.token_get_text(bos) if bos != -1 else "",
        eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
        add_generation_prompt=True,
    )


@pytest.mark.parametrize("arch", DENSE_ARCHES)
def test_gguf_template_renders_like_transformers(arch, converted):
    hf = transformers.AutoTokenizer.from_pretrained(build_fixture(arch))
    llm = llama_cpp.Llama(str(converted(arch, "f32")), vocab_only=True, verbose=False)
    fmt = gguf_formatter(llm)
    for messages in CONVERSATIONS:
        want = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        got = fmt(messages=messages).prompt
        assert got == want
        want_ids = hf(want, add_special_tokens=False).input_ids
        assert llm.tokenize(got.encode(), add_bos=False, special=True) == want_ids


def test_qwen3_thinking_markers_are_control_tokens(converted):
    """<think> and </think> are single control tokens in the GGUF, as the server's parser expects."""
    llm = llama_cpp.Llama(str(converted("qwen3", "f32")), vocab_only=True, verbose=False)
    hf = transformers.AutoTokenizer.from_pretrained(build_fixture("qwen3"))
    for marker in ("<think>", "</think>", "<|im_start|>", "<|im_end|>"):
        ids = llm.tokenize(marker.encode(), add_bos=False, special=True)
        assert ids == [hf.convert_tokens_to_ids(marker)]
        assert llama_cpp.llama_vocab_is_control(llama_cpp.llama_model_get_vocab(llm.model), ids[0])
        # a control token is text only when asked for specials, so it never leaks into plain output
        assert llm.detokenize(ids, special=True).decode() == marker
        assert llm.detokenize(ids, special=False) == b""
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo", "reasoning_content": "greet"}]
    want = hf.apply_chat_template(messages, tokenize=False)
    assert gguf_formatter(llm)(messages=messages).prompt.startswith(want)
