"""A Mistral 3 (Pixtral) model served with its projector, through the official `openai` SDK.

The model is testkit.fixtures.pixtral's tiny Mistral3ForConditionalGeneration (random weights: the answers are not
checked). A 64x64 picture is a 4x4 grid of image tokens with an [IMG_BREAK] after each row but the last and
[IMG_END] after it, as transformers' PixtralProcessor lays it out (testkit.fixtures.pixtral.image_prompt)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from convert import convert_checkpoint
from testkit.fixtures.pixtral import IMAGE_SIZE, IMAGE_TOKENS, MERGE, PATCH_SIZE, build_mistral3_vision, image_prompt
from testkit.images import png
from testkit.servers import running_server
from tests.serve.test_vision import ask, client, data_url

pytestmark = pytest.mark.slow
ARGS = ("--ctx-size", "256", "--max-images", "2", "--cache-disk", "0")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    src = build_mistral3_vision()
    gguf = convert_checkpoint(src, tmp_path_factory.mktemp("m3v") / "m3v.gguf", "f32", progress=False)
    with running_server("--model-path", str(gguf), "--model-name", "m3v", *ARGS) as url:
        yield url


def chat(url: str, messages: list[dict]):
    return client(url).chat.completions.create(model="m3v", messages=messages, max_tokens=4, temperature=0)


def picture(rgb: tuple[int, int, int]) -> str:
    return data_url(png(IMAGE_SIZE, IMAGE_SIZE, rgb))


def test_an_image_counts_its_rows_and_breaks(server: str) -> None:
    side = IMAGE_SIZE // (PATCH_SIZE * MERGE)
    per_image = len(image_prompt(dict.fromkeys(IMAGE_TOKENS, 0), side, side))
    plain = chat(server, ask()).usage
    one = chat(server, ask(picture((220, 20, 20)))).usage
    two = chat(server, ask(picture((220, 20, 20)), picture((20, 20, 220)))).usage
    assert plain and one and two
    assert one.prompt_tokens - plain.prompt_tokens == per_image
    assert two.prompt_tokens - plain.prompt_tokens == 2 * per_image


def test_a_second_turn_resending_the_image_reuses_the_cache(server: str) -> None:
    turn1 = ask(picture((220, 20, 20)), text="Look at this picture carefully.")
    first = chat(server, turn1)
    answer = first.choices[0].message.content or ""
    turn2 = [*turn1, {"role": "assistant", "content": answer}, {"role": "user", "content": "And now?"}]
    second = chat(server, turn2)
    assert first.usage and second.usage and second.usage.prompt_tokens_details
    cached = second.usage.prompt_tokens_details.cached_tokens or 0
    assert cached >= first.usage.prompt_tokens - 1
