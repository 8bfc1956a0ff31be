"""An Idefics3 / SmolVLM model served with its projector, through the official `openai` SDK.

The model is testkit.fixtures.smolvlm's tiny Idefics3 (random weights: the answers are not checked). A 32x32
picture is four 16x16 tiles and an overview, five mtmd chunks of 4 positions with the row and overview markers
between them; how many prompt tokens that is comes from transformers' Idefics3Processor, the oracle."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from convert import convert_checkpoint
from testkit.fixtures.smolvlm import LONGEST_EDGE, build_idefics3_vision, processor
from testkit.images import png
from testkit.servers import running_server
from tests.serve.test_vision import ask, client, data_url

pytestmark = pytest.mark.slow
ARGS = ("--ctx-size", "256", "--max-images", "2", "--cache-disk", "0")
RED, BLUE = (220, 20, 20), (20, 20, 220)


@pytest.fixture(scope="module")
def src() -> Path:
    return build_idefics3_vision()


@pytest.fixture(scope="module")
def server(src: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    gguf = convert_checkpoint(src, tmp_path_factory.mktemp("smolvlm") / "smolvlm.gguf", "f32", progress=False)
    with running_server("--model-path", str(gguf), "--model-name", "smolvlm", *ARGS) as url:
        yield url


def chat(url: str, messages: list[dict]):
    return client(url).chat.completions.create(model="smolvlm", messages=messages, max_tokens=4, temperature=0)


def picture(rgb: tuple[int, int, int]) -> str:
    return data_url(png(LONGEST_EDGE, LONGEST_EDGE, rgb))


def test_an_image_counts_its_tiles_as_transformers_does(server: str, src: Path) -> None:
    from PIL import Image

    proc = processor(src)
    image = Image.new("RGB", (LONGEST_EDGE, LONGEST_EDGE), RED)
    with_image = len(proc(text=["<image>"], images=[[image]])["input_ids"][0])
    per_image = with_image - len(proc(text=[""])["input_ids"][0])
    plain = chat(server, ask()).usage
    one = chat(server, ask(picture(RED))).usage
    two = chat(server, ask(picture(RED), picture(BLUE))).usage
    assert plain and one and two
    assert one.prompt_tokens - plain.prompt_tokens == per_image
    assert two.prompt_tokens - plain.prompt_tokens == 2 * per_image


def test_a_second_turn_resending_the_image_reuses_the_cache(server: str) -> None:
    turn1 = ask(picture(RED), text="Look at this picture carefully.")
    first = chat(server, turn1)
    answer = first.choices[0].message.content or ""
    turn2 = [*turn1, {"role": "assistant", "content": answer}, {"role": "user", "content": "And now?"}]
    second = chat(server, turn2)
    assert first.usage and second.usage and second.usage.prompt_tokens_details
    cached = second.usage.prompt_tokens_details.cached_tokens or 0
    assert cached >= first.usage.prompt_tokens - 1  # the whole first prompt, every tile included


def test_a_different_picture_is_not_taken_from_the_cache(server: str) -> None:
    first = chat(server, ask(picture(RED), text="Describe it."))
    second = chat(server, ask(picture(BLUE), text="Describe it."))
    assert first.usage and second.usage
    details = second.usage.prompt_tokens_details
    cached = (details.cached_tokens if details else 0) or 0
    assert cached < first.usage.prompt_tokens - 20  # stops at the first tile, not after the picture
