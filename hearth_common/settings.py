"""Settings from one pydantic model: command-line flags, `HEARTH_<PROGRAM>_<FIELD>` environment variables and a
config file, layered: the command line over the environment over the file over the model's defaults.

Every simple field (text, number, path, choice, flag, comma-separated list) is
- a flag `--field-name` (plus the aliases its Option names: llama.cpp's spellings), and
- an environment variable, the program's prefix and the field's name in capitals (`HEARTH_SERVE_CTX_SIZE`).
An environment variable takes exactly what its flag takes (the same text, lists comma-separated); pydantic then
converts and checks both, and a bad value is one line naming where it came from (`--port`, `HEARTH_SERVE_PORT`,
`router.toml: port`). Fields that are lists of tables or mappings are set by the config file only.

Keys ("secrets") are never flags, since `ps` shows a command line to every user: a key comes from `--NAME-file`
(an owner-only file) or the environment variable, and `--NAME KEY` is refused in one line that names the two.
A layer that gives a key or its file replaces both from the layers under it.

We generate argparse ourselves rather than use pydantic-settings' CLI source: that one prints `(default: null)`
and type names as placeholders, takes lists as JSON, has no single-dash spellings such as `-ngl`, and cannot say
which layer a bad value came from.
"""

from __future__ import annotations

import argparse
import os
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, NoReturn, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from hearth_common.keys import KeyFileError, read_key_file
from hearth_common.version import version_line

LOG_LEVELS = ("debug", "info", "warning", "error")
M = TypeVar("M", bound=BaseModel)


class SettingsError(ValueError):
    """A bad command line, environment variable, config file or key file: one line, exit 2."""


@dataclass(frozen=True)
class Option:
    """How a field appears on the command line beyond `--field-name`."""

    aliases: tuple[str, ...] = ()  # more spellings; a single-dash alias of a flag takes an optional on|off
    metavar: str | None = None  # default: from the field's name (METAVARS), else its type
    note: str = ""  # said after the description, e.g. where llama.cpp's meaning differs


# Placeholders by field name (first match wins), then by type: what the value means, not its Python type.
METAVARS: tuple[tuple[str, str], ...] = (
    (r"(^|_)(timeout|interval|keep_alive|ttl)$|^eject_", "SECONDS"),
    (r"(_bytes|^max_body)$", "BYTES"),
    (r"(_mb|^cache_ram)$", "MIB"),
    (r"_gb$", "GB"),
    (r"(^router|_url)$", "URL"),
    (r"^host$", "ADDR"),
    (r"(_name|^alias)$", "NAME"),
)
TYPE_METAVARS: dict[Any, str] = {Path: "PATH", int: "N", float: "N", str: "TEXT"}


@dataclass(frozen=True)
class Loaded(Generic[M]):
    settings: M
    log_level: str  # one of LOG_LEVELS
    sections: dict[str, dict[str, Any]]  # HEARTH_<PROGRAM>_<SECTION>__<FIELD> texts, for the program's file
    origin: dict[str, str]  # field -> where its value came from: `--port`, `HEARTH_SERVE_PORT`, `FILE: port`


@dataclass(frozen=True)
class Program(Generic[M]):
    """One program's settings: its model, the flags' extras, its keys and its environment prefix."""

    name: str  # "serve": HEARTH_SERVE_*, and the `serve: ...` of its error lines
    model: type[M]
    prog: str  # as --help shows it: "python -m serve"
    description: str
    options: Mapping[str, Option] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()  # key fields: NAME from NAME_file or the environment, never a flag
    refused: Mapping[str, str] = field(default_factory=dict)  # more spellings answered with this line (exit 2)
    positional: str | None = None  # a field given without a flag (the stack file)
    sections: Mapping[str, type[BaseModel]] = field(default_factory=dict)  # file sections the environment may set
    epilog: str = ""
    script: str = ""  # the installed command, for --version (default: hearth-NAME)

    @property
    def env_prefix(self) -> str:
        return f"HEARTH_{self.name.upper()}_"

    def env_name(self, name: str) -> str:
        return self.env_prefix + name.upper()

    def flags(self) -> dict[str, FieldInfo]:
        """The fields that are flags and environment variables (not keys, not tables)."""
        return {n: f for n, f in self.model.model_fields.items() if n not in self.secrets and _kind(f) is not None}

    # -- the command line ---------------------------------------------------------------------------------------

    def parser(self) -> argparse.ArgumentParser:
        epilog = (
            f"Every option is also an environment variable, {self.env_prefix} and the option's name in capitals "
            f"(--some-option: {self.env_prefix}SOME_OPTION); the command line wins over the environment. {self.epilog}"
        ).strip()
        p = _Parser(prog=self.prog, description=self.description, epilog=epilog, allow_abbrev=False)
        p.add_argument(
            "--version",
            action="version",
            version=version_line(self.script or f"hearth-{self.name}"),
            help="print the version and exit",
        )
        p.add_argument(
            "--log-level",
            choices=LOG_LEVELS,
            default=argparse.SUPPRESS,
            help="least important log lines shown (default: info)",
        )
        for name, info in self.flags().items():
            self._add(p, name, info)
        for name in self.secrets:
            _refuse(p, "--" + name.replace("_", "-"), _key_refusal(self, name))
        for spelling, line in self.refused.items():
            _refuse(p, spelling, line)
        return p

    def _add(self, p: argparse.ArgumentParser, name: str, info: FieldInfo) -> None:
        option = self.options.get(name, Option())
        kind = _kind(info)
        assert kind is not None
        help_text = _help(info, option)
        shorts = [a for a in option.aliases if not a.startswith("--")]
        if kind == "bool" and shorts:
            help_text += "".join(f"; also {a} [on|off], as llama.cpp" for a in shorts)
        if name == self.positional:
            p.add_argument(
                name, nargs="?", default=argparse.SUPPRESS, metavar=option.metavar or name.upper(), help=help_text
            )
            return
        flag = "--" + name.replace("_", "-")
        if kind == "bool":
            long = [a for a in option.aliases if a.startswith("--")]
            p.add_argument(
                flag, *long, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text
            )
            for short in shorts:  # llama.cpp's `-fa [on|off]`
                p.add_argument(
                    short,
                    dest=name,
                    nargs="?",
                    const="on",
                    choices=("on", "off"),
                    metavar="on|off",
                    default=argparse.SUPPRESS,
                    help=argparse.SUPPRESS,
                )
            return
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
        if kind == "choice":
            kwargs["choices"] = _choices(info.annotation)
        else:
            kwargs["metavar"] = option.metavar or _metavar(name, info)
        if kind == "list":
            kwargs["type"] = comma_list
        p.add_argument(flag, *option.aliases, **kwargs)

    def from_command_line(self, argv: Sequence[str] | None) -> dict[str, Any]:
        """The settings given on the command line (only those), plus `log_level` when given."""
        return vars(self.parser().parse_args(argv))

    # -- the environment ----------------------------------------------------------------------------------------

    def from_environment(self, environ: Mapping[str, str]) -> dict[str, Any]:
        """HEARTH_<PROGRAM>_<FIELD> variables (empty ones are unset), plus `log_level`, plus the program's file
        sections' HEARTH_<PROGRAM>_<SECTION>__<FIELD> as {section: {field: text}}. Raises SettingsError for a
        variable with the prefix that names no setting (a typo would otherwise be ignored in silence)."""
        kinds = {n: _kind(f) for n, f in self.flags().items()}
        kinds.update(dict.fromkeys(self.secrets, "text"))
        kinds["log_level"] = "text"
        out: dict[str, Any] = {}
        for var, text in environ.items():
            if not var.startswith(self.env_prefix) or text == "":
                continue
            key = var[len(self.env_prefix) :].lower()
            section, _, sub = key.partition("__")
            if sub and section in self.sections:
                model = self.sections[section]
                if sub not in model.model_fields or _kind(model.model_fields[sub]) is None:
                    raise SettingsError(f"{var}: [{section}] has no setting {sub!r} that the environment can set")
                out.setdefault(section, {})[sub] = (
                    comma_list(text) if _kind(model.model_fields[sub]) == "list" else text
                )
            elif key in kinds:
                out[key] = comma_list(text) if kinds[key] == "list" else text
            else:
                raise SettingsError(f"{var}: not a setting of {self.prog} (see --help)")
        if "log_level" in out and out["log_level"].lower() not in LOG_LEVELS:
            raise SettingsError(
                f"{self.env_name('log_level')}: one of {', '.join(LOG_LEVELS)}, not {out['log_level']!r}"
            )
        return out

    # -- all together -------------------------------------------------------------------------------------------

    def load(
        self,
        argv: Sequence[str] | None,
        environ: Mapping[str, str] = os.environ,
        config_file: Callable[[dict[str, Any]], tuple[dict[str, Any], str]] | None = None,
    ) -> Loaded[M]:
        """The settings from the command line, the environment and, when `config_file` is given, what it
        returns for the command line and environment merged so far: (values, label for errors). Keys come from
        their files here. Raises SettingsError (one line) for anything the user got wrong."""
        cli = self.from_command_line(argv)
        env = self.from_environment(environ)
        level = str(cli.pop("log_level", None) or env.pop("log_level", "info")).lower()
        env.pop("log_level", None)
        sections = {name: env.pop(name) for name in self.sections if name in env}
        file, label = config_file(layer(self.secrets, [env, cli])) if config_file is not None else ({}, "")
        values = layer(self.secrets, [file, env, cli])
        origin = {n: f"{label}: {n}" for n in file}
        origin.update({n: self.env_name(n) for n in env})
        origin.update({n: "--" + n.replace("_", "-") for n in cli})
        values.update(keys_from_files(self.secrets, values))
        return Loaded(validated(self.model, values, origin), level, sections, origin)


def layer(secrets: Sequence[str], layers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Later layers over earlier ones; a layer that gives a key or its file replaces both from those under it."""
    out: dict[str, Any] = {}
    for given in layers:
        for name in secrets:
            if name in given or f"{name}_file" in given:
                out.pop(name, None)
                out.pop(f"{name}_file", None)
        out.update(given)
    return out


def keys_from_files(secrets: Sequence[str], values: Mapping[str, Any]) -> dict[str, str]:
    """Each key whose `NAME_file` is set, read from that owner-only file. Raises SettingsError."""
    found = {}
    for name in secrets:
        file = values.get(f"{name}_file")
        if file is None:
            continue
        try:
            found[name] = read_key_file(Path(file))
        except KeyFileError as err:
            raise SettingsError(str(err)) from None
    return found


def validated(model: type[M], values: Mapping[str, Any], origin: Mapping[str, str] = {}) -> M:
    """model(**values), or SettingsError with the first error as one line named by where the value came from."""
    try:
        return model(**values)
    except ValidationError as err:
        first = err.errors()[0]
        loc = [str(p) for p in first["loc"]]
        message = str(first["msg"]).removeprefix("Value error, ")
        if not loc:
            raise SettingsError(message) from None
        where = origin.get(loc[0], loc[0])
        rest = ".".join(loc[1:])
        raise SettingsError(f"{where}{'.' + rest if rest else ''}: {message}") from None


def comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def bool_text(value: bool) -> str:
    return "on" if value else "off"


# -- argparse details ----------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2 (the caller prints it), never the usage block
        unknown = message.removeprefix("unrecognized arguments: ")
        if unknown != message:  # the options only: a value there may be a key typed under a wrong name
            message = "unrecognized arguments: " + " ".join(
                w.split("=")[0] for w in unknown.split() if w.startswith("-")
            )
        raise SettingsError(f"{message} (see --help)")


class _Refused(argparse.Action):
    """A spelling we answer with a one-line error; the value, if any, is never shown."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: str | None = None) -> None:
        raise SettingsError(str(self.const))


def _refuse(p: argparse.ArgumentParser, spelling: str, line: str) -> None:
    p.add_argument(
        spelling,
        action=_Refused,
        nargs="?",
        const=line,
        dest=f"refused{spelling}",
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )


def _key_refusal(program: Program, name: str) -> str:
    flag = "--" + name.replace("_", "-")
    return (
        f"{flag} would put the key on the command line, where every user can read it (ps): "
        f"use {flag}-file PATH (an owner-only file) or {program.env_name(name)}"
    )


def _kind(info: FieldInfo) -> Literal["bool", "choice", "list", "text"] | None:
    """How a field is given as text; None for tables (config file only)."""
    annotation = _optional_inner(info.annotation)
    origin = typing.get_origin(annotation)
    if annotation is bool:
        return "bool"
    if origin is Literal:
        return "choice"
    if origin in (list, tuple) and all(a in (str, Ellipsis) for a in typing.get_args(annotation)):
        return "list"
    if annotation in (str, int, float, Path):
        return "text"
    return None


def _optional_inner(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _choices(annotation: Any) -> list[str]:
    return [str(c) for c in typing.get_args(_optional_inner(annotation))]


def _metavar(name: str, info: FieldInfo) -> str:
    for pattern, metavar in METAVARS:
        if re.search(pattern, name):
            return metavar + ("[,...]" if _kind(info) == "list" else "")
    inner = _optional_inner(info.annotation)
    if _kind(info) == "list":
        return "A,B,..."
    return TYPE_METAVARS.get(inner, "VALUE")


def _help(info: FieldInfo, option: Option) -> str:
    """The description, the default once (not when None, off or empty, nor when the description says `default:`),
    the note."""
    text = info.description or ""
    default = info.get_default(call_default_factory=True)
    if default not in (None, False, (), []) and "default:" not in text:
        text += f" (default: {_shown(default)})"
    if option.note:
        text += f"; {option.note}"
    return text.replace("%", "%%")


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    if value is True:
        return "on"
    return str(value)
