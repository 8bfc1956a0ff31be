"""An Idefics3 / SmolVLM model served with its projector, through the official `openai` SDK.

The model is testkit.fixtures.smolvlm's tiny Idefics3 (random weights: the answers are not checked). A 32x32
picture is four 16x16 tiles and an overview, five mtmd chunks of 4 positions with the row and overview markers
between them; how many prompt tokens that is comes from transformers' Idefics3Processor, the oracle."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.fixtures.smolvlm import LONGEST_EDGE, build_idefics3_vision, processor
from testkit.images import png
from tests.serve.test_vision import cached_after_other_image, cached_after_resending, data_url, image_costs, serving

pytestmark = pytest.mark.slow
ARGS = ("--ctx-size", "256", "--max-images", "2", "--cache-disk", "0")
RED, BLUE = (220, 20, 20), (20, 20, 220)


@pytest.fixture(scope="module")
def src() -> Path:
    return build_idefics3_vision()


@pytest.fixture(scope="module")
def server(src: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serving(src, tmp_path_factory.mktemp("smolvlm"), "smolvlm", *ARGS) as url:
        yield url


def picture(rgb: tuple[int, int, int]) -> str:
    return data_url(png(LONGEST_EDGE, LONGEST_EDGE, rgb))


def test_an_image_counts_its_tiles_as_transformers_does(server: str, src: Path) -> None:
    from PIL import Image

    proc = processor(src)
    image = Image.new("RGB", (LONGEST_EDGE, LONGEST_EDGE), RED)
    with_image = len(proc(text=["<image>"], images=[[image]])["input_ids"][0])
    per_image = with_image - len(proc(text=[""])["input_ids"][0])
    assert image_costs(server, "smolvlm", picture(RED), picture(BLUE)) == (per_image, 2 * per_image)


def test_a_second_turn_resending_the_image_reuses_the_cache(server: str) -> None:
    prompt, cached = cached_after_resending(server, "smolvlm", picture(RED))
    assert cached >= prompt - 1  # the whole first prompt, every tile included


def test_a_different_picture_is_not_taken_from_the_cache(server: str) -> None:
    prompt, cached = cached_after_other_image(server, "smolvlm", picture(RED), picture(BLUE))
    assert cached < prompt - 20  # stops at the first tile, not after the picture
