"""serve/chat/schema_limits: each limit just under passes, just over is refused naming it; real schemas pass."""

from __future__ import annotations

from typing import Literal

import pydantic
import pytest

from serve.chat import schema_limits as sl

WHERE = "response_format.json_schema"


def refused(schema: dict, *words: str) -> str:
    with pytest.raises(sl.SchemaTooComplex) as err:
        sl.check_schema(schema, WHERE)
    message = str(err.value)
    assert message.startswith(WHERE), message
    for word in words:
        assert word in message, message
    return message


def arr(**kw: object) -> dict:
    return {"type": "array", "items": {"type": "integer"}, **kw}


def string(**kw: object) -> dict:
    return {"type": "string", **kw}


def pattern(p: str) -> dict:
    return {"type": "string", "pattern": p}


# ------------------------------------------------------------------------------ the payloads that crashed or hung


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        (pattern("^a{1,30000}$"), ("{1,30000}", "1000")),  # SIGSEGV
        (arr(maxItems=100_000), ("maxItems 100000", "limit of 1000")),  # SIGSEGV
        (arr(maxItems=10_000_000), ("maxItems 10000000",)),  # a tool's: SIGSEGV
        (arr(minItems=100_000_000), ("minItems 100000000", "limit of 10000")),  # hang
        (string(maxLength=1_000_000_000), ("maxLength 1000000000",)),  # hang
        (pattern("^a{1,10000}$"), ("{1,10000}",)),  # NULL sampler
        ({"enum": [f"value-{i}" for i in range(10_000)]}, ("enum values 10000",)),  # over 7 s a token
    ],
)
def test_known_payloads_refused(schema, words):
    refused(schema, *words)


def test_message_shape():
    assert refused(arr(maxItems=100_000)) == f"{WHERE}: maxItems 100000 is over the limit of {sl.MAX_REPEAT_SPAN}"


# ------------------------------------------------------------------------------ each limit, at and past it

SPAN, MIN = sl.MAX_REPEAT_SPAN, sl.MAX_REPEAT_MIN


@pytest.mark.parametrize(
    ("make", "limit", "words"),
    [
        (lambda n: arr(maxItems=n), SPAN, "maxItems"),
        (lambda n: string(maxLength=n), SPAN, "maxLength"),
        (lambda n: arr(minItems=5, maxItems=n + 5), SPAN, "maxItems - minItems"),
        (lambda n: string(minLength=7, maxLength=n + 7), SPAN, "maxLength - minLength"),
        (lambda n: arr(minItems=n), MIN, "minItems"),
        (lambda n: string(minLength=n), MIN, "minLength"),
        (lambda n: pattern(f"^a{{0,{n}}}$"), SPAN, "span"),
        (lambda n: pattern(f"^[a-z]{{3,{n + 3}}}$"), SPAN, "span"),
        (lambda n: pattern(f"^a{{{n}}}$"), MIN, "minimum"),
        (lambda n: pattern(f"^(ab){{{n},}}$"), MIN, "minimum"),
        (lambda n: pattern(f"^a{{0,{n // 2}}}b{{0,{n - n // 2}}}$"), sl.MAX_PATTERN_SPAN, "sum of repetition spans"),
        (lambda n: pattern("^" + "a" * (n - 2) + "$"), sl.MAX_PATTERN_LENGTH, "pattern length"),
        (lambda n: {"enum": list(range(n))}, sl.MAX_ENUM_VALUES, "enum values"),
        (lambda n: {"anyOf": [{"type": "integer"}] * n}, sl.MAX_UNION_BRANCHES, "anyOf branches"),
        (lambda n: {"oneOf": [{"type": "integer"}] * n}, sl.MAX_UNION_BRANCHES, "oneOf branches"),
        (
            lambda n: {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(n)}},
            sl.MAX_OPTIONAL_PROPERTIES,
            "optional properties",
        ),
        (
            lambda n: {
                "type": "object",
                "properties": {f"p{i}": {"type": "integer"} for i in range(n)},
                "required": [f"p{i}" for i in range(n)],
            },
            sl.MAX_PROPERTIES,
            "properties",
        ),
        (
            lambda n: {"anyOf": [{"enum": list(range(64))}] * 4 + [{"enum": list(range(n - 256))}]},
            sl.MAX_ALTERNATIVES,
            "alternatives",
        ),
    ],
)
def test_limit(make, limit, words):
    sl.check_schema(make(limit), WHERE)
    refused(make(limit + 1), words, f"limit of {limit}")


def test_nested_repetition_product():
    # ((a{100}){100}){100} is 10**6, at the limit; one more level is over it
    sl.check_pattern("^((a{100}){100}){100}$", "p")
    with pytest.raises(sl.SchemaTooComplex, match="product of nested repetitions 10000000 is"):
        sl.check_pattern("^(((a{10}){100}){100}){100}$", "p")
    # siblings do not multiply; a class, an escape or a literal brace is not a quantifier
    sl.check_pattern("^(a{1,900})(b{1000})[{]\\{x{,}$", "p")
    # a variable repetition inside a fixed one counts once per copy
    with pytest.raises(sl.SchemaTooComplex, match=r"variable-length repetitions .* 200 "):
        sl.check_pattern("^((a{1,100}){100}){2}$", "p")


def test_variable_length_repetitions_in_one_pattern():
    for ok in ("^.*.*.*$", "^[0-9]{5}(-[0-9]{4})?$", "^.?.?.?.?.?.?.?.?$", "^a{2,9}[b-c]+(x|y)*$"):
        sl.check_pattern(ok, "p")
    for bad, count in (("^(.*)(.*)(.*)(.*)$", 4), ("^a+b+c{2,}d{0,2}$", 4)):
        with pytest.raises(
            sl.SchemaTooComplex, match=rf"variable-length repetitions .* {count} is over the limit of 3"
        ):
            sl.check_pattern(bad, "p")


@pytest.mark.parametrize(
    "bad", ["^(.?.?.?)*$", "^(.{0,8}){3,}$", "^(.{0,16})+.?$", "^(.{0,300})*(x|yz)$", "^(x|yz){1}(.{1,})+$"]
)
def test_repeated_group_holding_a_variable_repetition(bad):
    # each ran past a 20 s deadline for 6 tokens
    with pytest.raises(sl.SchemaTooComplex, match="of a group holding a variable-length repetition"):
        sl.check_pattern(bad, "p")
    # a fixed count of such a group is copies, not a loop; a loop of fixed-length groups is fine
    sl.check_pattern("^([0-9]{1,3}[.]){3}$", "p")
    sl.check_pattern("^(ab[0-9]{2})*$", "p")


def test_alternatives_add_up_across_branches_and_refs():
    enum = {"enum": list(range(100))}
    sl.check_schema({"anyOf": [enum, enum, enum]}, WHERE)  # 300
    refused({"anyOf": [enum, enum, enum, {"anyOf": [enum]}]}, "alternatives alive at once", " 400 ")
    refs = {"$defs": {"E": enum}, "anyOf": [{"$ref": "#/$defs/E"}] * 4}
    refused(refs, "alternatives alive at once", " 400 ")


def test_depth_and_node_budget():
    deep: dict = {"type": "integer"}
    for _ in range(sl.MAX_DEPTH):
        deep = {"type": "array", "items": deep}
    sl.check_schema(deep, WHERE)
    refused({"type": "array", "items": deep}, "nesting depth")
    wide = {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(1000)}}
    wide["required"] = list(wide["properties"])
    many = {"$defs": {f"d{i}": wide for i in range(sl.MAX_NODES // 1000 + 1)}}
    refused(many, "subschema count")


def test_bounds_deep_inside_are_found_with_their_path():
    rows = {"type": "array", "items": {"anyOf": [{"type": "null"}, arr(maxItems=100_000)]}}
    refused(
        {"type": "object", "properties": {"rows": rows}}, f"{WHERE}.properties.rows.items.anyOf[1]: maxItems 100000"
    )
    refused({"$defs": {"x": string(pattern="^.{0,5000}$")}}, ".$defs.x.pattern: repetition {0,5000} span 5000")
    refused({"additionalProperties": arr(minItems=10**9)}, ".additionalProperties: minItems")
    refused({"prefixItems": [string(maxLength=10**6)]}, ".prefixItems[0]: maxLength")


def test_allof_refs_count_the_copied_properties():
    big = {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(100)}}
    big["required"] = list(big["properties"])
    sites = {f"o{i}": {"allOf": [{"$ref": "#/$defs/Big"}]} for i in range(sl.MAX_NODES // 100 + 1)}
    refused({"$defs": {"Big": big}, "type": "object", "properties": sites}, "subschema count")


def test_odd_values_are_left_to_the_converter():
    for schema in ([], "x", {"maxItems": "many"}, {"maxItems": True}, {"enum": 3}, {"pattern": 5}, {"$ref": "x"}):
        sl.check_schema(schema, WHERE)
    refused(arr(maxItems=float("inf")), "maxItems")
    refused(arr(maxItems=1e9), "maxItems 1000000000")


# ------------------------------------------------------------------------------ ordinary schemas pass


class Address(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    street: str = pydantic.Field(max_length=200)
    city: str
    zip: str = pydantic.Field(pattern=r"^[0-9]{5}(-[0-9]{4})?$")
    country: Literal["US", "CA", "MX", "GB", "FR", "DE", "JP"] = "US"


class Person(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", title="A person")
    name: str = pydantic.Field(min_length=1, max_length=100)
    email: str = pydantic.Field(pattern=r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,190}\.[A-Za-z]{2,24}$")
    age: int | None = pydantic.Field(default=None, ge=0, le=150)
    tags: list[str] = pydantic.Field(default_factory=list, max_length=20)
    home: Address
    past: list[Address] = pydantic.Field(default_factory=list, max_length=10)
    friends: list[Person] = pydantic.Field(default_factory=list, max_length=5)  # recursive $ref


def test_pydantic_schemas_pass():
    schema = Person.model_json_schema()  # recursive: {"$ref": "#/$defs/Person", "$defs": {...}}
    person = schema["$defs"]["Person"]
    assert person["title"] == "A person" and person["additionalProperties"] is False
    sl.check_schema(schema, WHERE)
    sl.check_schema(Address.model_json_schema(), WHERE)


def test_tool_parameters_pass():
    weather = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "City name"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 14},
            "hours": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 24},
        },
        "required": ["city"],
        "additionalProperties": False,
    }
    sl.check_schema(weather, "tools.0.function.parameters")
    sl.check_schema({"type": "object"}, "tools.1.function.parameters")
    sl.check_schema({"type": ["string", "null"], "maxLength": 1000}, WHERE)


# ------------------------------------------------------------------------------ the grammar


def test_grammar_limits():
    ok = 'root ::= "{" space "}"\nspace ::= " "?\n'
    sl.check_grammar(ok, "tools")
    with pytest.raises(sl.SchemaTooComplex, match="tools: grammar size"):
        sl.check_grammar("root ::= " + '"a" ' * (sl.MAX_GRAMMAR_BYTES // 4 + 1), "tools")
    with pytest.raises(sl.SchemaTooComplex, match="grammar rules"):
        sl.check_grammar("".join(f"r{i} ::= [a]\n" for i in range(sl.MAX_GRAMMAR_RULES + 1)), "tools")
    n = sl.MAX_GRAMMAR_NESTING
    sl.check_grammar("root ::= " + '("a" ' * n + ")?" * n, "tools")
    with pytest.raises(sl.SchemaTooComplex, match=f"grammar nesting {n + 1} is over the limit of {n}"):
        sl.check_grammar("root ::= " + '("a" ' * (n + 1) + ")?" * (n + 1), "tools")


def test_grammar_nesting_skips_literals_classes_and_comments():
    assert sl.grammar_nesting('root ::= "((((" [(((] ("\\"(" x)  # (((((\n') == 1
    assert sl.grammar_nesting("a ::= ((b) (c (d)))\n") == 3
