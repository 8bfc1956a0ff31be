"""Remote image URLs (serve/chat/image_fetch.py): fetched only from the hosts `--image-url-hosts` names, within the
byte and time limits, no redirect followed; each refusal a 400 that names it. Against a real HTTP server on loopback
and the tiny Gemma 3 vision server of tests/serve/test_vision.py: an image fetched by URL costs the prompt, and gives
the answer, exactly what the same image sent as a data: URL does (the oracle)."""

from __future__ import annotations

import base64
import contextlib
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from serve.chat.image_fetch import allowed
from serve.chat.images import ImageRefused
from testkit.images import png
from testkit.servers import running_server
from tests.serve.test_vision import ARGS, ggufs  # noqa: F401 - ggufs: the module's fixture

RED = png(16, 16, (220, 20, 20))
QUESTION = "What colour is this picture?"


@pytest.mark.parametrize(
    ("url", "hosts", "ok"),
    [
        ("http://img.example/a.png", ["img.example"], True),
        ("https://IMG.example:8443/a.png", ["img.example:8443"], True),
        ("http://img.example/a.png", ["img.example:8080"], False),  # port 80 is not the named one
        ("http://img.example.evil/a.png", ["img.example"], False),
        ("http://evil/a.png?img.example", ["img.example"], False),
        ("http://user@img.example/a.png", ["img.example"], False),
        ("http://[::1]:9000/a.png", ["[::1]:9000"], True),
        ("ftp://img.example/a.png", ["img.example"], False),
        ("http://img.example/a.png", [], False),
    ],
)
def test_allowed_hosts(url: str, hosts: list[str], ok: bool) -> None:
    if ok:
        allowed(url, hosts)
    else:
        with pytest.raises(ImageRefused):
            allowed(url, hosts)


class Images(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        routes = {
            "/red.png": (200, "image/png", RED),
            "/red": (200, "application/octet-stream", RED),  # no image type declared: read from the bytes
            "/page": (200, "text/html", b"<html>not an image</html>"),
            "/big.png": (200, "image/png", RED + b"\0" * 8192),
            "/missing.png": (404, "text/plain", b"no"),
        }
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/red.png")
            self.end_headers()
            return
        if self.path == "/slow.png":
            time.sleep(3)
        status, kind, body = routes.get(self.path, (200, "image/png", RED))
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a client that gave up (the slow one)
            self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def host() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Images)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def served(ggufs: tuple[Path, Path], host: str) -> Iterator[str]:  # noqa: F811
    args = ("--image-url-hosts", host, "--image-url-timeout", "1")
    with running_server("--model-path", str(ggufs[0]), "--model-name", "g3v", *ARGS, *args) as url:
        yield url


def chat(url: str, image: str) -> Any:
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
    content = [{"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": QUESTION}]
    return client.chat.completions.create(
        model="g3v", messages=[{"role": "user", "content": content}], max_tokens=6, temperature=0
    )


def data(picture: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(picture).decode()


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/red.png", "/red"])
def test_a_fetched_image_is_the_same_as_a_data_url(served: str, host: str, path: str) -> None:
    fetched, sent = chat(served, f"http://{host}{path}"), chat(served, data(RED))
    assert fetched.usage.prompt_tokens == sent.usage.prompt_tokens
    assert fetched.choices[0].message.content == sent.choices[0].message.content


@pytest.mark.slow
def test_anthropic_url_source_is_fetched(served: str, host: str) -> None:
    client = anthropic.Anthropic(base_url=served, api_key="none", max_retries=0)

    def ask(source: dict[str, Any]) -> Any:
        content = [{"type": "image", "source": source}, {"type": "text", "text": QUESTION}]
        return client.messages.create(
            model="g3v", max_tokens=6, messages=[{"role": "user", "content": content}], extra_body={"temperature": 0}
        )

    by_url = ask({"type": "url", "url": f"http://{host}/red.png"})
    inline = ask({"type": "base64", "media_type": "image/png", "data": base64.b64encode(RED).decode()})
    assert by_url.usage.input_tokens == inline.usage.input_tokens and by_url.content == inline.content


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/redirect", "redirects are not followed"),
        ("/big.png", "larger than 4096 bytes"),
        ("/slow.png", "did not answer within 1 s"),
        ("/missing.png", "HTTP 404"),
        ("/page", "not an image"),
    ],
)
def test_refusals_name_the_problem(served: str, host: str, path: str, says: str) -> None:
    with pytest.raises(openai.BadRequestError, match=says) as err:
        chat(served, f"http://{host}{path}")
    assert err.value.body["param"] == "messages.0.content"


@pytest.mark.slow
def test_hosts_not_named_are_refused_unfetched(served: str, host: str) -> None:
    port = host.split(":")[1]
    for url in (f"http://localhost:{port}/red.png", "http://169.254.169.254/latest/meta-data"):
        with pytest.raises(openai.BadRequestError, match="fetches no images from"):
            chat(served, url)
    assert chat(served, f"http://{host}/red.png").choices[0].finish_reason in ("stop", "length")


@pytest.mark.slow
def test_responses_input_image_url_is_fetched(served: str, host: str) -> None:
    client = openai.OpenAI(base_url=served + "/v1", api_key="none", max_retries=0)

    def ask(url: str) -> Any:
        content = [{"type": "input_text", "text": QUESTION}, {"type": "input_image", "image_url": url}]
        return client.responses.create(
            model="g3v", input=[{"role": "user", "content": content}], max_output_tokens=6, temperature=0
        )

    by_url, inline = ask(f"http://{host}/red.png"), ask(data(RED))
    assert by_url.usage.input_tokens == inline.usage.input_tokens and by_url.output_text == inline.output_text
