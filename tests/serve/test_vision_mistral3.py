"""A Mistral 3 (Pixtral) model served with its projector, through the official `openai` SDK.

The model is testkit.fixtures.pixtral's tiny Mistral3ForConditionalGeneration (random weights: the answers are not
checked). A 64x64 picture is a 4x4 grid of image tokens with an [IMG_BREAK] after each row but the last and
[IMG_END] after it, as transformers' PixtralProcessor lays it out (testkit.fixtures.pixtral.image_prompt)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testkit.fixtures.pixtral import IMAGE_SIZE, IMAGE_TOKENS, MERGE, PATCH_SIZE, build_mistral3_vision, image_prompt
from testkit.images import png
from tests.serve.test_vision import cached_after_resending, data_url, image_costs, serving

pytestmark = pytest.mark.slow
ARGS = ("--ctx-size", "256", "--max-images", "2", "--cache-disk", "0")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    src = build_mistral3_vision()
    with serving(src, tmp_path_factory.mktemp("m3v"), "m3v", *ARGS) as url:
        yield url


def picture(rgb: tuple[int, int, int]) -> str:
    return data_url(png(IMAGE_SIZE, IMAGE_SIZE, rgb))


def test_an_image_counts_its_rows_and_breaks(server: str) -> None:
    side = IMAGE_SIZE // (PATCH_SIZE * MERGE)
    per_image = len(image_prompt(dict.fromkeys(IMAGE_TOKENS, 0), side, side))
    assert image_costs(server, "m3v", picture((220, 20, 20)), picture((20, 20, 220))) == (per_image, 2 * per_image)


def test_a_second_turn_resending_the_image_reuses_the_cache(server: str) -> None:
    prompt, cached = cached_after_resending(server, "m3v", picture((220, 20, 20)))
    assert cached >= prompt - 1
