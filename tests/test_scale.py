"""Scale-out (slow): real nginx with deploy/nginx.conf in front of two demo.py replicas on the tiny model:
every check of tests/scale_check.py (also scripts/scale-check.sh) passes, a shorter throughput table.

    bash scripts/test.sh --slow
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.scale_check import nginx_binary

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_two_replicas_behind_nginx(tiny_model_dir, tmp_path):
    if nginx_binary() is None:
        pytest.skip("nginx not installed: bash scripts/scale-check.sh installs Debian's nginx as root")
    if os.geteuid() != 0:
        pytest.skip("the scale check needs root (Debian's nginx keeps its temp folders under /var/lib/nginx)")
    done = subprocess.run(
        [sys.executable, "-m", "tests.scale_check", "--model-dir", str(tiny_model_dir), "--requests", "10", "--rounds", "1",
         "--work", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    print(done.stdout)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "scale check passed" in done.stdout
    assert "| 2 replicas behind nginx |" in done.stdout
