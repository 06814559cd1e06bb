"""Speed of reading JSON Lines records into a RecordBatch, measured in one run.

For records of the synthetic network, written once to a plain and a gzip
JSON Lines file, it times (best of ``--repeat`` calls, after a warm-up):

- ``json.loads`` of every line alone: the floor of any JSON reader;
- ``read_records`` then ``RecordBatch.from_records``: one ActivationRecord per
  line, then the batch (the path before ``read_batch``);
- ``read_batch (json)``: each line parsed by ``json.loads``, its objects
  checked in Python, then the structure of all records at once, no
  ActivationRecord per line (read_batch without msgspec);
- ``read_batch (msgspec)``: the same, each line decoded and its fields'
  types checked by msgspec's typed decoder (read_batch with msgspec).

Prints a table and writes ``benchmarks/results/bench_io.json``. With
``--busy-core``, every reader is also timed while another process keeps one
core busy (column ``busy us/obj``).
Run: ``python benchmarks/bench_io.py [--n-records 5000] [--repeat 3]``
"""

import argparse
import contextlib
import gzip
import json
import tempfile
from pathlib import Path

import busy_core as busy
from common import best_time, write_results

import sksketch._io
from sksketch import (
    RecordBatch,
    make_activation_records,
    read_batch,
    read_records,
    write_records,
)


def json_only(path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        return [json.loads(line) for line in handle]


@contextlib.contextmanager
def json_only_path():
    """read_batch as without msgspec installed."""
    typed = sksketch._io._typed_decoder
    sksketch._io._typed_decoder = lambda: None
    try:
        yield
    finally:
        sksketch._io._typed_decoder = typed


def read_batch_json(path):
    with json_only_path():
        return read_batch(path)


def run(n_records, repeat, busy_core=False):
    records, _ = make_activation_records(n_records, n_modules=9, depth=3,
                                         attribute_dim=8, random_state=0)
    n_objects = sum(r.n_objects for r in records)
    readers = {
        "json.loads only": json_only,
        "read_records + from_records": lambda p: RecordBatch.from_records(
            list(read_records(p))),
        "read_batch (json)": read_batch_json,
    }
    if sksketch._io._typed_decoder() is not None:
        readers["read_batch (msgspec)"] = read_batch
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for name in ("records.jsonl", "records.jsonl.gz"):
            path = Path(directory) / name
            write_records(records, path)
            for reader, function in readers.items():
                seconds = best_time(lambda f=function, p=path: f(p), repeat)
                busy_seconds = None
                if busy_core:
                    with busy.busy_core(True):
                        busy_seconds = best_time(lambda f=function, p=path: f(p),
                                                 repeat)
                rows.append({"file": name, "reader": reader,
                             "n_records": n_records, "n_objects": n_objects,
                             "seconds": seconds,
                             "records_per_s": n_records / seconds,
                             "us_per_object": seconds / n_objects * 1e6,
                             "us_per_object_busy_core": (
                                 None if busy_seconds is None
                                 else busy_seconds / n_objects * 1e6)})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-records", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--busy-core", action="store_true",
                        help="also time with another process spinning on one core")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"
                                             / "bench_io.json"))
    args = parser.parse_args()
    rows = run(args.n_records, args.repeat, args.busy_core)
    print(f"{rows[0]['n_records']} records, {rows[0]['n_objects']} objects; "
          f"warm, best of {args.repeat}")
    print(f"{'file':<17} {'reader':<28} {'records/s':>10} {'us/object':>10} "
          f"{'busy us/obj':>11}")
    for r in rows:
        busy_text = ("-" if r["us_per_object_busy_core"] is None
                     else f"{r['us_per_object_busy_core']:.2f}")
        print(f"{r['file']:<17} {r['reader']:<28} {r['records_per_s']:>10,.0f} "
              f"{r['us_per_object']:>10.2f} {busy_text:>11}")
    write_results(args.out, rows)


if __name__ == "__main__":
    main()
