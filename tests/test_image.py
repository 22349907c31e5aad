"""The image runs as non-root: the Dockerfile's runtime stage ends as uid 1000 (scripts/image-check.sh
checks the uid inside a built image; this reads the Dockerfile, no Docker needed)."""

from __future__ import annotations

import re
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parent.parent / "Dockerfile"


def stages() -> list[tuple[str, list[str]]]:
    """(FROM line, instructions) per build stage, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result: list[tuple[str, list[str]]] = []
    for line in (ln.strip() for ln in text.splitlines()):
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            result.append((line, []))
        elif result:
            result[-1][1].append(line)
    return result


def test_the_runtime_stage_runs_as_uid_1000():
    header, instructions = stages()[-1]  # the image is the last stage
    assert re.search(r"\bAS\s+runtime\b", header, re.I)
    users = [i.split(None, 1)[1].strip() for i in instructions if i.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] == "1000", users
    assert all(u.split(":")[0] not in ("0", "root") for u in users)
    last_user = max(n for n, i in enumerate(instructions) if i.upper().startswith("USER "))
    cmd = [n for n, i in enumerate(instructions) if i.upper().startswith(("CMD ", "ENTRYPOINT "))]
    assert cmd and min(cmd) > last_user  # the app starts after the switch to uid 1000
    assert any(re.search(r"useradd\b.*--uid 1000\b", i) for i in instructions)
