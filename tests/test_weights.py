"""The weights tool: conversion to FP32 with a manifest, verification, and its errors (hub calls faked, offline)."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open

from pipeline import loading, weights
from pipeline.settings import PROJECT_ROOT, Settings


def _save_bf16(tiny_model_dir: Path, dest: Path, **save_kwargs) -> Path:
    """A copy of the tiny model saved as BF16, like the hub checkpoints."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model.to(torch.bfloat16).save_pretrained(dest, **save_kwargs)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(tiny_model_dir / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def bf16_dir(tiny_model_dir, tmp_path_factory) -> Path:
    return _save_bf16(tiny_model_dir, tmp_path_factory.mktemp("bf16"))


def _tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    out = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        with safe_open(shard, "pt") as f:
            out.update({k: f.get_tensor(k) for k in f.keys()})
    return out


def test_convert_bf16_folder_writes_fp32_safetensors_and_manifest(bf16_dir, tmp_path):
    dest = weights.convert(bf16_dir, tmp_path / "out", model_id="test/tiny", revision="abc123")

    before, after = _tensors(bf16_dir), _tensors(dest)
    assert set(after) == set(before) and {t.dtype for t in before.values()} == {torch.bfloat16}
    assert {t.dtype for t in after.values()} == {torch.float32}
    assert all(torch.equal(after[k], before[k].float()) for k in before)
    assert json.loads((dest / "config.json").read_text())["dtype"] == "float32"
    manifest = json.loads((dest / weights.MANIFEST).read_text())
    assert (manifest["model_id"], manifest["revision"], manifest["dtype"]) == ("test/tiny", "abc123", "float32")
    assert set(manifest["files"]) == {p.name for p in dest.iterdir()} - {weights.MANIFEST}
    for name, meta in manifest["files"].items():
        assert meta["sha256"] == hashlib.sha256((dest / name).read_bytes()).hexdigest()
    assert weights.verify(dest) == manifest
    assert not list(tmp_path.glob(".*")), "no staging folder left behind"


def test_converted_folder_loads_through_the_engines_loader(bf16_dir, tmp_path):
    dest = weights.convert(bf16_dir, tmp_path / "out")
    model, tokenizer = loading.load_model(Settings(model_dir=dest, threads=1))
    assert next(model.parameters()).dtype == torch.float32
    assert tokenizer.chat_template


def test_sharded_checkpoint_keeps_its_index_with_the_fp32_size(tiny_model_dir, tmp_path):
    src = _save_bf16(tiny_model_dir, tmp_path / "sharded", max_shard_size="100KB")
    assert (src / "model.safetensors.index.json").is_file()
    dest = weights.convert(src, tmp_path / "out")

    index = json.loads((dest / "model.safetensors.index.json").read_text())
    tensors = _tensors(dest)
    assert index["metadata"]["total_size"] == sum(t.numel() * 4 for t in tensors.values())
    assert set(index["weight_map"]) == set(tensors) and {t.dtype for t in tensors.values()} == {torch.float32}
    loading.check_model_dir(dest)


def test_in_place_conversion_replaces_the_folder(bf16_dir, tmp_path):
    folder = shutil.copytree(bf16_dir, tmp_path / "Qwen1.5-0.5B-Chat")
    assert weights.convert(folder, folder) == folder.resolve()
    assert {t.dtype for t in _tensors(folder).values()} == {torch.float32}
    assert weights.verify(folder)["model_id"] == "local/Qwen1.5-0.5B-Chat"


def test_incomplete_folder_is_refused_naming_what_is_missing(bf16_dir, tmp_path, capsys):
    src = shutil.copytree(bf16_dir, tmp_path / "src")
    (src / "model.safetensors").unlink()
    with pytest.raises(weights.WeightsError, match="missing model.safetensors"):
        weights.convert(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()

    assert weights.main(["--from-dir", str(src), "--dest", str(tmp_path / "out")]) == 1
    assert "error: Model folder" in capsys.readouterr().err


def test_verify_detects_a_damaged_file(bf16_dir, tmp_path):
    dest = weights.convert(bf16_dir, tmp_path / "out")
    blob = bytearray((dest / "model.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (dest / "model.safetensors").write_bytes(bytes(blob))
    with pytest.raises(weights.WeightsError, match="model.safetensors does not match its sha256"):
        weights.verify(dest)


def test_existing_destination_needs_force(bf16_dir, tmp_path):
    weights.convert(bf16_dir, tmp_path / "out")
    with pytest.raises(weights.WeightsError, match="--force"):
        weights.convert(bf16_dir, tmp_path / "out")
    assert weights.convert(bf16_dir, tmp_path / "out", force=True).is_dir()


def test_disk_full_is_reported_before_anything_is_written(bf16_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=10**6, used=10**6 - 1000, free=1000))
    with pytest.raises(weights.WeightsError, match="not enough disk space.*need .* GiB, 0.0 GiB free"):
        weights.convert(bf16_dir, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


# The hub, faked: model_info from a local folder's real sizes and checksums, snapshot_download copying it.

def _fake_hub(monkeypatch, repo: Path, sha: str = "0" * 40, corrupt: str | None = None) -> list:
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import BlobLfsInfo, RepoSibling

    siblings = []
    for path in sorted(p for p in repo.iterdir() if p.is_file()):
        data = path.read_bytes()
        lfs = None
        if path.suffix == ".safetensors":
            lfs = BlobLfsInfo(size=len(data), sha256=hashlib.sha256(data).hexdigest(), pointer_size=134)
        blob_id = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        siblings.append(RepoSibling(rfilename=path.name, size=len(data), blob_id=blob_id, lfs=lfs))
    siblings.append(RepoSibling(rfilename="pytorch_model.bin", size=10**9))  # other formats are skipped
    calls = []

    def model_info(self, repo_id, *, revision=None, files_metadata=False, timeout=None, **kw):
        calls.append(("model_info", repo_id, revision))
        return SimpleNamespace(sha=sha, siblings=siblings)

    def snapshot_download(repo_id, *, revision, local_dir, allow_patterns, **kw):
        calls.append(("snapshot_download", repo_id, revision, sorted(allow_patterns)))
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        for name in allow_patterns:
            shutil.copy(repo / name, Path(local_dir) / name)
        if corrupt:
            (Path(local_dir) / corrupt).write_bytes(b"not what the hub has")
        return str(local_dir)

    monkeypatch.setattr(HfApi, "model_info", model_info)
    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    return calls


def test_fetch_downloads_verifies_converts_and_skips_when_already_there(bf16_dir, tmp_path, monkeypatch):
    calls = _fake_hub(monkeypatch, bf16_dir, sha="f" * 40)
    dest = weights.fetch("Qwen/Qwen1.5-0.5B-Chat", dest=tmp_path / "Qwen1.5-0.5B-Chat")

    manifest = weights.verify(dest)
    assert (manifest["model_id"], manifest["revision"]) == ("Qwen/Qwen1.5-0.5B-Chat", "f" * 40)
    assert {t.dtype for t in _tensors(dest).values()} == {torch.float32}
    downloaded = calls[1][3]
    assert calls[1][2] == "f" * 40 and "pytorch_model.bin" not in downloaded and "model.safetensors" in downloaded
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Qwen1.5-0.5B-Chat"], "staging folder removed"

    calls.clear()
    assert weights.fetch("Qwen/Qwen1.5-0.5B-Chat", dest=dest) == dest
    assert calls == [], "a verified folder is not fetched again"


def test_download_only_then_convert_keeps_the_hub_revision(bf16_dir, tmp_path, monkeypatch):
    _fake_hub(monkeypatch, bf16_dir, sha="a" * 40)
    downloaded = weights.download("Qwen/Qwen2.5-0.5B-Instruct", None, tmp_path / "dl")
    assert {t.dtype for t in _tensors(downloaded).values()} == {torch.bfloat16}, "stored as the hub has it"
    assert weights.verify(downloaded)["revision"] == "a" * 40

    manifest = weights.verify(weights.convert(downloaded, tmp_path / "out"))
    assert (manifest["model_id"], manifest["revision"], manifest["dtype"]) == ("Qwen/Qwen2.5-0.5B-Instruct", "a" * 40, "float32")
    assert manifest["source"] == weights._endpoint()


def test_convert_refuses_a_folder_that_no_longer_matches_its_manifest(bf16_dir, tmp_path, monkeypatch):
    _fake_hub(monkeypatch, bf16_dir)
    downloaded = weights.download("Qwen/Qwen1.5-0.5B-Chat", None, tmp_path / "dl")
    (downloaded / "tokenizer.json").write_text("{}")
    with pytest.raises(weights.WeightsError, match="tokenizer.json does not match its sha256"):
        weights.convert(downloaded, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_fetch_rejects_a_download_that_does_not_match_the_hub_checksums(bf16_dir, tmp_path, monkeypatch):
    _fake_hub(monkeypatch, bf16_dir, corrupt="model.safetensors")
    with pytest.raises(weights.WeightsError, match="model.safetensors does not match the hub's checksum"):
        weights.fetch("Qwen/Qwen1.5-0.5B-Chat", dest=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_fetch_checks_disk_space_before_downloading(bf16_dir, tmp_path, monkeypatch):
    calls = _fake_hub(monkeypatch, bf16_dir)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=10**6, used=10**6 - 1000, free=1000))
    with pytest.raises(weights.WeightsError, match="not enough disk space"):
        weights.fetch("Qwen/Qwen1.5-0.5B-Chat", dest=tmp_path / "out")
    assert [c[0] for c in calls] == ["model_info"], "nothing downloaded"


def test_fetch_leaves_a_folder_without_manifest_alone(bf16_dir, tmp_path, monkeypatch):
    calls = _fake_hub(monkeypatch, bf16_dir)
    dest = shutil.copytree(bf16_dir, tmp_path / "Qwen1.5-0.5B-Chat")
    with pytest.raises(weights.WeightsError, match="has no manifest.*--from-dir .*--force"):
        weights.fetch("Qwen/Qwen1.5-0.5B-Chat", dest=dest)
    assert calls == [] and {t.dtype for t in _tensors(dest).values()} == {torch.bfloat16}


def test_unknown_model_says_so(tmp_path, monkeypatch):
    import httpx2
    from huggingface_hub import HfApi, errors

    def model_info(self, repo_id, **kw):
        response = httpx2.Response(404, request=httpx2.Request("GET", f"https://huggingface.co/api/models/{repo_id}"))
        raise errors.RepositoryNotFoundError("404 Repository Not Found", response=response)

    monkeypatch.setattr(HfApi, "model_info", model_info)
    with pytest.raises(weights.WeightsError, match="unknown model 'Qwen/No-Such-Model'.*Supported: Qwen/Qwen1.5"):
        weights.fetch("Qwen/No-Such-Model", dest=tmp_path / "out")


def test_no_network_fails_at_once_with_a_clear_message(tmp_path, monkeypatch):
    from huggingface_hub import constants

    with socket.socket() as s:  # a port nothing listens on: connection refused, like a machine with no network
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed}")
    with pytest.raises(weights.WeightsError, match="cannot reach .*No network.*--from-dir"):
        weights.fetch(dest=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_without_network_exits_1_with_the_message(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    env = {"PATH": "/usr/bin:/bin", "HF_ENDPOINT": f"http://127.0.0.1:{closed}", "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "pipeline.weights", "--dest", str(tmp_path / "out")],
                            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert f"error: cannot reach http://127.0.0.1:{closed}" in result.stderr
    assert "Traceback" not in result.stderr


def test_how_to_get_weights_names_real_options():
    parser_options = {"--from-dir", "--dest", "--force", "--revision", "--verify"}
    flags = {word.strip("`(),;.") for word in loading.HOW_TO_GET_WEIGHTS.split() if word.startswith("--")}
    assert "python -m pipeline.weights" in loading.HOW_TO_GET_WEIGHTS
    assert flags and flags <= parser_options | {"--model-dir"}
    help_text = subprocess.run([sys.executable, "-m", "pipeline.weights", "--help"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, timeout=120).stdout
    assert all(option in help_text for option in parser_options)


def test_tool_runs_from_the_dockerfiles_weights_stage_files(tmp_path):
    """The Dockerfile's weights stage runs the tool from a bare package: first three files, then a few more."""
    copies = [line.split()[1:-1] for line in (PROJECT_ROOT / "Dockerfile").read_text().splitlines()
              if line.startswith("COPY pipeline/") and line.split()[1] != "pipeline/"]
    assert copies[0] == ["pipeline/weights.py", "pipeline/fp32.py", "pipeline/errors.py"] and len(copies) == 2
    package = tmp_path / "pipeline"
    package.mkdir()
    (package / "__init__.py").write_text("")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    env = {"PATH": "/usr/bin:/bin", "HF_ENDPOINT": f"http://127.0.0.1:{closed}", "HOME": str(tmp_path)}
    runs = (["--download-only", "--dest", str(tmp_path / "dl")], "error: cannot reach"), \
           (["--verify", str(tmp_path / "none")], "error: Model folder")
    for files, (args, expected) in zip(copies, runs):
        for name in files:
            shutil.copy(PROJECT_ROOT / name, package)
        result = subprocess.run([sys.executable, "-m", "pipeline.weights", *args], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 1 and expected in result.stderr, result.stderr
