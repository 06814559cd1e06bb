#!/bin/sh
# benchmarks/bench_gpu.py on a GPU machine's own Python, installing first the wheels in .whl/ if any (array-api-compat).
cd "$(dirname "$0")/.." && { [ ! -d .whl ] || { python3 -m pip install -q --no-index --no-deps --target /tmp/sksketch-site .whl/*.whl && export PYTHONPATH=/tmp/sksketch-site; }; } && PYTHONPATH=".:$PYTHONPATH" exec python3 benchmarks/bench_gpu.py "$@"
