"""demo-vision (models/demo/vision.py), the committed tiny Gemma 3 vision model: its manifest holds, its training
runs (two steps), and converted to GGUF + projector and served, it names the colour of each solid-colour picture
through llama.cpp's mtmd, for shades it did not train on and the picture before or after the question; with no
picture it answers every text question of the demo data (models/demo/data.py ITEMS) with its answer, greedy."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import ollama
import openai
import pytest

from convert import convert_checkpoint
from models.demo import manifest
from models.demo.data import ITEMS
from models.demo.vision import COLOURS, DEMO_DIR, MANIFEST, NAME, QUESTION, answer, main
from testkit.images import png
from testkit.servers import running_server

pytestmark = pytest.mark.slow
FOLDER = DEMO_DIR / NAME


def picture(rgb: tuple[int, int, int], shift: int) -> bytes:
    return png(48, 48, tuple(min(255, max(0, c + shift)) for c in rgb))  # type: ignore[arg-type]


def test_manifest_matches_the_files() -> None:
    assert manifest.read(MANIFEST) == manifest.compute(DEMO_DIR, (NAME,))


def test_training_runs(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path / NAME), "--max-steps", "2"]) == 1  # two steps name no colour yet
    assert {p.name for p in (tmp_path / NAME).iterdir()} >= {"model.safetensors", "config.json", "tokenizer.json"}
    assert not (tmp_path / MANIFEST.name).exists()


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    gguf = convert_checkpoint(FOLDER, tmp_path_factory.mktemp("dv") / f"{NAME}.gguf", "f32", progress=False)
    with running_server("--model-path", str(gguf), "--model-name", NAME, "--ctx-size", "256") as served:
        yield served


@pytest.mark.parametrize("colour", COLOURS)
def test_it_names_the_colour(url: str, colour: str) -> None:
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
    for shift in (0, 12, -12):
        image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(picture(COLOURS[colour], shift)).decode()}}  # fmt: skip
        for content in ([image, {"type": "text", "text": QUESTION}], [{"type": "text", "text": QUESTION}, image]):
            said = client.chat.completions.create(
                model=NAME, messages=[{"role": "user", "content": content}], max_tokens=12, temperature=0
            )
            assert said.choices[0].message.content == answer(colour), (shift, content[0]["type"])
    reply = ollama.Client(host=url).chat(
        model=NAME,
        messages=[{"role": "user", "content": QUESTION, "images": [picture(COLOURS[colour], 6)]}],
        options={"temperature": 0, "num_predict": 12},
    )
    assert reply.message.content == answer(colour)


def test_it_answers_the_text_questions(url: str) -> None:
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
    wrong = {}
    for item in ITEMS:
        said = client.chat.completions.create(
            model=NAME, messages=[{"role": "user", "content": item.question}], max_tokens=24, temperature=0
        )
        if said.choices[0].message.content != item.answer:
            wrong[item.question] = (said.choices[0].message.content, item.answer)
    assert not wrong
