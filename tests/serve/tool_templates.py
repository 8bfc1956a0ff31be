"""Chat templates with tools, written for hearth's tests in the style of each family (the real ones, when
llama-cpp-python's sdist is at hand, come from its vendor/llama.cpp/models/templates: `shipped_templates`)."""

from __future__ import annotations

from pathlib import Path

# Llama 3.1: tools as JSON in the first user turn, a call as {"name", "parameters"}, results as ipython turns.
LLAMA3 = """{{- bos_token }}
{%- if messages[0]['role'] == 'system' %}{%- set system = messages[0]['content'] | trim %}{%- set messages = messages[1:] %}
{%- else %}{%- set system = '' %}{%- endif %}
{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}
{%- if tools is not none %}{{- 'Environment: ipython\\n' }}{%- endif %}
{{- system + '<|eot_id|>' }}
{%- if tools is not none %}
{%- set first = messages[0]['content'] | trim %}{%- set messages = messages[1:] %}
{{- '<|start_header_id|>user<|end_header_id|>\\n\\nGiven the following functions, respond with a JSON for a function call.\\n\\nRespond in the format {"name": function name, "parameters": dictionary of argument name and its value}.\\n\\n' }}
{%- for t in tools %}{{- t | tojson(indent=4) + '\\n\\n' }}{%- endfor %}
{{- first + '<|eot_id|>' }}
{%- endif %}
{%- for message in messages %}
{%- if 'tool_calls' in message %}
{%- set call = message.tool_calls[0].function %}
{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n{"name": "' + call.name + '", "parameters": ' + call.arguments | tojson + '}<|eot_id|>' }}
{%- elif message.role == 'tool' %}
{{- '<|start_header_id|>ipython<|end_header_id|>\\n\\n' + message.content + '<|eot_id|>' }}
{%- else %}
{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"""

# Qwen 2.5 / 3 (Hermes): tools in the system turn, <tool_call> blocks, <tool_response> in user turns, the
# reasoning of turns after the last user query kept, enable_thinking.
QWEN = """{%- if tools %}
{{- '<|im_start|>system\\n' }}{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}
{{- '# Tools\\n\\n<tools>' }}{%- for tool in tools %}{{- '\\n' + tool | tojson }}{%- endfor %}
{{- '\\n</tools>\\n\\nReturn <tool_call>\\n{"name": <function-name>, "arguments": <args-json-object>}\\n</tool_call><|im_end|>\\n' }}
{%- elif messages[0].role == 'system' %}{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- set ns = namespace(last_query=messages|length - 1, multi=true) %}
{%- for m in messages[::-1] %}{%- set i = (messages|length - 1) - loop.index0 %}
{%- if ns.multi and m.role == 'user' %}{%- set ns.multi = false %}{%- set ns.last_query = i %}{%- endif %}
{%- endfor %}
{%- for message in messages %}
{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
{%- elif message.role == 'assistant' %}
{%- set reasoning = message.reasoning_content if message.reasoning_content is string else '' %}
{%- if loop.index0 > ns.last_query and reasoning %}
{{- '<|im_start|>assistant\\n<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n' + message.content }}
{%- else %}{{- '<|im_start|>assistant\\n' + message.content }}{%- endif %}
{%- for tc in message.tool_calls or [] %}
{%- if (loop.first and message.content) or not loop.first %}{{- '\\n' }}{%- endif %}
{%- set tc = tc.function if tc.function else tc %}
{{- '<tool_call>\\n{"name": "' + tc.name + '", "arguments": ' + (tc.arguments if tc.arguments is string else tc.arguments | tojson) + '}\\n</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\\n' }}
{%- elif message.role == 'tool' %}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}
{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}
{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}"""

# Mistral 7B v0.3 / Nemo: [AVAILABLE_TOOLS] before the last user turn, [TOOL_CALLS][...] with 9-character ids.
MISTRAL = """{{- bos_token }}
{%- set user_messages = messages | selectattr('role', 'equalto', 'user') | list %}
{%- for message in messages %}
{%- if message.role == 'user' %}
{%- if tools is not none and tools and message == user_messages[-1] %}{{- '[AVAILABLE_TOOLS]' + tools | tojson + '[/AVAILABLE_TOOLS]' }}{%- endif %}
{{- '[INST]' + message.content + '[/INST]' }}
{%- elif message.tool_calls is defined and message.tool_calls is not none %}
{{- '[TOOL_CALLS][' }}
{%- for tc in message.tool_calls %}
{%- if tc.id | length != 9 %}{{- raise_exception('Tool call IDs should be alphanumeric strings with length 9!') }}{%- endif %}
{{- '{"name": "' + tc.function.name + '", "arguments": ' + tc.function.arguments | tojson + ', "id": "' + tc.id + '"}' }}
{%- if not loop.last %}{{- ', ' }}{%- endif %}
{%- endfor %}
{{- ']' + eos_token }}
{%- elif message.role == 'assistant' %}{{- message.content + eos_token }}
{%- elif message.role == 'tool' %}{{- '[TOOL_RESULTS]{"content": ' + message.content | tojson + ', "call_id": "' + message.tool_call_id + '"}[/TOOL_RESULTS]' }}
{%- elif message.role == 'system' %}{{- '[SYSTEM_PROMPT]' + message.content + '[/SYSTEM_PROMPT]' }}
{%- endif %}
{%- endfor %}"""

# Mistral Small 3.2 / Devstral: [TOOL_CALLS]NAME[CALL_ID]ID[ARGS]{...}.
MISTRAL_ARGS = """{{- bos_token }}
{%- if messages[0].role == 'system' %}{{- '[SYSTEM_PROMPT]' + messages[0].content + '[/SYSTEM_PROMPT]' }}{%- set messages = messages[1:] %}{%- endif %}
{%- if tools %}{{- '[AVAILABLE_TOOLS]' + tools | tojson + '[/AVAILABLE_TOOLS]' }}{%- endif %}
{%- for message in messages %}
{%- if message.role == 'user' %}{{- '[INST]' + message.content + '[/INST]' }}
{%- elif message.role == 'assistant' and message.get('tool_calls') %}
{%- for tc in message.tool_calls %}{{- '[TOOL_CALLS]' + tc.function.name + '[CALL_ID]' + tc.id + '[ARGS]' + tc.function.arguments | tojson }}{%- endfor %}
{{- eos_token }}
{%- elif message.role == 'assistant' %}{{- message.content + eos_token }}
{%- elif message.role == 'tool' %}{{- '[TOOL_RESULTS]' + message.tool_call_id + '[TOOL_CONTENT]' + message.content + '[/TOOL_RESULTS]' }}
{%- endif %}
{%- endfor %}"""

# gpt-oss harmony: tools in the developer message, calls addressed to=functions.NAME, results from the tool,
# the analysis of a call turn kept until a final answer follows (read from `thinking`).
HARMONY = """{{- '<|start|>system<|message|>Reasoning: ' + (reasoning_effort if reasoning_effort is defined else 'medium') + '\\n\\n# Valid channels: analysis, commentary, final.' }}
{%- if tools %}{{- "\\nCalls to these tools must go to the commentary channel: 'functions'." }}{%- endif %}
{{- '<|end|>' }}
{%- if messages[0].role in ['system', 'developer'] %}{%- set dev = messages[0].content %}{%- set loop_messages = messages[1:] %}
{%- else %}{%- set dev = '' %}{%- set loop_messages = messages %}{%- endif %}
{%- if dev or tools %}{{- '<|start|>developer<|message|>' }}
{%- if dev %}{{- '# Instructions\\n\\n' + dev + '\\n\\n' }}{%- endif %}
{%- if tools %}{{- '# Tools\\n\\nnamespace functions {\\n' }}
{%- for t in tools %}{{- '// ' + (t.function.description or '') + '\\ntype ' + t.function.name + ' = (_: ' + t.function.parameters | tojson + ') => any;\\n' }}{%- endfor %}
{{- '} // namespace functions' }}{%- endif %}
{{- '<|end|>' }}{%- endif %}
{%- set last = namespace(name=none) %}
{%- for message in loop_messages %}
{%- if message.role == 'assistant' and 'tool_calls' in message %}
{%- set later = namespace(final=false) %}
{%- for m in loop_messages[loop.index:] %}{%- if m.role == 'assistant' and 'tool_calls' not in m %}{%- set later.final = true %}{%- endif %}{%- endfor %}
{%- if message.thinking and not later.final %}{{- '<|start|>assistant<|channel|>analysis<|message|>' + message.thinking + '<|end|>' }}{%- endif %}
{%- set call = message.tool_calls[0].function %}
{{- '<|start|>assistant to=functions.' + call.name + '<|channel|>commentary json<|message|>' + call.arguments | tojson + '<|call|>' }}
{%- set last.name = call.name %}
{%- elif message.role == 'assistant' %}{{- '<|start|>assistant<|channel|>final<|message|>' + message.content + '<|end|>' }}
{%- elif message.role == 'tool' %}
{%- if last.name is none %}{{- raise_exception('a tool message without an earlier call') }}{%- endif %}
{{- '<|start|>functions.' + last.name + ' to=assistant<|channel|>commentary<|message|>' + message.content | tojson + '<|end|>' }}
{%- elif message.role == 'user' %}{{- '<|start|>user<|message|>' + message.content + '<|end|>' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|start|>assistant{%- endif %}"""

# IBM Granite 3.x: an available_tools turn, calls as <|tool_call|>[...], results in tool_response turns.
GRANITE = """{%- if messages[0].role == 'system' %}{%- set system = messages[0].content %}{%- set loop_messages = messages[1:] %}
{%- else %}{%- set system = 'You are Granite.' %}{%- set loop_messages = messages %}{%- endif %}
{%- if tools %}{%- set system = system + ' When a tool is required, respond only with <|tool_call|> followed by a JSON list of tools used.' %}{%- endif %}
{{- '<|start_of_role|>system<|end_of_role|>' + system + '<|end_of_text|>\\n' }}
{%- if tools %}{{- '<|start_of_role|>available_tools<|end_of_role|>' + tools | tojson(indent=4) + '<|end_of_text|>\\n' }}{%- endif %}
{%- for message in loop_messages %}
{%- if message.role == 'assistant' and message.tool_calls %}
{{- '<|start_of_role|>assistant<|end_of_role|><|tool_call|>' + message.tool_calls | map(attribute='function') | list | tojson + '<|end_of_text|>\\n' }}
{%- elif message.role == 'tool' %}{{- '<|start_of_role|>tool_response<|end_of_role|>' + message.content + '<|end_of_text|>\\n' }}
{%- else %}{{- '<|start_of_role|>' + message.role + '<|end_of_role|>' + message.content + '<|end_of_text|>\\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|start_of_role|>assistant<|end_of_role|>' }}{%- endif %}"""

STYLE_TEMPLATES = {
    "llama3": LLAMA3,
    "qwen": QWEN,
    "mistral": MISTRAL,
    "mistral-args": MISTRAL_ARGS,
    "harmony": HARMONY,
    "granite": GRANITE,
}

# Real templates from llama.cpp's collection, and the format each one speaks.
SHIPPED = {
    "Qwen-Qwen3-0.6B.jinja": "hermes",
    "Qwen-Qwen2.5-7B-Instruct.jinja": "hermes",
    "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja": "hermes",
    "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja": "hermes",
    "meta-llama-Llama-3.1-8B-Instruct.jinja": "llama3",
    "meta-llama-Llama-3.2-3B-Instruct.jinja": "llama3",
    "meta-llama-Llama-3.3-70B-Instruct.jinja": "llama3",
    "mistralai-Mistral-Nemo-Instruct-2407.jinja": "mistral",
    "Mistral-Small-3.2-24B-Instruct-2506.jinja": "mistral-args",
    "unsloth-mistral-Devstral-Small-2507.jinja": "mistral-args",
    "openai-gpt-oss-120b.jinja": "harmony",
    "ibm-granite-granite-3.3-2B-Instruct.jinja": "granite",
    "ibm-granite-granite-4.0.jinja": "hermes",
    "ibm-granite-granite-4.1.jinja": "hermes",
    "Qwen-QwQ-32B.jinja": "hermes",
    "Bielik-11B-v3.0-Instruct.jinja": "hermes",
    # GLM and Ling: their instructions' `<tool_call>{function-name}` once passed for Hermes; their calls are glm
    "GLM-4.6.jinja": "glm",
    "GLM-4.7-Flash.jinja": "glm",
    "MiMo-VL.jinja": "hermes",
    "Reka-Edge.jinja": "hermes",
    "inclusionai-ling-3.0-flash.jinja": "glm",
    "mistralai-Ministral-3-14B-Reasoning-2512.jinja": "mistral-args",
    "Qwen3-Coder.jinja": "xml",
    "Qwen3.5-4B.jinja": "xml",
    "NVIDIA-Nemotron-3-Nano-30B-A3B-BF16.jinja": "xml",
    "StepFun3.5-Flash.jinja": "xml",
    "ByteDance-Seed-OSS.jinja": "seed-xml",
    "NVIDIA-Nemotron-Nano-v2.jinja": "nemotron",
    "LFM2.5-8B-A1B.jinja": "pythonic",
    "CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja": "cohere",
    "Cohere2MoE.jinja": "cohere",
    "meetkai-functionary-medium-v3.1.jinja": "functionary",
    "Apriel-1.6-15b-Thinker-fixed.jinja": "apriel",
    "unsloth-Apriel-1.5.jinja": "apriel",
    "Spark2.5.jinja": "glm",
    "poolside-Laguna-S-2.1.jinja": "glm",
    "poolside-Laguna-XS-2.1.jinja": "glm",
    "poolside-Laguna-XS.2.jinja": "glm",
    "openbmb-MiniCPM5-1B.jinja": "minicpm",
    "tencent-Hy3.jinja": "hy3",
    "upstage-Solar-Open-100B.jinja": "solar",
    "Apertus-8B-Instruct.jinja": "apertus",
    "GigaChat3-10B-A1.8B.jinja": "gigachat",
    "GigaChat3.1-10B-A1.8B.jinja": "gigachat",
    "muse-glimmer.jinja": "atem",
    "google-gemma-4-31B-it.jinja": "gemma",
    "google-gemma-4-31B-it-interleaved.jinja": "gemma",
    "deepseek-ai-DeepSeek-V3.2.jinja": "deepseek-v3.2",
    "deepseek-ai-DeepSeek-V4.jinja": "deepseek-v4",
    "deepseek-ai-DeepSeek-V4-Flash-0731.jinja": "deepseek-v4",
    "MiniMax-M2.jinja": "minimax-xml",
    "moonshotai-Kimi-K2.jinja": "kimi",
    "MiniMax-M1.jinja": "minimax-json",
    "MiniMax-M3.jinja": "minimax-tree",
    "Kimi-K3.jinja": "kimi-k3",
}
# The reasoning_effort a shipped template gets for our default level, where it names its own levels.
SHIPPED_LEVELS = {"tencent-Hy3.jinja": "no_think"}

# Real templates that list the tools but write no calls (the model's own text carries them): the format, and the
# template of the family that does write calls, whose text for a call turn is the oracle for ours.
SHIPPED_CALLS_IN_TEXT = {
    "LFM2-8B-A1B.jinja": ("pythonic", "LFM2.5-8B-A1B.jinja"),
    "LFM2.5-Instruct.jinja": ("pythonic", "LFM2.5-8B-A1B.jinja"),
}

# Real templates that write a history's calls in their model's format but never show the model its tools: they
# keep the generic format (the tool list and call format taught in the system message).
SHIPPED_WITHOUT_TOOLS = (
    "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja",
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
    "HuggingFaceTB-SmolLM3-3B.jinja",
)

# Real templates that transformers cannot render with tools or with a call in the history, and why; hearth, whose
# Jinja sandbox is transformers', gives them the generic format (the tools taught in the system message).
SHIPPED_UNRENDERABLE = {
    "llama-cpp-deepseek-r1.jinja": "`tools | map(attribute='function') | tojson` hands tojson a generator (TypeError)",
    "Kimi-K2-Instruct.jinja": "queues call ids with `list.append`/`pop`, which the immutable sandbox refuses",
    "Kimi-K2-Thinking.jinja": "queues call ids with `list.append`/`pop`, which the immutable sandbox refuses",
}


# Real templates with tools whose format is not built, and why: the conversation transformers fails on (FIRST_TURN,
# ROUND_TRIP) and the error it names, then the reason. They keep the generic format.
SHIPPED_SKIPPED = {
    "fireworks-ai-llama-3-firefunction-v2.jinja": (
        "FIRST_TURN",
        "'functions' is undefined",
        "reads its tools from `functions` and `datetime`, variables transformers never passes: no conversation renders"
        " (hearth refuses to load it, naming the variable)",
    ),
    "meetkai-functionary-medium-v3.2.jinja": (
        "ROUND_TRIP",
        "can only concatenate str",
        "joins a call's arguments to text as a string, where transformers passes an object: no history with a call"
        " renders, so its `>>>NAME\\n{...}` calls cannot be written back",
    ),
    "CohereForAI-c4ai-command-r-plus-tool_use.jinja": (
        "FIRST_TURN",
        "has no attribute 'description'",
        "needs a description on every parameter, and its protocol is two passes (an `Action:` list that answers"
        " through a `directly-answer` pseudo-tool, then a grounded answer), which one completion does not carry",
    ),
}


def shipped_templates() -> Path:
    """llama.cpp's collection of real chat templates, from the pinned llama-cpp-python sdist
    (testkit/fixtures/llama_sdist.py; raises SdistUnavailable saying why when it cannot be had)."""
    from testkit.fixtures.llama_sdist import llama_cpp_source

    return llama_cpp_source() / "models" / "templates"
