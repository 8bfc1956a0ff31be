"""hearth_common: the body parser's refusals, the router's type table against serve's models, keys, names."""

from __future__ import annotations

import json
import os
import typing
from pathlib import Path

import pytest
from pydantic import ValidationError

from hearth_common.errors import error_body
from hearth_common.fields import BOOLEAN_FIELDS, INTEGER_FIELDS, NUMBER_FIELDS, type_error
from hearth_common.jsonbody import MAX_DEPTH, BodyError, parse_object
from hearth_common.keys import KeyFileError, find_key, key_matches, presented_key, read_key_file, write_key_file
from hearth_common.registration import Registration, registration
from hearth_common.validation import first_error


def nested(depth: int) -> bytes:
    return b'{"a": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b'{"messages": [{"role": "user", "content": "\\ud800"}]}', "surrogate"),  # valid JSON, unencodable text
        (b'{"a": "x\\udfff"}', "surrogate"),
        (b'{"\\udc00": 1}', "surrogate"),  # in a key
        (nested(1001), "nested"),  # past the interpreter's recursion limit
        (nested(MAX_DEPTH + 1), "nested"),
        (b'{"seed": ' + b"9" * 4301 + b"}", "too long"),  # int()'s digit limit
        (b'{"repeat_penalty": Infinity}', "Infinity"),
        (b'{"temperature": NaN}', "NaN"),
        (b'{"temperature": 1e999}', "out of range"),
        (b"[1, 2]", "JSON object"),
        (b"\xff\xfe{}", "UTF-8"),
        (b"{nope", "not valid JSON"),
    ],
)
def test_bodies_that_would_crash_a_handler_are_refused(raw: bytes, needle: str) -> None:
    with pytest.raises(BodyError, match=needle) as err:
        parse_object(raw)
    assert "\n" not in str(err.value)


def test_good_bodies_pass_unchanged() -> None:
    body = {
        "messages": [{"role": "user", "content": "caf\u00e9 \U0001f600"}],
        "max_tokens": 8,
        "temperature": 0.5,
        "response_format": {"schema": {"type": "object"}},
    }
    assert parse_object(json.dumps(body).encode()) == body  # the emoji arrives as a surrogate pair escape
    assert parse_object(json.dumps(body, ensure_ascii=False).encode()) == body
    assert parse_object(nested(MAX_DEPTH))["a"] is not None
    assert parse_object(b'{"seed": ' + b"9" * 4300 + b"}")["seed"] > 0


def test_the_routers_type_table_matches_serves_models() -> None:
    """hearth_common.fields (what the router checks) and serve.schemas.Sampling (what serve validates) agree."""
    from serve.chat.schemas import Sampling

    fields = Sampling.model_fields
    by_alias = {a: n for n, f in fields.items() for a in getattr(f.validation_alias, "choices", [])}
    for name, expected in [
        *((n, int) for n in INTEGER_FIELDS),
        *((n, float) for n in NUMBER_FIELDS),
        *((n, bool) for n in BOOLEAN_FIELDS),
    ]:
        field = fields[by_alias.get(name, name)]
        assert expected in (field.annotation, *typing.get_args(field.annotation)), name
        assert any(getattr(m, "strict", False) for m in field.metadata), f"{name} is not strict in Sampling"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"max_tokens": "8"}, "max_tokens"),
        ({"max_tokens": 8.0}, "max_tokens"),
        ({"seed": True}, "seed"),
        ({"temperature": "0.5"}, "temperature"),
        ({"top_p": [1]}, "top_p"),
        ({"stream": "true"}, "stream"),
        ({"stream": 1}, "stream"),
        ({"n": None, "top_k": {}}, "top_k"),
    ],
)
def test_wrong_json_types(body: dict, field: str) -> None:
    from serve.chat.schemas import ChatRequest

    wrong = type_error(body)
    assert wrong is not None and wrong[0] == field
    with pytest.raises(ValidationError):  # serve refuses the same
        ChatRequest.model_validate({"messages": [{"role": "user", "content": "hi"}], **body})


def test_right_json_types() -> None:
    assert type_error({"max_tokens": 8, "temperature": 1, "top_p": 0.5, "stream": False, "seed": None}) is None


def test_key_files_are_owner_only(tmp_path: Path) -> None:
    key = tmp_path / "k"
    write_key_file(key, "s3cret")
    assert key.stat().st_mode & 0o777 == 0o600 and read_key_file(key) == "s3cret"
    key.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        read_key_file(key)
    write_key_file(key, "again")  # an existing file is made owner-only again
    assert key.stat().st_mode & 0o777 == 0o600
    with pytest.raises(KeyFileError, match="cannot read"):
        read_key_file(tmp_path / "missing")
    assert find_key(None, "HEARTH_TEST_KEY", {"HEARTH_TEST_KEY": "env"}) == "env"
    assert find_key(key, "HEARTH_TEST_KEY", {"HEARTH_TEST_KEY": "env"}) == "again"
    assert find_key(None, "HEARTH_TEST_KEY", {}) is None
    assert os.environ.get("HEARTH_TEST_KEY") is None


def test_presented_keys() -> None:
    assert presented_key("Bearer abc", None) == "abc"
    assert presented_key("bearer  abc ", None) == "abc"
    assert presented_key(None, "abc") == "abc"  # Anthropic's SDK
    assert presented_key("Basic abc", None) is None
    assert key_matches("abc", "abc") and not key_matches("abd", "abc") and not key_matches(None, "abc")


@pytest.mark.parametrize(
    "url",
    [
        "http://user:pw@127.0.0.1:8000",
        "http://user@127.0.0.1:8000",
        "ftp://127.0.0.1",
        "http://127.0.0.1:99999",
        "http://127.0.0.1:8000/?q=1",
    ],
)
def test_registration_refuses_odd_urls(url: str) -> None:
    with pytest.raises(ValidationError):
        Registration(name="a", url=url, models=["m"])


def test_registration_body_and_one_line_errors() -> None:
    assert registration("a", "http://127.0.0.1:1/", "qwen", ["m", "m"]) == {
        "name": "a",
        "url": "http://127.0.0.1:1",
        "model_type": "qwen",
        "models": ["m"],
        "weight": 1.0,
    }
    with pytest.raises(ValidationError) as err:
        Registration.model_validate({"name": "a", "url": "http://h", "models": ["m"], "weight": 0})
    assert first_error(err.value) == "weight: Input should be greater than 0"
    assert error_body("m", "t") == {"error": {"message": "m", "type": "t", "param": None, "code": None}}
