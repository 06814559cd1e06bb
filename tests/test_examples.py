"""The examples run, with their fast settings, so that none rots."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_digits_demo_runs_fast(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("tqdm")
    pytest.importorskip("matplotlib")
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "demo.py"), "--fast", "--out",
         str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "test accuracy" in out and "recall@10" in out
    for name in ("sketch", "random projection", "PCA"):
        assert f"\n{name} " in out
    assert "per-layer counts exact for" in out
    assert (tmp_path / "digits_cnn_sketches.png").stat().st_size > 0
    assert "ActivationRecorder" in out.split("Next:")[1]
