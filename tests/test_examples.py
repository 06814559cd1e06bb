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


# The short examples: each saves its plot to --out and runs in seconds with
# --fast. Not plot_* files, so the documentation shows them as code only.
SHORT_EXAMPLES = {
    "grid_search_sketch_dim.py": "grid_search_sketch_dim.png",
    "clustering_sketches.py": "clustering_sketches.png",
    "similarity_search.py": "similarity_search.png",
    "count_recovery.py": "count_recovery.png",
    "graceful_erasure.py": "graceful_erasure.png",
}


@pytest.mark.parametrize("script", sorted(SHORT_EXAMPLES))
def test_short_example_runs_fast(script, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "plots"
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--fast", "--out", str(out)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / SHORT_EXAMPLES[script]).stat().st_size > 0
    text = (EXAMPLES / script).read_text()
    # The gallery builds with warnings as errors: a title first, underlined.
    title, underline = text.split('"""')[1].strip().splitlines()[:2]
    assert underline == "=" * len(title)
