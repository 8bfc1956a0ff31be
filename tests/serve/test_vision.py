"""Images in chat requests, served with the projector found beside the GGUF, through the official `openai` SDK.

The model is testkit.fixtures.vision's tiny Gemma 3 (random weights: the answers are not checked, the accounting
and the refusals are). Each image takes 4 positions plus <start_of_image> and <end_of_image>."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openai
import pytest

from convert import convert_checkpoint
from hearth_common.paths import mmproj_path
from testkit.fixtures.vision import build_gemma3_vision
from testkit.images import png, png_header_only
from testkit.servers import running_server

pytestmark = pytest.mark.slow
ARGS = ("--ctx-size", "256", "--max-images", "2", "--max-image-bytes", "4096", "--cache-disk", "0")


def data_url(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64,{base64.b64encode(data).decode()}"


NOISE = b"".join(hashlib.sha256(i.to_bytes(4, "little")).digest() for i in range(384))  # 64x64 RGB, incompressible
RED = data_url(png(16, 16, (220, 20, 20)))
BLUE = data_url(png(16, 16, (20, 20, 220)))


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("vision")
    src = build_gemma3_vision()
    vision = convert_checkpoint(src, folder / "g3v.gguf", "f32", progress=False)
    text = convert_checkpoint(src, folder / "text.gguf", "f32", progress=False, text_only=True)
    assert mmproj_path(vision).is_file() and not mmproj_path(text).exists()
    return vision, text


@pytest.fixture(scope="module")
def server(ggufs: tuple[Path, Path]) -> Iterator[str]:
    with running_server("--model-path", str(ggufs[0]), "--model-name", "g3v", *ARGS) as url:
        yield url


@contextmanager
def serving(src: Path, folder: Path, name: str, *args: str) -> Iterator[str]:
    """Checkpoint `src` converted (f32, its projector beside it) and served as `name` on loopback; its URL."""
    gguf = convert_checkpoint(src, folder / f"{name}.gguf", "f32", progress=False)
    with running_server("--model-path", str(gguf), "--model-name", name, *args) as url:
        yield url


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)


def ask(*parts: str, text: str = "What colour is this picture?") -> list[dict]:
    content: list[dict] = [{"type": "image_url", "image_url": {"url": u}} for u in parts]
    return [{"role": "user", "content": [{"type": "text", "text": text}, *content]}]


def chat(url: str, messages: list[dict], model: str = "g3v", **kw) -> openai.types.chat.ChatCompletion:
    return client(url).chat.completions.create(model=model, messages=messages, max_tokens=4, temperature=0, **kw)


def image_costs(url: str, model: str, a: str, b: str) -> tuple[int, int]:
    """Prompt tokens that one image (`a`) and two (`a`, `b`) add to the same question."""
    plain = chat(url, ask(), model).usage
    one = chat(url, ask(a), model).usage
    two = chat(url, ask(a, b), model).usage
    assert plain and one and two
    return one.prompt_tokens - plain.prompt_tokens, two.prompt_tokens - plain.prompt_tokens


def cached_after_other_image(url: str, model: str, a: str, b: str) -> tuple[int, int]:
    """The same question about `a`, then about `b`: (the first prompt's tokens, the second's cached tokens)."""
    first = chat(url, ask(a, text="Describe it."), model)
    second = chat(url, ask(b, text="Describe it."), model)
    assert first.usage and second.usage
    cached = second.usage.prompt_tokens_details.cached_tokens if second.usage.prompt_tokens_details else 0
    assert cached is not None
    return first.usage.prompt_tokens, cached


def cached_after_resending(url: str, model: str, image: str) -> tuple[int, int]:
    """A second turn that sends the first turn's image again: (the first prompt's tokens, the second's cached)."""
    turn1 = ask(image, text="Look at this picture carefully.")
    first = chat(url, turn1, model)
    answer = first.choices[0].message.content or ""
    turn2 = [*turn1, {"role": "assistant", "content": answer}, {"role": "user", "content": "And now?"}]
    second = chat(url, turn2, model)
    assert first.usage and second.usage and second.usage.prompt_tokens_details
    return first.usage.prompt_tokens, second.usage.prompt_tokens_details.cached_tokens or 0


def test_an_image_counts_in_the_prompt(server: str) -> None:
    # <start_of_image>, 4 image positions, <end_of_image>
    assert image_costs(server, "g3v", RED, BLUE) == (6, 12)


def test_a_different_picture_is_not_taken_from_the_cache(server: str) -> None:
    prompt, cached = cached_after_other_image(server, "g3v", RED, BLUE)
    assert cached < prompt - 6  # stops at the image, not after it


def test_a_second_turn_resending_the_image_reuses_the_cache(server: str) -> None:
    prompt, cached = cached_after_resending(server, "g3v", RED)
    assert cached >= prompt - 1  # the whole first prompt, image included


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (data_url(b"hello, this is text"), "not an image"),
        (data_url(png(16, 16, (1, 2, 3))[:40]), "truncated"),
        (data_url(png_header_only(100_000, 100_000)), "truncated"),
        (data_url(png(64, 64, NOISE)), "bytes"),
        (data_url(png(16, 16, (1, 2, 3)), "image/webp"), "image/webp"),
        ("data:image/png;base64,not base64!", "base64"),
        ("https://example.com/cat.png", "fetches no images"),
        ("data:text/plain;base64,aGVsbG8=", "text/plain"),
    ],
)
def test_bad_images_are_a_400_naming_the_problem(server: str, url: str, says: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        chat(server, ask(url))
    assert says in str(err.value)
    assert chat(server, ask(RED)).choices  # and the server goes on


def test_too_many_pixels(server: str) -> None:
    huge = png_header_only(5000, 5000) + b"IDAT" + b"\x00" * 8 + b"IEND\xaeB`\x82"
    with pytest.raises(openai.BadRequestError, match="pixels"):
        chat(server, ask(data_url(huge)))


def test_too_many_images(server: str) -> None:
    with pytest.raises(openai.BadRequestError, match="at most 2"):
        chat(server, ask(RED, BLUE, RED))


def test_an_image_for_a_model_without_a_projector(ggufs: tuple[Path, Path]) -> None:
    with running_server("--model-path", str(ggufs[1]), "--model-name", "g3v", *ARGS) as url:
        with pytest.raises(openai.BadRequestError, match="does not take images"):
            chat(url, ask(RED))
        assert chat(url, [{"role": "user", "content": "Hi"}]).choices
