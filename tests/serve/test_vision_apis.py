"""Images in the other APIs, through their official SDKs, on testkit.fixtures.vision's tiny Gemma 3: Anthropic
Messages (`image` blocks, base64 source), OpenAI Responses (`input_image` with a data: URL) and Ollama (`images`
on /api/chat messages and /api/generate), directly and through a router the server registered with. Each becomes
the chat core's image part, so an image costs the prompt what it costs OpenAI chat (6 tokens here), a bad image
is the same 400 in each API's own error shape, and the model says it takes images (/v1/models, /api/show).

Random weights: the answers are not checked, the accounting, the refusals and the listings are."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest

from testkit.images import png, png_header_only
from testkit.procs import wait_until
from testkit.servers import running_router, running_server
from tests.serve.test_vision import ARGS, NOISE, ggufs  # noqa: F401 - ggufs: the module's fixture

pytestmark = pytest.mark.slow
IMAGE_TOKENS = 6  # <start_of_image>, 4 image positions, <end_of_image>
RED, BLUE = png(16, 16, (220, 20, 20)), png(16, 16, (20, 20, 220))
QUESTION = "What colour is this picture?"

# (base64 text, media type, what the 400 says): OpenAI chat's refusals (tests/serve/test_vision.py), in base64 form
BAD = [
    (base64.b64encode(b"hello, this is text").decode(), "image/png", "not an image"),
    (base64.b64encode(RED[:40]).decode(), "image/png", "truncated"),
    (base64.b64encode(png_header_only(100_000, 100_000)).decode(), "image/png", "truncated"),
    (base64.b64encode(png(64, 64, NOISE)).decode(), "image/png", "bytes"),
    (base64.b64encode(RED).decode(), "image/webp", "image/webp"),
    ("not base64!", "image/png", "base64"),
]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def urls(ggufs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:  # noqa: F811
    """{"direct": the vision server, "router": a router it registered with, "text": a server without projector}."""
    state = tmp_path_factory.mktemp("route") / "state.json"
    with contextlib.ExitStack() as stack:
        router = stack.enter_context(running_router("--state-file", str(state), "--open-admin"))
        url = stack.enter_context(
            running_server("--model-path", str(ggufs[0]), "--model-name", "g3v", *ARGS, "--router", router)
        )
        text = stack.enter_context(running_server("--model-path", str(ggufs[1]), "--model-name", "g3t", *ARGS))
        assert wait_until(lambda: any(b.get("healthy") for b in httpx.get(router + "/backends").json()["backends"]))
        yield {"direct": url, "router": router, "text": text}


VIA = ("direct", "router")


# -- Anthropic Messages ----------------------------------------------------------------------------------------


def claude(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key="none", max_retries=0)


def image_block(data: str, media_type: str = "image/png") -> dict[str, Any]:
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def anthropic_ask(*blocks: dict[str, Any]) -> list[Any]:
    return [{"role": "user", "content": [*blocks, {"type": "text", "text": QUESTION}]}]


def anthropic_prompt(url: str, messages: list[Any], model: str = "g3v") -> int:
    usage = claude(url).messages.create(model=model, max_tokens=4, messages=messages, extra_body={"temperature": 0})
    return usage.usage.input_tokens + (usage.usage.cache_read_input_tokens or 0)


@pytest.mark.parametrize("via", VIA)
def test_anthropic_image_blocks(urls: dict[str, str], via: str) -> None:
    url = urls[via]
    plain = anthropic_prompt(url, anthropic_ask())
    assert anthropic_prompt(url, anthropic_ask(image_block(b64(RED)))) == plain + IMAGE_TOKENS
    two = anthropic_ask(image_block(b64(RED)), image_block(b64(BLUE)))
    assert anthropic_prompt(url, two) == plain + 2 * IMAGE_TOKENS
    with claude(url).messages.stream(model="g3v", max_tokens=4, messages=anthropic_ask(image_block(b64(BLUE)))) as s:
        final = s.get_final_message()
    assert final.usage.output_tokens >= 1
    counted = claude(url).messages.count_tokens(model="g3v", messages=anthropic_ask(image_block(b64(RED))))
    assert counted.input_tokens == plain + IMAGE_TOKENS


@pytest.mark.parametrize(("data", "media_type", "says"), BAD)
def test_anthropic_bad_images(urls: dict[str, str], data: str, media_type: str, says: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as err:
        anthropic_prompt(urls["direct"], anthropic_ask(image_block(data, media_type)))
    assert says in err.value.message
    assert isinstance(err.value.body, dict) and err.value.body["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ({"type": "url", "url": "https://example.com/cat.png"}, "fetches no images"),
        ({"type": "file", "file_id": "file_011"}, "Files API"),
    ],
)
def test_anthropic_url_and_file_sources_are_refused(urls: dict[str, str], source: dict[str, Any], says: str) -> None:
    with pytest.raises(anthropic.BadRequestError, match=says):
        anthropic_prompt(urls["direct"], anthropic_ask({"type": "image", "source": source}))
    assistant = [*anthropic_ask(), {"role": "assistant", "content": [image_block(b64(RED))]}, *anthropic_ask()]
    with pytest.raises(anthropic.BadRequestError, match="assistant message cannot hold image"):
        anthropic_prompt(urls["direct"], assistant)


# -- OpenAI Responses ------------------------------------------------------------------------------------------


def oai(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)


def input_image(data: bytes, media_type: str = "image/png") -> dict[str, Any]:
    return {"type": "input_image", "image_url": f"data:{media_type};base64,{b64(data)}", "detail": "auto"}


def responses_ask(*parts: dict[str, Any]) -> list[Any]:
    return [{"role": "user", "content": [{"type": "input_text", "text": QUESTION}, *parts]}]


def responses_prompt(url: str, items: list[Any], **kw: Any) -> int:
    response = oai(url).responses.create(model="g3v", input=items, max_output_tokens=4, temperature=0, **kw)
    assert response.usage
    return response.usage.input_tokens


@pytest.mark.parametrize("via", VIA)
def test_responses_input_images(urls: dict[str, str], via: str) -> None:
    url = urls[via]
    plain = responses_prompt(url, responses_ask())
    assert responses_prompt(url, responses_ask(input_image(RED))) == plain + IMAGE_TOKENS
    assert responses_prompt(url, responses_ask(input_image(RED), input_image(BLUE))) == plain + 2 * IMAGE_TOKENS
    events = list(
        oai(url).responses.create(
            model="g3v", input=responses_ask(input_image(BLUE)), max_output_tokens=4, temperature=0, stream=True
        )
    )
    final = events[-1].response  # response.completed, or response.incomplete at max_output_tokens
    assert final.usage and final.usage.input_tokens == plain + IMAGE_TOKENS


def test_responses_keeps_the_image_for_previous_response_id(urls: dict[str, str]) -> None:
    client = oai(urls["direct"])
    first = client.responses.create(model="g3v", input=responses_ask(input_image(RED)), max_output_tokens=4)
    second = client.responses.create(model="g3v", input="And now?", previous_response_id=first.id, max_output_tokens=4)
    assert first.usage and second.usage
    assert second.usage.input_tokens > first.usage.input_tokens  # the stored turn, its image included
    assert second.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens - 1


@pytest.mark.parametrize(("data", "media_type", "says"), BAD)
def test_responses_bad_images(urls: dict[str, str], data: str, media_type: str, says: str) -> None:
    part = {"type": "input_image", "image_url": f"data:{media_type};base64,{data}"}
    with pytest.raises(openai.BadRequestError) as err:
        responses_prompt(urls["direct"], responses_ask(part))
    assert says in err.value.message
    assert isinstance(err.value.body, dict) and err.value.body["param"] == "input"


@pytest.mark.parametrize(
    ("part", "says"),
    [
        ({"type": "input_image", "image_url": "https://example.com/cat.png"}, "fetches no images"),
        ({"type": "input_image", "file_id": "file-abc"}, "file_id"),
        ({"type": "input_file", "file_id": "file-abc"}, "input_file"),
    ],
)
def test_responses_remote_urls_and_files_are_refused(urls: dict[str, str], part: dict[str, Any], says: str) -> None:
    with pytest.raises(openai.BadRequestError, match=says):
        responses_prompt(urls["direct"], responses_ask(part))


# -- Ollama ----------------------------------------------------------------------------------------------------


def olla(url: str) -> ollama.Client:
    return ollama.Client(host=url)


def ollama_ask(*pictures: bytes | str) -> list[dict[str, Any]]:
    message: dict[str, Any] = {"role": "user", "content": QUESTION}
    return [{**message, "images": list(pictures)}] if pictures else [message]


def ollama_chat(url: str, messages: list[dict[str, Any]], model: str = "g3v") -> int:
    options = {"num_predict": 4, "temperature": 0}
    return olla(url).chat(model=model, messages=messages, options=options).prompt_eval_count or 0


@pytest.mark.parametrize("via", VIA)
def test_ollama_images_on_chat_and_generate(urls: dict[str, str], via: str) -> None:
    url = urls[via]
    plain = ollama_chat(url, ollama_ask())
    assert ollama_chat(url, ollama_ask(RED)) == plain + IMAGE_TOKENS  # the client base64s bytes
    assert ollama_chat(url, ollama_ask(b64(RED), b64(BLUE))) == plain + 2 * IMAGE_TOKENS
    lines = list(olla(url).chat(model="g3v", messages=ollama_ask(BLUE), options={"num_predict": 4}, stream=True))
    assert lines[-1].done and lines[-1].prompt_eval_count == plain + IMAGE_TOKENS
    options = {"num_predict": 4, "temperature": 0}
    text = olla(url).generate(model="g3v", prompt=QUESTION, options=options)
    seen = olla(url).generate(model="g3v", prompt=QUESTION, images=[RED], options=options)
    assert (seen.prompt_eval_count or 0) == (text.prompt_eval_count or 0) + IMAGE_TOKENS
    streamed = list(olla(url).generate(model="g3v", prompt=QUESTION, images=[BLUE], options=options, stream=True))
    assert streamed[-1].done and streamed[-1].prompt_eval_count == seen.prompt_eval_count


@pytest.mark.parametrize(("data", "media_type", "says"), [b for b in BAD if b[1] == "image/png"])
def test_ollama_bad_images(urls: dict[str, str], data: str, media_type: str, says: str) -> None:
    url = urls["direct"]
    if says == "base64":  # the client refuses to send it: on the wire
        for path, body in (
            ("/api/chat", {"messages": ollama_ask(data)}),
            ("/api/generate", {"prompt": QUESTION, "images": [data]}),
        ):
            r = httpx.post(url + path, json={"model": "g3v", "stream": False, **body})
            assert r.status_code == 400 and says in r.json()["error"], r.text
        return
    for call in (
        lambda: ollama_chat(url, ollama_ask(data)),
        lambda: olla(url).generate(model="g3v", prompt=QUESTION, images=[data]),
    ):
        with pytest.raises(ollama.ResponseError) as err:
            call()
        assert err.value.status_code == 400 and says in err.value.error


def test_ollama_images_with_raw_are_refused(urls: dict[str, str]) -> None:
    with pytest.raises(ollama.ResponseError, match="raw") as err:
        olla(urls["direct"]).generate(model="g3v", prompt=QUESTION, images=[RED], raw=True)
    assert err.value.status_code == 400


# -- a model without a projector, and what the listings say -----------------------------------------------------


def test_a_model_without_a_projector_refuses_images_in_each_api(urls: dict[str, str]) -> None:
    url = urls["text"]
    with pytest.raises(anthropic.BadRequestError, match="does not take images"):
        anthropic_prompt(url, anthropic_ask(image_block(b64(RED))), model="g3t")
    with pytest.raises(openai.BadRequestError, match="does not take images"):
        oai(url).responses.create(model="g3t", input=responses_ask(input_image(RED)), max_output_tokens=4)
    for call in (
        lambda: ollama_chat(url, ollama_ask(RED), model="g3t"),
        lambda: olla(url).generate(model="g3t", prompt=QUESTION, images=[RED]),
    ):
        with pytest.raises(ollama.ResponseError) as err:
            call()
        assert err.value.status_code == 400 and "does not take images" in err.value.error
    assert ollama_chat(url, ollama_ask(), model="g3t") > 0  # and text goes on


def test_the_listings_say_the_model_takes_images(urls: dict[str, str]) -> None:
    vision = httpx.get(urls["direct"] + "/v1/models").json()["data"]
    assert [m.get("capabilities") for m in vision] == [["chat", "vision"]]
    assert httpx.get(urls["text"] + "/v1/models").json()["data"][0]["capabilities"] == ["chat"]
    routed = httpx.get(urls["router"] + "/v1/models").json()["data"]  # as the server registered
    assert [m.get("capabilities") for m in routed if m["id"] == "g3v"] == [["chat", "vision"]]
    for via in VIA:
        assert "vision" in (olla(urls[via]).show("g3v").capabilities or []), via
    assert "vision" not in (olla(urls["text"]).show("g3t").capabilities or [])
