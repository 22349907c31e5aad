"""The shared settings mechanism: env vars, flags, overrides and docs, for several classes on one parser."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline import UserInputError
from pipeline.config import PROJECT_ROOT, EnvSettings, SettingDoc, setting


@dataclass(frozen=True)
class Engine(EnvSettings):
    """A stand-in for the engine's settings."""

    model_dir: Path = setting(PROJECT_ROOT / "weights" / "m", "T_MODEL_DIR", "Model folder.", flag="--model-dir")
    threads: int | None = setting(None, "T_THREADS", "Threads.")
    temperature: float | None = setting(None, "T_TEMPERATURE", "Temperature, 100% hot.", flag="--temperature")


@dataclass(frozen=True)
class Server(EnvSettings):
    """A stand-in for the serving settings."""

    host: str = setting("127.0.0.1", "T_HOST", "Address.", flag="--host")
    port: int = setting(7860, "T_PORT", "Port.", flag="--port")
    share: bool = setting(False, "T_SHARE", "Share link.", flag="--share")
    name: str | None = setting(None, "T_NAME", "Name | label.")


def parse(argv: list[str], env: dict[str, str]) -> tuple[Engine, Server]:
    """The CLI's flow: both classes add their flags to one parser and read their own back."""
    parser = argparse.ArgumentParser()
    Engine.add_arguments(parser)
    Server.add_arguments(parser)
    args = parser.parse_args(argv)
    return Engine.from_args(args, env), Server.from_args(args, env)


def test_flags_win_over_env_and_unset_flags_leave_env():
    env = {"T_MODEL_DIR": "/env", "T_THREADS": "3", "T_PORT": "9000", "T_SHARE": "yes", "T_HOST": "0.0.0.0"}
    engine, server = parse(["--model-dir", "/flag", "--port", "9001", "--temperature", "0.5"], env)
    assert (engine.model_dir, engine.threads, engine.temperature) == (Path("/flag"), 3, 0.5)
    assert (server.host, server.port, server.share, server.name) == ("0.0.0.0", 9001, True, None)


def test_no_flag_turns_a_bool_off_over_env():
    assert parse(["--no-share"], {"T_SHARE": "on"})[1].share is False
    assert parse(["--share"], {"T_SHARE": "off"})[1].share is True


def test_defaults_and_blank_env_values_are_unset():
    engine, server = parse([], {"T_PORT": "  ", "T_THREADS": "", "T_SHARE": " "})
    assert (engine.model_dir, engine.threads) == (PROJECT_ROOT / "weights" / "m", None)
    assert (server.port, server.share, server.host) == (7860, False, "127.0.0.1")


@pytest.mark.parametrize("env, match", [
    ({"T_PORT": "http"}, "T_PORT='http' is not a valid int"),
    ({"T_SHARE": "maybe"}, "T_SHARE='maybe' is not a valid bool"),
    ({"T_TEMPERATURE": "warm"}, "T_TEMPERATURE='warm' is not a valid float"),
])
def test_bad_env_value_is_a_user_error_naming_the_var(env, match):
    with pytest.raises(UserInputError, match=match):
        parse([], env)


def test_bad_flag_value_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit):
        parse(["--port", "http"], {})
    assert "--port" in capsys.readouterr().err


def test_unknown_override_is_a_type_error():
    with pytest.raises(TypeError, match="colour"):
        Server.from_env({}, colour="red")


def test_overrides_that_are_none_are_ignored():
    assert Server.from_env({"T_PORT": "9000"}, port=None, host="h") == Server(host="h", port=9000)


def test_help_names_env_var_and_default():
    parser = argparse.ArgumentParser()
    Engine.add_arguments(parser)
    Server.add_arguments(parser)
    text = parser.format_help()
    assert "(env T_PORT; default 7860)" in text and "--no-share" in text
    assert "(env T_MODEL_DIR; default weights/m)" in text
    assert "100% hot" in text  # a literal % survives argparse's formatting
    assert "--threads" not in text  # no flag, no option


def test_describe_and_markdown_table():
    assert Engine.describe()[:2] == [
        SettingDoc("model_dir", "--model-dir", "T_MODEL_DIR", "weights/m", "Model folder."),
        SettingDoc("threads", None, "T_THREADS", "unset", "Threads."),
    ]
    assert Server.markdown_table().splitlines() == [
        "| setting | flag | env var | default | meaning |",
        "|---|---|---|---|---|",
        "| `host` | `--host` | `T_HOST` | `127.0.0.1` | Address. |",
        "| `port` | `--port` | `T_PORT` | `7860` | Port. |",
        "| `share` | `--share` | `T_SHARE` | `False` | Share link. |",
        "| `name` |  | `T_NAME` | `unset` | Name \\| label. |",
    ]


def test_table_without_flags_has_no_flag_column():
    @dataclass(frozen=True)
    class Plain(EnvSettings):
        size: int = setting(1, "T_SIZE", "Size.")
        prompt: str = setting("long text", "T_PROMPT", "Prompt.", shown="see `x.py`")

    assert Plain.markdown_table().splitlines() == [
        "| setting | env var | default | meaning |",
        "|---|---|---|---|",
        "| `size` | `T_SIZE` | `1` | Size. |",
        "| `prompt` | `T_PROMPT` | see `x.py` | Prompt. |",
    ]


def test_unsupported_field_type_is_refused():
    @dataclass(frozen=True)
    class Odd(EnvSettings):
        sizes: list = setting(None, "T_SIZES", "Sizes.")

    with pytest.raises(TypeError, match="sizes"):
        Odd.from_env({"T_SIZES": "1,2"})
