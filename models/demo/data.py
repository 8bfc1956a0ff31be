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

import json
from dataclasses import dataclass
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

    def think_completion(self) -> str:
        """demo-think's trained greedy output after the generation prompt, eos excluded."""
        return f"{THINK_OPEN}{self.reasoning}{THINK_CLOSE}{self.answer}"

    def harmony_completion(self, level: Level) -> str:
        """demo-harmony's trained greedy output after `<|start|>assistant`, ending with `<|return|>`."""
        parts = [f"<|channel|>analysis<|message|>{self.analysis(level)}<|end|>"]
        if self.commentary is not None:
            parts.append(f"<|start|>assistant<|channel|>commentary<|message|>{self.commentary}<|end|>")
        parts.append(f"<|start|>assistant<|channel|>final<|message|>{self.answer}{HARMONY_RETURN}")
        return "".join(parts)


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


def tools_json(tools: tuple[MappingProxyType, ...]) -> list[dict]:
    """Plain, deep copies of the tool objects (as a client sends them)."""
    return [json.loads(json.dumps(_plain(t))) for t in tools]


def _plain(value: object) -> object:
    if isinstance(value, MappingProxyType | dict):
        return {k: _plain(v) for k, v in value.items()}
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


@dataclass(frozen=True)
class ToolCase:
    """One tool example: the request's messages and tools, and which step of the round trip it is."""

    city: str
    tools: tuple[MappingProxyType, ...]
    result: str | None = None  # None: the first step (the call); else the tool's result (the answer)

    @property
    def messages(self) -> list[dict]:
        if self.result is None:
            return [{"role": "user", "content": weather_question(self.city)}]
        return weather_history(self.city, self.result)

    def think_completion(self) -> str:
        return think_call(self.city) if self.result is None else think_answer(self.city, self.result)

    def harmony_completion(self) -> str:
        return harmony_call(self.city) if self.result is None else harmony_answer(self.city, self.result)


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


def all_answer_cases() -> list[ToolCase]:
    """Every city with every result and tool set: what the trained models must generalize to."""
    return [
        ToolCase(city, tools, weather_result(c, t))
        for city in CITIES
        for tools in TOOLSETS
        for c in CONDITIONS
        for t in TEMPERATURES
    ]
