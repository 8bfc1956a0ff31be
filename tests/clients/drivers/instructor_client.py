"""instructor (its own virtualenv: it pins an older openai and jiter): `from_openai` in its default mode
(a forced tool call) with `response_model=`. It has no tool loop of its own."""

from __future__ import annotations

import instructor
from _common import CAPITAL_QUESTION, Capital, main
from openai import OpenAI


def structured(model: str, base: str, seed: int) -> Capital:
    c = instructor.from_openai(OpenAI(base_url=base + "/v1", api_key="none", max_retries=0))
    return c.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": CAPITAL_QUESTION}],
        response_model=Capital,
        temperature=1.0,
        seed=seed,
        max_retries=0,
    )


if __name__ == "__main__":
    main(None, structured)
