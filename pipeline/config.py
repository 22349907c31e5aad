"""One settings mechanism: dataclass fields that carry their env var, CLI flag, default and doc line."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import types
import typing
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Self

from .errors import UserInputError

PROJECT_ROOT = Path(__file__).resolve().parent.parent

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_KINDS = (bool, int, float, str, Path)


def setting(default: Any, env: str, doc: str, flag: str | None = None, *, shown: str | None = None) -> Any:
    """A dataclass field read from env var `env` (and CLI `flag`); `shown` is Markdown standing in for a long default."""
    return dataclasses.field(default=default, metadata={"env": env, "doc": doc, "flag": flag, "shown": shown})


class SettingDoc(NamedTuple):
    """One documented setting: a row of the README table."""

    name: str
    flag: str | None
    env: str
    default: str
    doc: str


class EnvSettings:
    """Mixin for frozen dataclasses whose fields are made with setting(): env vars, CLI flags, docs."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """Settings from env vars (blank = unset), then overrides that are not None."""
        env = os.environ if env is None else env
        names = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
        unknown = set(overrides) - names
        if unknown:
            raise TypeError(f"unknown settings for {cls.__name__}: {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for f in _settings(cls):
            raw = env.get(f.metadata["env"], "").strip()
            if raw:
                values[f.name] = _parse(f.metadata["env"], raw, _kind(cls, f))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One option per field with a flag; unset options stay None so env vars still apply."""
        for f, row in zip(_settings(cls), cls.describe()):
            if row.flag is None:
                continue
            # argparse %-formats help strings, so a literal % in a doc must be doubled.
            text = f"{row.doc} (env {row.env}; default {row.default})".replace("%", "%%")
            kind = _kind(cls, f)
            if kind is bool:
                parser.add_argument(row.flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                    default=None, help=text)
            else:
                parser.add_argument(row.flag, dest=f.name, type=kind, default=None, help=text)

    @classmethod
    def from_args(cls, args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Self:
        """from_env with this class's flags as overrides; other classes' attributes in args are ignored."""
        overrides = {f.name: getattr(args, f.name, None) for f in _settings(cls) if f.metadata["flag"]}
        return cls.from_env(env, **overrides)

    @classmethod
    def describe(cls) -> list[SettingDoc]:
        """Name, flag, env var, default as shown to users, and meaning of each setting."""
        return [SettingDoc(f.name, f.metadata["flag"], f.metadata["env"], _shown(f), f.metadata["doc"])
                for f in _settings(cls)]

    @classmethod
    def markdown_table(cls) -> str:
        """The settings as a Markdown table, as the README carries it."""
        rows = cls.describe()
        with_flags = any(row.flag for row in rows)
        head = ["setting", "flag", "env var", "default", "meaning"] if with_flags else [
            "setting", "env var", "default", "meaning"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for f, row in zip(_settings(cls), rows):
            default = row.default if f.metadata["shown"] else f"`{row.default}`"
            cells = [f"`{row.name}`", f"`{row.flag}`" if row.flag else "", f"`{row.env}`", default, row.doc]
            if not with_flags:
                del cells[1]
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
        return "\n".join(lines)


def _settings(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if "env" in f.metadata]


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    # Annotations are strings under `from __future__ import annotations`; resolve them once.
    return typing.get_type_hints(cls)


def _kind(cls: type, f: dataclasses.Field) -> type:
    """The field's value type, with Optional[...] unwrapped."""
    hint = _hints(cls)[f.name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0] if len(args) == 1 else hint
    if hint not in _KINDS:
        raise TypeError(f"{cls.__name__}.{f.name}: unsupported setting type {hint!r}")
    return hint


def _parse(env: str, raw: str, kind: type) -> Any:
    if kind is bool:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise UserInputError(f"{env}={raw!r} is not a valid bool (use {'/'.join(_TRUE)} or {'/'.join(_FALSE)})")
    try:
        return kind(raw)
    except ValueError:
        raise UserInputError(f"{env}={raw!r} is not a valid {kind.__name__}") from None


def _shown(f: dataclasses.Field) -> str:
    if f.metadata["shown"]:
        return f.metadata["shown"]
    default = f.default
    if default is None:
        return "unset"
    if isinstance(default, Path) and default.is_relative_to(PROJECT_ROOT):
        return default.relative_to(PROJECT_ROOT).as_posix()
    return str(default)
