"""Grammars for call formats whose values are not JSON: Gemma 4's object syntax and MiniMax-M3's nested elements.
Each offered tool's declared arguments in the order its template writes them (the required ones present), a
string, number, integer or boolean value held to its type, any other value the format's own free value."""

from __future__ import annotations

from typing import Any

from serve.chat.tools import gemma, minimax_tree
from serve.chat.tools.gbnf import declared, lit, offered, without
from serve.chat.tools.typed import schema_types

NUMBER = 'hearth-number ::= "-"? [0-9]+ ( "." [0-9]+ )? ( [eE] [-+]? [0-9]+ )?'
GEMMA_GENERIC = (
    'hearth-gemma-value ::= hearth-gemma-str | hearth-gemma-object | hearth-gemma-list | "true" | "false" | "None" '
    "| hearth-number",
    f"hearth-gemma-str ::= {lit(gemma.QUOTE)} hearth-gemma-text {lit(gemma.QUOTE)}",
    'hearth-gemma-object ::= "{" ( hearth-gemma-entry ( "," hearth-gemma-entry )* )? "}"',
    'hearth-gemma-entry ::= [a-zA-Z0-9_.$-]+ ":" hearth-gemma-value',
    'hearth-gemma-list ::= "[" ( hearth-gemma-value ( "," hearth-gemma-value )* )? "]"',
    NUMBER,
)


def gemma_rules(tools: list[dict[str, Any]], names: list[str]) -> list[str]:
    """Each offered tool's declared arguments in the order its template writes them (sorted by key), the required
    ones present; a string, number, integer or boolean argument held to its type, any other a Gemma value."""
    alts, rules = [], []
    for i, name, schema in offered(tools, names):
        props, required = declared(schema)
        keys = sorted(props)
        if not keys:
            alts.append(f"{lit(name)} hearth-gemma-object")
            continue
        n = len(keys)
        rest = [f"hearth-gemma-{i}-r{k}" if k < n else "" for k in range(n + 1)]  # entries k.., each after a comma
        first = [f"hearth-gemma-{i}-f{k}" if k < n else "" for k in range(n + 1)]  # the first entry is k or later
        for k, key in enumerate(keys):
            value = typed_value(props[key], "hearth-gemma-str", gemma.QUOTE, "hearth-gemma-value")
            entry = f"{lit(key + ':')} {value}"
            if key in required:
                rules.append(f'{rest[k]} ::= "," {entry} {rest[k + 1]}')
                rules.append(f"{first[k]} ::= {entry} {rest[k + 1]}")
            else:
                rules.append(f'{rest[k]} ::= ( "," {entry} )? {rest[k + 1]}')
                later = f" | {first[k + 1]}" if first[k + 1] else ""
                rules.append(f"{first[k]} ::= ( {entry} {rest[k + 1]}{later} )" + ("" if later else "?"))
        alts.append(f'{lit(name)} "{{" {first[0]} "}}"')
    return [f"hearth-call ::= {' | '.join(alts)}", *rules, *GEMMA_GENERIC, without("hearth-gemma-text", gemma.QUOTE)]


def typed_value(schema: Any, text: str, quote: str, other: str) -> str:
    """A value the format writes unquoted (or between `quote` marks, strings) held to a simple schema: a string's
    `text` rule or its enum, an integer, a number, a boolean; any other schema, the format's `other` rule."""
    types = schema_types(schema)
    if types == {"string"}:
        enum = schema.get("enum") if isinstance(schema, dict) else None
        if enum and all(isinstance(v, str) for v in enum):
            return "( " + " | ".join(lit(quote + v + quote) for v in enum) + " )"
        return text
    return {
        frozenset({"integer"}): '"-"? [0-9]+',
        frozenset({"number"}): "hearth-number",
        frozenset({"boolean"}): '( "true" | "false" )',
    }.get(frozenset(types), other)


def tree_rules(tools: list[dict[str, Any]], names: list[str]) -> list[str]:
    """MiniMax-M3: each offered tool's declared arguments as elements in their declared order (the required ones
    present), a simple value held to its type, any other a text or nested elements."""
    mark = minimax_tree.MARK
    alts, rules = [], []
    for i, name, schema in offered(tools, names):
        props, required = declared(schema)
        parts = []
        for key, prop in props.items():
            value = typed_value(prop, "hearth-tree-text", "", "hearth-tree-any")
            element = f"{lit(f'{mark}<{key}>')} {value} {lit(f'{mark}</{key}>')}"
            parts.append(element if key in required else f"( {element} )?")
        rules.append(f"hearth-tree-{i} ::= " + (" ".join(parts) if parts else "hearth-tree-element*"))
        invoke = lit(f'{mark}<{minimax_tree.INVOKE}{name}">')
        alts.append(f"{invoke} hearth-tree-{i} {lit(mark + '<' + minimax_tree.END_INVOKE + '>' + chr(10))}")
    return [
        f"hearth-call ::= {' | '.join(alts)}",
        *rules,
        f'hearth-tree-element ::= {lit(mark + "<")} hearth-tree-key ">" hearth-tree-any {lit(mark + "</")} hearth-tree-key ">"',
        "hearth-tree-key ::= [a-zA-Z0-9_.-]+",
        "hearth-tree-any ::= hearth-tree-text | hearth-tree-element+",
        NUMBER,
        without("hearth-tree-text", mark[1:]),  # the mark's first character occurs in it twice
    ]
