"""Settings: env vars, overrides, validation and the CPU quota."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pipeline import Settings, UserInputError, settings as settings_module


def test_defaults():
    s = Settings.from_env({})
    assert s.model_dir == settings_module.PROJECT_ROOT / "weights" / "Qwen1.5-0.5B-Chat"
    assert s.threads is None and s.torch_threads >= 1
    assert s.do_sample is None and s.temperature is None


def test_env_vars_are_parsed_by_type():
    s = Settings.from_env({"MODEL_DIR": "/m", "TORCH_THREADS": "3", "CHAT_TEMPERATURE": "0.5",
                           "CHAT_DO_SAMPLE": "false", "MAX_INPUT_TOKENS": "64", "CHAT_SYSTEM_PROMPT": "你好"})
    assert (s.model_dir, s.threads, s.temperature, s.do_sample, s.max_input_tokens, s.chat_system_prompt) == (
        Path("/m"), 3, 0.5, False, 64, "你好")
    assert s.torch_threads == 3


def test_overrides_win_over_env_and_none_is_ignored():
    s = Settings.from_env({"TORCH_THREADS": "3", "MODEL_DIR": "/env"}, threads=1, model_dir=None)
    assert s.threads == 1 and s.model_dir == Path("/env")


@pytest.mark.parametrize("env, match", [
    ({"TORCH_THREADS": "many"}, "TORCH_THREADS='many'"),
    ({"CHAT_DO_SAMPLE": "maybe"}, "CHAT_DO_SAMPLE"),
    ({"MAX_INPUT_TOKENS": "0"}, "max_input_tokens must be at least 1"),
    ({"HISTORY_TOKEN_BUDGET": "10", "MAX_INPUT_TOKENS": "20"}, "history_token_budget"),
])
def test_bad_settings_are_user_errors(env, match):
    with pytest.raises(UserInputError, match=match):
        Settings.from_env(env)


def test_unknown_override_is_a_type_error():
    with pytest.raises(TypeError, match="colour"):
        Settings.from_env({}, colour="red")


def test_every_setting_is_documented_once():
    rows = Settings.describe()
    envs = [row.env for row in rows]
    assert len(envs) == len(set(envs))
    assert all(row.doc for row in rows)
    assert ("model_dir", "MODEL_DIR", "weights/Qwen1.5-0.5B-Chat") == (rows[0].name, rows[0].env, rows[0].default)
    assert rows[0].flag == "--model-dir"


def test_markdown_table_lists_every_setting_and_hides_long_prompts():
    table = Settings.markdown_table()
    assert table.splitlines()[0] == "| setting | flag | env var | default | meaning |"
    assert "| `model_dir` | `--model-dir` | `MODEL_DIR` | `weights/Qwen1.5-0.5B-Chat` |" in table
    assert "| `chat_system_prompt` |  | `CHAT_SYSTEM_PROMPT` | see `pipeline/prompts.py` |" in table
    assert len(table.splitlines()) == 2 + len(Settings.describe())


def test_model_dir_flag_wins_over_env():
    parser = argparse.ArgumentParser()
    Settings.add_arguments(parser)
    s = Settings.from_args(parser.parse_args(["--model-dir", "/flag"]), {"MODEL_DIR": "/env", "TORCH_THREADS": "2"})
    assert (s.model_dir, s.threads) == (Path("/flag"), 2)
    assert Settings.from_args(parser.parse_args([]), {"MODEL_DIR": "/env"}).model_dir == Path("/env")


@pytest.mark.parametrize("quota, cores, expected", [
    (None, 8, 8),  # cpu.max "max 100000": no quota
    (1.5, 8, 2),  # "150000 100000"
    (1.0, 8, 1),  # "100000 100000"
    (4.0, 2, 2),  # "400000 100000" on 2 cores
    (None, 4, 4),  # no cgroup file
])
def test_cpu_quota_from_cgroup(monkeypatch, quota, cores, expected):
    monkeypatch.setattr(settings_module, "_cgroup_quota", lambda: quota)
    monkeypatch.setattr(settings_module.os, "sched_getaffinity", lambda pid: set(range(cores)))
    assert settings_module.cpu_quota() == expected


def test_cgroup_v2_file_is_read(monkeypatch, tmp_path):
    original = Path.read_text

    def fake_read(path, *args, **kwargs):
        if str(path) == "/sys/fs/cgroup/cpu.max":
            return "150000 100000\n"
        return original(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", fake_read)
    assert settings_module._cgroup_quota() == 1.5
