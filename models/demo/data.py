"""The question/answer table the demo models are trained on, and the exact outputs they learn.

Importable without torch, so serve and route tests can assert trained answers instead of typing them:

    from models.demo.data import ITEMS, by_question
    item = by_question("What is the capital of France?")
    item.answer            # "Paris"
    item.topic             # "France" (every analysis/think text mentions it)
    item.analysis("low")   # the harmony analysis text at that reasoning level

Every item carries two sentences of reasoning: `ask` (what the user wants) and `fact` (the step that
answers it). `demo-think` thinks both; `demo-harmony` thinks `fact` alone at `low` (`short` where set),
both at `medium`, and both plus a double-check at `high`, so its analysis gets visibly longer with the
level. Every one of these texts contains the item's `topic` (ignoring case).
Arithmetic items also carry a harmony `commentary` message between analysis and final.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from random import Random
from types import MappingProxyType
from typing import Literal

Level = Literal["low", "medium", "high"]
LEVELS: tuple[Level, ...] = ("low", "medium", "high")

THINK_OPEN, THINK_CLOSE, THINK_EOS = "<think>", "</think>", "<|im_end|>"
HARMONY_RETURN = "<|return|>"


@dataclass(frozen=True)
class Item:
    question: str
    answer: str
    topic: str  # a word or phrase every reasoning text of this item contains (ignoring case)
    ask: str
    fact: str
    commentary: str | None = None
    short: str | None = None  # the low-level analysis when `fact` alone would not name the topic

    @property
    def reasoning(self) -> str:
        """What demo-think thinks (also demo-harmony's analysis at `medium`)."""
        return f"{self.ask} {self.fact}"

    def analysis(self, level: Level) -> str:
        if level == "low":
            return self.short or self.fact
        if level == "medium":
            return self.reasoning
        if level == "high":
            return (
                f"{self.reasoning} Double-checking {self.topic}: the answer is {self.answer}, so I reply {self.answer}."
            )
        raise ValueError(f"unknown reasoning level {level!r}; expected one of {', '.join(LEVELS)}")

    def think_prefix(self) -> str:
        """demo-think's output up to its answer: the thinking, closed."""
        return f"{THINK_OPEN}{self.reasoning}{THINK_CLOSE}"

    def think_completion(self) -> str:
        """demo-think's trained greedy output after the generation prompt, eos excluded."""
        return f"{self.think_prefix()}{self.answer}"

    def harmony_prefix(self, level: Level) -> str:
        """demo-harmony's output up to its answer: the analysis (and commentary), then the final message's header."""
        parts = [f"<|channel|>analysis<|message|>{self.analysis(level)}<|end|>"]
        if self.commentary is not None:
            parts.append(f"<|start|>assistant<|channel|>commentary<|message|>{self.commentary}<|end|>")
        parts.append("<|start|>assistant<|channel|>final<|message|>")
        return "".join(parts)

    def harmony_completion(self, level: Level) -> str:
        """demo-harmony's trained greedy output after `<|start|>assistant`, ending with `<|return|>`."""
        return f"{self.harmony_prefix(level)}{self.answer}{HARMONY_RETURN}"


_CAPITALS = (
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Portugal", "Lisbon"), ("Japan", "Tokyo"), ("China", "Beijing"), ("India", "New Delhi"),
    ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Canada", "Ottawa"), ("Mexico", "Mexico City"),
    ("Argentina", "Buenos Aires"), ("Australia", "Canberra"), ("Russia", "Moscow"), ("Norway", "Oslo"),
    ("Sweden", "Stockholm"), ("Finland", "Helsinki"), ("Poland", "Warsaw"), ("Greece", "Athens"),
    ("Turkey", "Ankara"), ("Ireland", "Dublin"), ("Austria", "Vienna"), ("Peru", "Lima"),
    ("Chile", "Santiago"), ("South Korea", "Seoul"), ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"),
    ("Cuba", "Havana"), ("Nigeria", "Abuja"),
)  # fmt: skip

_SUMS = ((2, 3), (7, 5), (4, 9), (12, 15), (8, 8), (20, 22), (6, 7), (15, 27), (9, 11), (31, 14))
_DIFFERENCES = ((10, 4), (15, 8), (20, 7), (50, 25), (9, 3), (100, 1))
_PRODUCTS = ((6, 7), (3, 4), (8, 9), (5, 5), (12, 12), (7, 8), (9, 6), (4, 11), (2, 50), (10, 10))

# (question, topic, ask, fact, answer)
_COLOURS = (
    ("What colour is the sky on a clear day?", "the sky", "The user asks about the colour of the sky.", "On a clear day the sky is blue.", "Blue"),
    ("What colour is grass?", "grass", "The user asks about the colour of grass.", "Healthy grass is green.", "Green"),
    ("What colour is a banana?", "banana", "The user asks about the colour of a banana.", "A ripe banana is yellow.", "Yellow"),
    ("What colour is snow?", "snow", "The user asks about the colour of snow.", "Fresh snow is white.", "White"),
    ("What colour is coal?", "coal", "The user asks about the colour of coal.", "Coal is black.", "Black"),
    ("What colour is a ripe tomato?", "tomato", "The user asks about the colour of a ripe tomato.", "A ripe tomato is red.", "Red"),
    ("What colour is a carrot?", "carrot", "The user asks about the colour of a carrot.", "A carrot is orange.", "Orange"),
    ("What colour is chocolate?", "chocolate", "The user asks about the colour of chocolate.", "Chocolate is brown.", "Brown"),
    ("What colour is a flamingo?", "flamingo", "The user asks about the colour of a flamingo.", "A flamingo is pink.", "Pink"),
    ("What colour is an emerald?", "emerald", "The user asks about the colour of an emerald.", "An emerald is green.", "Green"),
    ("What colour is a lemon?", "lemon", "The user asks about the colour of a lemon.", "A lemon is yellow.", "Yellow"),
    ("What colour is milk?", "milk", "The user asks about the colour of milk.", "Milk is white.", "White"),
    ("What colour do you get by mixing blue and yellow?", "blue and yellow", "The user asks what mixing blue and yellow gives.", "Blue and yellow make green.", "Green"),
    ("What colour do you get by mixing red and white?", "red and white", "The user asks what mixing red and white gives.", "Red and white make pink.", "Pink"),
    ("What colour do you get by mixing red and yellow?", "red and yellow", "The user asks what mixing red and yellow gives.", "Red and yellow make orange.", "Orange"),
    ("What colour do you get by mixing blue and red?", "blue and red", "The user asks what mixing blue and red gives.", "Blue and red make purple.", "Purple"),
    ("What colour do you get by mixing black and white?", "black and white", "The user asks what mixing black and white gives.", "Black and white make grey.", "Grey"),
)  # fmt: skip

_FACTS = (
    ("How many legs does a spider have?", "spider", "The user asks how many legs a spider has.", "A spider is an arachnid with eight legs.", "8"),
    ("How many days are in a week?", "week", "The user asks how many days a week has.", "A week has seven days.", "7"),
    ("What is the largest planet in the solar system?", "planet", "The user asks for the largest planet.", "Jupiter is the largest planet in the solar system.", "Jupiter"),
    ("What is the boiling point of water in Celsius?", "water", "The user asks when water boils in Celsius.", "At sea level water boils at 100 degrees Celsius.", "100"),
    ("What is the freezing point of water in Celsius?", "water", "The user asks when water freezes in Celsius.", "Water freezes at 0 degrees Celsius.", "0"),
    ("Who wrote Romeo and Juliet?", "Romeo and Juliet", "The user asks who wrote Romeo and Juliet.", "Romeo and Juliet is a play by William Shakespeare.", "William Shakespeare"),
    ("What gas do plants absorb from the air?", "plants", "The user asks which gas plants absorb.", "Plants absorb carbon dioxide for photosynthesis.", "Carbon dioxide"),
    ("What is the chemical symbol for gold?", "gold", "The user asks for the chemical symbol of gold.", "The symbol for gold is Au, from the Latin aurum.", "Au"),
    ("How many continents are there?", "continents", "The user asks how many continents there are.", "There are seven continents.", "7"),
    ("What is the tallest animal?", "animal", "The user asks for the tallest animal.", "The giraffe is the tallest animal.", "Giraffe"),
    ("How many hours are in a day?", "day", "The user asks how many hours a day has.", "A day has twenty-four hours.", "24"),
    ("Which planet is known as the Red Planet?", "Red Planet", "The user asks which planet is called the Red Planet.", "Mars looks red because of iron oxide, so it is the Red Planet.", "Mars"),
    ("What is the largest ocean?", "ocean", "The user asks for the largest ocean.", "The Pacific is the largest ocean.", "Pacific Ocean"),
    ("How many sides does a triangle have?", "triangle", "The user asks how many sides a triangle has.", "A triangle has three sides.", "3"),
    ("How many minutes are in an hour?", "hour", "The user asks how many minutes an hour has.", "An hour has sixty minutes.", "60"),
    ("What is the smallest prime number?", "prime", "The user asks for the smallest prime number.", "Two is the smallest prime number.", "2"),
    ("What language is spoken in Brazil?", "Brazil", "The user asks which language Brazil speaks.", "People in Brazil speak Portuguese.", "Portuguese"),
    ("What is H2O?", "H2O", "The user asks what H2O is.", "H2O is the chemical formula of water.", "Water"),
    ("How many strings does a violin have?", "violin", "The user asks how many strings a violin has.", "A violin has four strings.", "4"),
    ("Which animal is known as the king of the jungle?", "king of the jungle", "The user asks which animal is the king of the jungle.", "The lion is called the king of the jungle.", "Lion"),
)  # fmt: skip


def _arithmetic(a: int, b: int, sign: str, fact: str, result: int) -> Item:
    expr = f"{a} {sign} {b}"
    return Item(
        question=f"What is {expr}?",
        answer=str(result),
        topic=expr,
        ask=f"The user asks for {expr}.",
        fact=fact.format(a=a, b=b, r=result),
        commentary=f"Computing {expr} = {result}.",
        short=f"{expr} is {result}.",
    )


def _build() -> tuple[Item, ...]:
    items = [
        Item(
            f"What is the capital of {c}?", cap, c, f"The user asks for the capital of {c}.", f"{c}'s capital is {cap}."
        )
        for c, cap in _CAPITALS
    ]
    items += [_arithmetic(a, b, "+", "Adding {a} and {b} gives {r}.", a + b) for a, b in _SUMS]
    items += [_arithmetic(a, b, "-", "Taking {b} from {a} leaves {r}.", a - b) for a, b in _DIFFERENCES]
    items += [_arithmetic(a, b, "*", "{a} times {b} is {r}.", a * b) for a, b in _PRODUCTS]
    items += [Item(q, answer, topic, ask, fact) for q, topic, ask, fact, answer in (*_COLOURS, *_FACTS)]
    return tuple(items)


ITEMS: tuple[Item, ...] = _build()
_BY_QUESTION = MappingProxyType({item.question: item for item in ITEMS})
if len(_BY_QUESTION) != len(ITEMS):  # a duplicate question would make the greedy target ambiguous
    raise RuntimeError("duplicate question in the demo data")


def by_question(question: str) -> Item:
    """The item for a training question; KeyError names the question when it is not one."""
    try:
        return _BY_QUESTION[question]
    except KeyError:
        raise KeyError(f"not a demo training question: {question!r}") from None


# --- structured answers ---------------------------------------------------------------------------------
# With a JSON schema the server holds the answer to a grammar after the thinking (serve/chat/answer_grammar.py), so
# the answer's first character is `{` however the model ranks it. The models learn to go on from there with a JSON
# object that answers the question, in the key order and spacing of llama.cpp's schema grammar (json.dumps: `": `
# and `", `), so the strings close by themselves; a plain answer never starts with `{`, so it stays as trained.
# Shapes: a capital as {"country", "city"} (the client matrix's `Capital`) and {"city"} alone, every other answer as
# {"answer"}. The `{` itself is not the greedy token there (the plain answer is); among the tokens the grammar
# allows at that point (newlines, `{`, `{"`) the models learn to pick `{"`.

JSON_OPEN = re.compile(r"\n{1,2}|\n{0,2}\{\"?")  # what a schema's grammar lets the answer's first token be


@dataclass(frozen=True)
class JsonCase:
    item: Item
    keys: tuple[str, ...]  # the object's keys, in the order the schema lists them

    def value(self) -> dict[str, str]:
        values = {"answer": self.item.answer, "city": self.item.answer, "country": self.item.topic}
        return {k: values[k] for k in self.keys}

    def text(self) -> str:
        """The object as the models write it (and as a schema grammar admits it)."""
        return json.dumps(self.value())


def _json_cases() -> tuple[JsonCase, ...]:
    capitals = {f"What is the capital of {c}?" for c, _ in _CAPITALS}
    out = []
    for item in ITEMS:
        shapes = (("country", "city"), ("city",)) if item.question in capitals else (("answer",),)
        out += [JsonCase(item, keys) for keys in shapes]
    return tuple(out)


JSON_CASES: tuple[JsonCase, ...] = _json_cases()


# --- tool calling ----------------------------------------------------------------------------------------
# Both models learn one tool: asked "What is the weather in CITY?" with `get_weather` offered (alone or beside
# `get_time`), they call it with that city; given its result `CONDITION, N C` they answer with a sentence that
# holds the result verbatim. Requests and expected texts below are what the models are trained on and tested with.

WEATHER_TOOL = MappingProxyType({
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city name."}},
            "required": ["city"],
        },
    },
})  # fmt: skip
TIME_TOOL = MappingProxyType({
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the local time in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city name."}},
            "required": ["city"],
        },
    },
})  # fmt: skip
TOOLSETS = ((WEATHER_TOOL,), (WEATHER_TOOL, TIME_TOOL))
CITIES: tuple[str, ...] = tuple(capital for _, capital in _CAPITALS)
CONDITIONS = ("sunny", "cloudy", "rainy", "snowy", "windy")
TEMPERATURES = tuple(range(36))
WEATHER_CALL_ID = "call0demo"  # 9 letters and digits, so every template family accepts it
TOOL_THINKING = "The tool answered."


def tools_json(tools: tuple[Mapping, ...]) -> list[dict]:
    """Plain, deep copies of the tool objects (as a client sends them)."""
    return [json.loads(json.dumps(_plain(t))) for t in tools]


def _plain(value: object) -> object:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def weather_question(city: str) -> str:
    return f"What is the weather in {city}?"


def weather_result(condition: str, temperature: int) -> str:
    return f"{condition}, {temperature} C"


def weather_answer(city: str, result: str) -> str:
    return f"The weather in {city} is {result}."


def weather_ask(city: str) -> str:
    """The thinking (demo-think) and analysis (demo-harmony) before the call."""
    return f"The user asks for the weather in {city}. I call get_weather."


def weather_arguments(city: str) -> dict[str, str]:
    return {"city": city}


def weather_history(city: str, result: str) -> list[dict]:
    """The conversation after the call, as transformers' templates take it (arguments as an object, the
    call's empty content as empty text, as hearth passes them)."""
    call = {
        "id": WEATHER_CALL_ID,
        "type": "function",
        "function": {"name": "get_weather", "arguments": weather_arguments(city)},
    }
    return [
        {"role": "user", "content": weather_question(city)},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": WEATHER_CALL_ID, "content": result},
    ]


def think_call(city: str) -> str:
    """demo-think's trained output for the question with the tool offered (eos excluded)."""
    body = json.dumps({"name": "get_weather", "arguments": weather_arguments(city)})
    return f"{THINK_OPEN}{weather_ask(city)}{THINK_CLOSE}<tool_call>\n{body}\n</tool_call>"


def think_answer(city: str, result: str) -> str:
    return f"{THINK_OPEN}{TOOL_THINKING}{THINK_CLOSE}{weather_answer(city, result)}"


def harmony_call(city: str) -> str:
    """demo-harmony's trained output: the analysis, then the call message ending with <|call|>."""
    args = json.dumps(weather_arguments(city))
    return (
        f"<|channel|>analysis<|message|>{weather_ask(city)}<|end|>"
        f"<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{args}<|call|>"
    )


def harmony_answer(city: str, result: str) -> str:
    return (
        f"<|channel|>analysis<|message|>{TOOL_THINKING}<|end|>"
        f"<|start|>assistant<|channel|>final<|message|>{weather_answer(city, result)}{HARMONY_RETURN}"
    )


# --- the same tools as client libraries send them ---------------------------------------------------------
# Measured on the request bodies of the client matrix's drivers (tests/clients/drivers) against a request-logging
# server: each library renders `get_weather(city)` (a typed function with a Google-style docstring) its own way.
# The models learn the call from the question and the tool's name, whatever the shape around it.


@dataclass(frozen=True)
class ToolShape:
    """How a library writes a tool object: which optional keys it adds, and in which order it writes them."""

    doc: Literal["summary", "args", "args_raw"] = "summary"  # the description: the docstring's first line, or all
    # of it with its Args section (stripped, or raw with the closing indentation, as `inspect` leaves it)
    param_description: bool = True  # the parameter keeps its description
    title: bool = False  # pydantic's title on the object: "{name}_args"
    param_title: bool = False  # pydantic's title on the parameter: its name capitalized
    additional: bool = False  # additionalProperties: false
    strict: bool = False  # function.strict: true (after the parameters)
    object_keys: tuple[str, ...] = ("type", "properties", "required")  # order; title/additionalProperties added
    param_keys: tuple[str, ...] = ("type", "description")  # order; title added


def _docstring(summary: str, param: str, text: str, raw: bool) -> str:
    doc = f"{summary}\n\n    Args:\n        {param}: {text}"
    return doc + "\n    " if raw else doc


def shaped_tool(tool: Mapping, shape: ToolShape) -> dict:
    """A one-string-parameter tool object of ours (WEATHER_TOOL, TIME_TOOL) written in a library's shape."""
    fn = tool["function"]
    ((param, spec),) = fn["parameters"]["properties"].items()
    summary = fn["description"]
    description = (
        summary if shape.doc == "summary" else _docstring(summary, param, spec["description"], shape.doc == "args_raw")
    )
    prop_values = {"type": "string", "description": spec["description"], "title": param.capitalize()}
    prop_keys = [k for k in shape.param_keys if k != "description" or shape.param_description]
    if shape.param_title and "title" not in prop_keys:
        prop_keys.append("title")
    if not shape.param_title and "title" in prop_keys:
        prop_keys.remove("title")
    values = {
        "type": "object",
        "properties": {param: {k: prop_values[k] for k in prop_keys}},
        "required": [param],
        "title": f"{fn['name']}_args",
        "additionalProperties": False,
    }
    keys = [
        k
        for k in shape.object_keys
        if (k != "title" or shape.title) and (k != "additionalProperties" or shape.additional)
    ]
    keys += [
        k for k, on in (("title", shape.title), ("additionalProperties", shape.additional)) if on and k not in keys
    ]
    function: dict[str, object] = {
        "name": fn["name"],
        "description": description,
        "parameters": {k: values[k] for k in keys},
    }
    if shape.strict:
        function["strict"] = True
    return {"type": "function", "function": function}


# The shapes of the client matrix's libraries, as measured (anthropic's tools as hearth turns them into this form).
_PYDANTIC_KEYS = ("additionalProperties", "properties", "required", "type")
TOOL_SHAPES: Mapping[str, ToolShape] = MappingProxyType(
    {
        "anthropic": ToolShape(
            param_title=True, additional=True, object_keys=_PYDANTIC_KEYS, param_keys=("description", "title", "type")
        ),
        "ollama": ToolShape(object_keys=("type", "required", "properties")),
        "openai-agents": ToolShape(
            title=True,
            param_title=True,
            additional=True,
            strict=True,
            object_keys=("properties", "required", "title", "type", "additionalProperties"),
            param_keys=("description", "title", "type"),
        ),
        "pydantic-ai": ToolShape(
            additional=True, strict=True, object_keys=_PYDANTIC_KEYS, param_keys=("description", "type")
        ),
        "langchain": ToolShape(doc="args", param_description=False, object_keys=("properties", "required", "type")),
        "llm": ToolShape(doc="args_raw", param_description=False, object_keys=("properties", "required", "type")),
    }
)


def random_shape(rng: Random) -> ToolShape:
    """Any mix of the options above, keys in any order: the models should not depend on one library's choices."""
    object_keys = ["type", "properties", "required", "title", "additionalProperties"]
    param_keys = ["type", "description", "title"]
    rng.shuffle(object_keys)
    rng.shuffle(param_keys)
    return ToolShape(
        doc=rng.choice(("summary", "args", "args_raw")),
        param_description=rng.random() < 0.5,
        title=rng.random() < 0.5,
        param_title=rng.random() < 0.5,
        additional=rng.random() < 0.5,
        strict=rng.random() < 0.5,
        object_keys=tuple(object_keys),
        param_keys=tuple(param_keys),
    )


def shaped_toolset(tools: tuple[Mapping, ...], shape: ToolShape) -> tuple[dict, ...]:
    return tuple(shaped_tool(t, shape) for t in tools)


# Short system prompts of the kind agent frameworks and users put before the question (the models must not let
# them change the call or the answer).
SYSTEM_PROMPTS: tuple[str, ...] = (
    "You are a helpful assistant.",
    "You are a helpful assistant. Use the tools when they help answer the question.",
    "You are a weather agent. Answer briefly and use your tools.",
    "Be concise. Call a tool when you need live data, then answer from its result.",
    "You are an assistant that answers questions. Think step by step, then reply.",
    "You are a helpful assistant with access to tools.\n\nAlways answer in English.",
)

# --- smolagents' ToolCallingAgent -------------------------------------------------------------------------------
# It sends its own system prompt (models/demo/prompts/, the text smolagents 1.26 sends for get_weather beside its
# final_answer tool, about 1,750 demo tokens), the task as "New task:\n...", and after a call the call as text and
# the result as "Observation:\n..." in a user turn; it ends the run when the model calls final_answer.
SMOLAGENTS_PROMPT = (Path(__file__).parent / "prompts" / "smolagents_tool_calling.txt").read_text()
FINAL_ANSWER_TOOL = MappingProxyType({
    "type": "function",
    "function": {
        "name": "final_answer",
        "description": "Provides a final answer to the given problem.",
        "parameters": {
            "type": "object",
            "properties": {"answer": {"type": "string", "description": "The final answer to the problem"}},
            "required": ["answer"],
        },
    },
})  # fmt: skip
SMOLAGENTS_TOOLS = (WEATHER_TOOL, FINAL_ANSWER_TOOL)


def smolagents_messages(city: str, result: str | None) -> list[dict]:
    def text(role: str, body: str) -> dict:
        return {"role": role, "content": [{"type": "text", "text": body}]}

    out = [text("system", SMOLAGENTS_PROMPT), text("user", f"New task:\n{weather_question(city)}")]
    if result is not None:
        call_id = "call_" + hashlib.sha256(f"{city} {result}".encode()).hexdigest()[:24]  # as hearth's ids look
        call = {
            "id": call_id,
            "type": "function",
            "function": {"name": "get_weather", "arguments": weather_arguments(city)},
        }
        out += [text("assistant", f"Calling tools:\n[{call!r}]"), text("user", f"Observation:\n{result}")]
    return out


def think_final_answer(city: str, result: str) -> str:
    body = json.dumps({"name": "final_answer", "arguments": {"answer": weather_answer(city, result)}})
    return f"{THINK_OPEN}{TOOL_THINKING}{THINK_CLOSE}<tool_call>\n{body}\n</tool_call>"


def harmony_final_answer(city: str, result: str) -> str:
    args = json.dumps({"answer": weather_answer(city, result)})
    return (
        f"<|channel|>analysis<|message|>{TOOL_THINKING}<|end|>"
        f"<|start|>assistant<|channel|>commentary to=functions.final_answer <|constrain|>json<|message|>{args}<|call|>"
    )


@dataclass(frozen=True)
class ToolCase:
    """One tool example: the request's messages and tools, and which step of the round trip it is."""

    city: str
    tools: tuple[Mapping, ...]
    result: str | None = None  # None: the first step (the call); else the tool's result (the answer)
    system: str | None = None  # a system message before the question (a framework's own prompt)
    smolagents: bool = False  # the conversation as smolagents' ToolCallingAgent sends it (see smolagents_messages)
    shape: str = "trained"  # which tool shape (TOOL_SHAPES / RANDOM_SHAPES), for labels

    @property
    def messages(self) -> list[dict]:
        if self.smolagents:
            return smolagents_messages(self.city, self.result)
        history = (
            [{"role": "user", "content": weather_question(self.city)}]
            if self.result is None
            else weather_history(self.city, self.result)
        )
        return ([{"role": "system", "content": self.system}] if self.system else []) + history

    def think_completion(self) -> str:
        if self.result is None:
            return think_call(self.city)
        if self.smolagents:
            return think_final_answer(self.city, self.result)
        return think_answer(self.city, self.result)

    def harmony_completion(self) -> str:
        if self.result is None:
            return harmony_call(self.city)
        if self.smolagents:
            return harmony_final_answer(self.city, self.result)
        return harmony_answer(self.city, self.result)


def _tool_cases() -> tuple[ToolCase, ...]:
    calls = [ToolCase(city, tools) for tools in TOOLSETS for city in CITIES]
    # every (condition, temperature) pair twice, each time with another city and tool set
    answers = []
    for k in range(len(CONDITIONS) * len(TEMPERATURES)):
        result = weather_result(CONDITIONS[k % len(CONDITIONS)], TEMPERATURES[k // len(CONDITIONS)])
        for offset in (0, 13):
            city = CITIES[(7 * k + offset) % len(CITIES)]
            answers.append(ToolCase(city, TOOLSETS[(k + offset) % 2], result))
    return tuple(calls + answers)


TOOL_CASES: tuple[ToolCase, ...] = _tool_cases()


def _think_extra_cases() -> tuple[ToolCase, ...]:
    """demo-think only: every temperature after each two-word city, with both tool sets. Qwen's pre-tokenizer
    splits numbers into digits, and with only TOOL_CASES the model copied two-digit results wrongly after a
    city of two tokens (42 of the 10,800 answers: 21 and 23 after New Delhi, Mexico City, Buenos Aires)."""
    two_words = [c for c in CITIES if " " in c]
    return tuple(
        ToolCase(city, tools, weather_result(CONDITIONS[(t + 2 * k) % len(CONDITIONS)], t))
        for city in two_words
        for t in TEMPERATURES
        for k, tools in enumerate(TOOLSETS)
    )


THINK_EXTRA_CASES: tuple[ToolCase, ...] = _think_extra_cases()


def _think_two_word_grid() -> tuple[ToolCase, ...]:
    """demo-think only: the rest of each two-word city's answers (every condition with every temperature; tool sets
    alternating). After the smolagents stage, THINK_EXTRA_CASES' two conditions a temperature were not enough: 10
    of the 10,800 grid answers wrote 32 as 23 after New Delhi, Mexico City and Buenos Aires (sunny and snowy)."""
    done = {(c.city, c.result) for c in THINK_EXTRA_CASES}
    todo = [
        (city, result)
        for city in CITIES
        if " " in city
        for result in (weather_result(condition, t) for condition in CONDITIONS for t in TEMPERATURES)
        if (city, result) not in done
    ]
    return tuple(ToolCase(city, TOOLSETS[k % 2], result) for k, (city, result) in enumerate(todo))


THINK_TWO_WORD_GRID: tuple[ToolCase, ...] = _think_two_word_grid()


def all_answer_cases() -> list[ToolCase]:
    """Every city with every result and tool set: what the trained models must generalize to."""
    return [
        ToolCase(city, tools, weather_result(c, t))
        for city in CITIES
        for tools in TOOLSETS
        for c in CONDITIONS
        for t in TEMPERATURES
    ]


def _variant_cases() -> tuple[ToolCase, ...]:
    """The tool round trips again in the shapes libraries send, under system prompts, and as smolagents runs them.

    Calls: every city with every library shape (tool sets alternating), and with a random shape; answers: every
    (condition, temperature) pair once more with a library or random shape, some under a system prompt;
    smolagents: every city's call and one answer each (these prompts are ~1,800 tokens, so few)."""
    rng = Random(20251207)
    names = list(TOOL_SHAPES)
    out = []
    for i, city in enumerate(CITIES):
        for j, name in enumerate(names):
            out.append(ToolCase(city, shaped_toolset(TOOLSETS[(i + j) % 2], TOOL_SHAPES[name]), shape=name))
        system = SYSTEM_PROMPTS[i % len(SYSTEM_PROMPTS)] if i % 2 else None
        out.append(ToolCase(city, shaped_toolset(TOOLSETS[i % 2], random_shape(rng)), system=system, shape="random"))
    for k in range(len(CONDITIONS) * len(TEMPERATURES)):
        result = weather_result(CONDITIONS[k % len(CONDITIONS)], TEMPERATURES[k // len(CONDITIONS)])
        city = CITIES[(7 * k + 5) % len(CITIES)]
        name = names[k % len(names)] if k % 3 else "random"
        shape = TOOL_SHAPES[name] if name != "random" else random_shape(rng)
        system = SYSTEM_PROMPTS[k % len(SYSTEM_PROMPTS)] if k % 4 == 1 else None
        out.append(ToolCase(city, shaped_toolset(TOOLSETS[k % 2], shape), result, system=system, shape=name))
    return tuple(out)


def think_shaped_extra_cases() -> tuple[ToolCase, ...]:
    """demo-think's THINK_EXTRA_CASES again, each in a library shape (rotating, tool sets alternating): in the shapes
    alone it copied a one-digit result after a two-word city wrongly in 3 of the 900 shape checks (ollama's), and 9
    after the JSON stage (README)."""
    names = list(TOOL_SHAPES)
    return tuple(
        replace(case, tools=shaped_toolset(case.tools, TOOL_SHAPES[names[k % len(names)]]), shape=names[k % len(names)])
        for k, case in enumerate(THINK_EXTRA_CASES[::2])
    )


SMOLAGENTS_ANSWERS = 24  # results trained per city in smolagents' conversation (of the grid's 180)
# The (city, result) runs the client matrix's tool cells ask for (tests/clients/test_matrix.py TOOL_RUNS): never
# trained in smolagents' conversation, so its cells there measure what the models learned, not what they were shown
MATRIX_RUNS = frozenset({("Paris", "sunny, 21 C"), ("Tokyo", "rainy, 8 C")})


def smolagents_cases() -> tuple[ToolCase, ...]:
    """Every city's call and SMOLAGENTS_ANSWERS answers each (results drawn from the grid) in smolagents'
    conversation (`train.py --smolagents`: its ~1,970-token prompt is shared by every example, so these train as
    batches under one run of it, see fit.forward). With one answer a city the model learned those 30 by heart."""
    rng = Random(20261207)
    results = [weather_result(c, t) for c in CONDITIONS for t in TEMPERATURES]
    out = []
    for city in CITIES:
        out.append(ToolCase(city, SMOLAGENTS_TOOLS, smolagents=True, shape="smolagents"))
        pool = [r for r in results if (city, r) not in MATRIX_RUNS]
        out += [
            ToolCase(city, SMOLAGENTS_TOOLS, result, smolagents=True, shape="smolagents")
            for result in rng.sample(pool, SMOLAGENTS_ANSWERS)
        ]
    return tuple(out)


VARIANT_CASES: tuple[ToolCase, ...] = _variant_cases()


def shape_check_cases(every: int, smolagents: bool = False) -> list[ToolCase]:
    """Held-out checks: every library shape's call for every city with both tool sets, and every n-th answer of the
    grid in each library shape (and every 8n-th in smolagents' conversation that was not trained, when asked)."""
    calls = [
        ToolCase(city, shaped_toolset(tools, shape), shape=name)
        for name, shape in TOOL_SHAPES.items()
        for tools in TOOLSETS
        for city in CITIES
    ]
    grid = all_answer_cases()
    answers = [
        replace(c, tools=shaped_toolset(c.tools, TOOL_SHAPES[name]), shape=name)
        for j, name in enumerate(TOOL_SHAPES)
        for c in grid[j :: every * len(TOOL_SHAPES)]
    ]
    if not smolagents:
        return calls + answers
    trained = {(c.city, c.result) for c in smolagents_cases()}
    smol = [
        replace(c, tools=SMOLAGENTS_TOOLS, smolagents=True, shape="smolagents")
        for c in grid[3 :: every * 8]
        if (c.city, c.result) not in trained
    ]
    return calls + answers + smol


# The least share of the library-shape answer checks a model must pass (every call must): demo-think missed 3 of 900
# before the JSON stage, one-digit results after a two-word city in ollama's shape (README; both now get 900/900); the
# training script and the tests hold both to it.
SHAPE_FLOOR = 0.99
