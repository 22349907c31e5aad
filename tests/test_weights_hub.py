"""The hub path end to end: `python -m pipeline.weights` downloading over HTTP from a local fake hub (fake_hub.py).

Each run is a subprocess because huggingface_hub reads HF_ENDPOINT once, at import.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline import weights
from pipeline.settings import PROJECT_ROOT

from tests.fake_hub import FakeHub
from tests.test_weights import _save_bf16, _tensors

REPO = "test/tiny-bf16"


def _run(endpoint: str, home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "HF_HOME": str(home / "hf"), "HF_ENDPOINT": endpoint,
           "HF_HUB_DISABLE_TELEMETRY": "1",
           # The fake hub speaks plain HTTP; it never advertises Xet, and this keeps the client from trying anyway.
           "HF_HUB_DISABLE_XET": "1"}  # HF_HUB_OFFLINE and HF_TOKEN are left out on purpose
    return subprocess.run([sys.executable, "-m", "pipeline.weights", *args], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True)


def _closed_port() -> int:
    with socket.socket() as s:  # a port nothing listens on: connection refused, like a machine with no network
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _state(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def bf16_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model saved as BF16, as the real Qwen checkpoints are on the hub."""
    return _save_bf16(tiny_model_dir, tmp_path_factory.mktemp("hub-bf16"))


@pytest.fixture
def hub(bf16_dir):
    with FakeHub() as fake:
        fake.add_repo(REPO, bf16_dir)
        yield fake


@pytest.fixture(scope="module")
def downloaded(bf16_dir, tmp_path_factory):
    """One real download through the CLI, shared by the tests that look at it: (hub, result, dest, home)."""
    home = tmp_path_factory.mktemp("hub-home")
    dest = home / "models" / "tiny"
    with FakeHub() as fake:
        fake.add_repo(REPO, bf16_dir)
        result = _run(fake.url, home, REPO, "--dest", str(dest))
        yield fake, result, dest, home


def test_download_converts_the_bf16_checkpoint_to_fp32_with_the_hubs_revision(downloaded, bf16_dir):
    hub, result, dest, home = downloaded
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(dest)
    assert "Fetching 6 files: 100%" in result.stderr, "snapshot_download's progress is shown"
    assert "FP32 model.safetensors: 100%" in result.stderr, "and the conversion's"

    before, after = _tensors(bf16_dir), _tensors(dest)
    assert {t.dtype for t in before.values()} == {torch.bfloat16}
    assert {t.dtype for t in after.values()} == {torch.float32}
    assert set(after) == set(before) and all(torch.equal(after[k], before[k].float()) for k in before)
    manifest = json.loads((dest / weights.MANIFEST).read_text())
    assert (manifest["model_id"], manifest["revision"], manifest["dtype"]) == (REPO, hub.repos[REPO].sha, "float32")
    assert manifest["source"] == hub.url
    assert sorted(p.name for p in dest.parent.iterdir()) == ["tiny"], "no staging folder left"

    # Every file once, the weights through the CDN redirect (X-Linked-Etag / X-Linked-Size), nothing unknown asked.
    sha = hub.repos[REPO].sha
    expected = [f"/cdn/{REPO}/{f.sha256}" if f.sha256 else f"/{REPO}/resolve/{sha}/{name}"
                for name, f in hub.repos[REPO].files.items()]
    assert sorted(hub.downloads()) == sorted(expected) and any(p.startswith("/cdn/") for p in expected)
    assert hub.unknown == []

    check = _run(hub.url, home, "--verify", str(dest))
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == f"{dest}: {REPO}@{hub.repos[REPO].sha}, {len(manifest['files'])} files OK"


@pytest.mark.parametrize("revision", [[], ["--revision", "main"]], ids=["same-command", "branch-name"])
def test_a_second_run_downloads_nothing_and_changes_nothing(downloaded, revision):
    hub, first, dest, home = downloaded
    assert first.returncode == 0, first.stderr
    files = _state(dest)
    hub.requests.clear()

    result = _run(hub.url, home, REPO, "--dest", str(dest), *revision)
    assert result.returncode == 0, result.stderr
    assert f"{dest} already holds {REPO}@{hub.repos[REPO].sha} (verified)" in result.stderr
    assert _state(dest) == files, "no file rewritten"
    assert hub.downloads() == []
    # The manifest holds a commit: a branch name costs one metadata call to learn which commit it is now.
    assert hub.requests == ([("GET", f"/api/models/{REPO}/revision/main")] if revision else [])


def test_a_branch_that_moved_is_not_replaced_without_force(downloaded):
    hub, first, dest, home = downloaded
    assert first.returncode == 0, first.stderr
    files, held = _state(dest), hub.repos[REPO].sha
    hub.repos[REPO].sha = "f" * 40  # a new commit on main
    try:
        result = _run(hub.url, home, REPO, "--dest", str(dest), "--revision", "main")
    finally:
        hub.repos[REPO].sha = held
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [f"error: {dest} holds {REPO}@{held}, not revision main: pass --force to "
                                          "replace it, or --dest another folder."]
    assert _state(dest) == files


def test_a_connection_dropped_once_resumes_and_the_result_is_intact(hub, bf16_dir, tmp_path):
    hub.drop["model.safetensors"] = "once"
    dest = tmp_path / "models" / "tiny"
    result = _run(hub.url, tmp_path, REPO, "--dest", str(dest))
    assert result.returncode == 0, result.stderr
    assert "peer closed connection" in result.stderr and "Trying to resume download" in result.stderr
    assert len([p for p in hub.downloads() if p.startswith("/cdn/")]) == 2
    before, after = _tensors(bf16_dir), _tensors(dest)
    assert set(after) == set(before) and all(torch.equal(after[k], before[k].float()) for k in before)
    assert weights.verify(dest)["revision"] == hub.repos[REPO].sha
    assert sorted(p.name for p in dest.parent.iterdir()) == ["tiny"]


def _no_such_repo(hub):
    return "test/no-such-model", hub.url


def _drop_always(hub):
    hub.drop["model.safetensors"] = "always"  # halfway, then every retry dies after the headers
    return REPO, hub.url


def _listing_refused(hub):
    hub.fail["/tree/"] = 403  # model_info answers, then the file listing is refused (a proxy, a ban)
    return REPO, hub.url


def _huge_checkpoint(hub):
    # Disk full, portably: the hub says the weights are 1 PB, so the space check refuses before any download.
    # A disk that really fills up mid-write (a small tmpfs as --dest) needs root to mount, which CI may not
    # have; the ENOSPC branch in convert is not run here.
    hub.repos[REPO].advertised_sizes["model.safetensors"] = 10**15
    return REPO, hub.url


def _network_down(hub):
    return REPO, f"http://127.0.0.1:{_closed_port()}"


FAILURES = [
    pytest.param(_no_such_repo, [], r"unknown model 'test/no-such-model': http://127\.0\.0\.1:\d+ has no such model "
                 r"\(or it is private\)\. Supported: Qwen/Qwen1\.5-0\.5B-Chat", True, id="repo-not-found"),
    pytest.param(_drop_always, [], rf"download of {REPO} failed: peer closed connection without sending complete "
                 r"message body \(received 0 bytes, expected \d+\)\. Check the network and run the same command "
                 r"again\.", False, id="connection-dropped"),
    pytest.param(_drop_always, ["--download-only"], rf"download of {REPO} failed: peer closed connection", False,
                 id="connection-dropped-download-only"),
    pytest.param(_listing_refused, [], rf"download of {REPO} failed: Got: HfHubHTTPError: 403 Forbidden", False,
                 id="file-listing-refused"),
    pytest.param(_huge_checkpoint, [], r"not enough disk space in .+: need \d+\.\d GiB, \d+\.\d GiB free\. "
                 r"Free some space or pass --dest on a bigger disk\.", True, id="disk-full"),
    pytest.param(_network_down, [], r"cannot reach http://127\.0\.0\.1:\d+ \(ConnectError: .+\)\. No network\? "
                 r"On an air-gapped machine copy the model folder over and run `python -m pipeline\.weights "
                 r"--from-dir DIR`\.", True, id="network-down"),
]


@pytest.mark.parametrize("setup, extra, message, alone", FAILURES)
def test_a_failed_download_says_why_in_one_line_and_leaves_nothing(hub, tmp_path, setup, extra, message, alone):
    """`alone`: the error is all of stderr (it fails before any download starts)."""
    repo, endpoint = setup(hub)
    models = tmp_path / "models"
    models.mkdir()
    hub.requests.clear()

    result = _run(endpoint, tmp_path, repo, "--dest", str(models / "tiny"), *extra)
    lines = result.stderr.splitlines()
    assert result.returncode == 1 and result.stdout == "", result.stderr
    assert "Traceback" not in result.stderr
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], result.stderr
    assert re.match("error: " + message, lines[-1]), lines[-1]
    if alone:
        assert len(lines) == 1, result.stderr
    assert list(models.iterdir()) == [], "no dest, no hidden staging or partial folder"
    if setup in (_no_such_repo, _huge_checkpoint):
        assert hub.requests == [("GET", f"/api/models/{repo}")], "one metadata call, nothing downloaded"
    assert hub.unknown == []
