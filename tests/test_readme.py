"""The README's Python examples run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks
    namespace = {}
    for block in blocks:  # later blocks use earlier names, as a reader would
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["model"].score(namespace["records"][400:],
                                    namespace["labels"][400:]) >= 0.9
