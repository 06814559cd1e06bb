"""The README's Python examples run as written."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks
    namespace = {}
    for block in blocks:  # later blocks use earlier names, as a reader would
        exec(compile(block, str(README), "exec"), namespace)
    # The example decodes the network's output exactly, and a classifier on
    # the sketches does about as well as the network.
    np.testing.assert_allclose(namespace["decoded"], namespace["proba"], atol=1e-10)
    assert namespace["clf"].score(namespace["S"][1200:],
                                  namespace["y"][1200:]) >= 0.9
