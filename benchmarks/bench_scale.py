"""Sketching and storing at scale: streaming, workers, repository size.

Three measurements, each optional:

``sketch``
    For record files of ``--records`` sizes (Parquet, written in a streaming
    pass from a pool of synthetic records), the peak RSS of a fresh process
    that sketches the file one row group at a time (flat across sizes when
    nothing holds the whole file), and records/s with 1 and 2 workers, both
    local (a process pool, one task per file of the dataset) and with Dask
    (a ``distributed.LocalCluster`` of 1 or 2 worker processes and
    :func:`sksketch.dask.sketch_records`). Sketches are written to ``.npy``
    files per task, never gathered.
``repository``
    A :class:`SketchRepository` of ``d = 256`` float32 sketches grown to each
    of ``--repo-sizes``: ``add`` throughput (batches of 10^4), the latency of
    one query and of 100 queries (exact, ``k = 10``, cosine and dot), and the
    time of one NumPy product of the same shape (``Q @ X.T``, X in memory),
    with their ratio (the three timed in turn, best of ``--repeat`` each;
    again with one BLAS thread; with ``--busy-core``, also while another
    process spins on one core); up
    to ``--index-max`` sketches, the build time, query time and recall@10
    (against exact) of the optional FAISS HNSW index.

Prints tables and writes ``benchmarks/results/bench_scale.json``. Not a test:
nothing here asserts a time. Quick run (the default sizes):
``python benchmarks/bench_scale.py``; the full one:
``python benchmarks/bench_scale.py --records 10000,100000,1000000
--repo-sizes 10000,100000,1000000``.
"""

import argparse
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import busy_core as busy
import numpy as np
from common import best_time
from threadpoolctl import threadpool_limits

from sksketch import (
    RecursiveSketcher,
    SketchRepository,
    iter_parquet,
    make_activation_records,
    write_parquet,
)

D_SKETCH = 64  # sketch dimension of the record-sketching measurements
D_REPO = 256
POOL = 2000  # distinct synthetic records, cycled


def sizes(text):
    return [int(float(x)) for x in text.split(",") if x]


def pool():
    records, _ = make_activation_records(POOL, n_modules=9, depth=3,
                                         attribute_dim=8, random_state=0)
    return records


def make_dataset(directory, n_records, records, n_files=4):
    """``n_files`` Parquet files holding ``n_records`` cycled records."""
    directory.mkdir(parents=True, exist_ok=True)
    per_file = -(-n_records // n_files)
    cycle = itertools.cycle(records)
    for i in range(n_files):
        count = min(per_file, n_records - i * per_file)
        write_parquet(itertools.islice(cycle, count), directory / f"{i:03d}.parquet",
                      chunk_size=5000)
    return sorted(directory.glob("*.parquet"))


STREAM = """
import resource, sys, time
import numpy as np
from sksketch import RecursiveSketcher, iter_parquet, make_activation_records


def rss(field):
    # VmRSS (now) or VmHWM (peak since the last reset), KiB; Linux only.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


records, _ = make_activation_records(50, n_modules=9, depth=3, attribute_dim=8,
                                     random_state=0)
sketcher = RecursiveSketcher({d}, random_state=0).fit(records)
sketcher.transform(records)
try:  # reset the peak: only the streaming loop counts
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
except OSError:
    pass
base = rss("VmRSS")
start, n, total = time.perf_counter(), 0, np.zeros({d})
for path in sys.argv[1:]:
    for batch in iter_parquet(path):
        total += sketcher.transform(batch).sum(axis=0)
        n += batch.n_records
elapsed = time.perf_counter() - start
print(n, elapsed, base, rss("VmHWM"))
"""


def streaming_peak(files):
    """Records, seconds, RSS before and at peak (KiB) of one fresh process."""
    out = subprocess.run([sys.executable, "-c", STREAM.format(d=D_SKETCH),
                          *map(str, files)], capture_output=True, text=True,
                         check=True).stdout.split()
    n, elapsed, base, peak = out
    return int(n), float(elapsed), int(base), int(peak)


def _sketch_file_to(args):
    path, out, sketcher = args
    for i, batch in enumerate(iter_parquet(path)):
        np.save(f"{out}.{i:05d}.npy", sketcher.transform(batch))


def local_rate(files, sketcher, workers, out):
    with ProcessPoolExecutor(workers) as pool_:
        list(pool_.map(_sketch_file_to, [(files[0], out / "warm", sketcher)]))
        start = time.perf_counter()
        list(pool_.map(_sketch_file_to, [(f, out / f.stem, sketcher)
                                         for f in files]))
        return time.perf_counter() - start


def dask_rate(files, sketcher, workers, out):
    import dask.array as da
    import distributed

    from sksketch.dask import sketch_records

    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                  processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster):
        da.to_npy_stack(out / "warm", sketch_records(files[:1], sketcher))
        start = time.perf_counter()
        da.to_npy_stack(out / "all", sketch_records([str(f) for f in files],
                                                    sketcher))
        return time.perf_counter() - start


def bench_sketch(record_sizes, workdir, with_dask):
    records = pool()
    sketcher = RecursiveSketcher(D_SKETCH, random_state=0).fit(records[:50])
    rows = []
    for n in record_sizes:
        data = workdir / f"records-{n}"
        files = make_dataset(data, n, records)
        size_mb = sum(f.stat().st_size for f in files) / 2**20
        count, elapsed, base, peak = streaming_peak(files)
        row = {"n_records": n, "file_MiB": round(size_mb, 1),
               "stream_records_per_s": count / elapsed,
               "rss_before_MiB": base / 1024, "rss_peak_MiB": peak / 1024}
        for workers in (1, 2):
            out = workdir / f"out-local-{n}-{workers}"
            out.mkdir()
            row[f"local_{workers}w_records_per_s"] = n / local_rate(
                files, sketcher, workers, out)
            shutil.rmtree(out)
            if with_dask:
                out = workdir / f"out-dask-{n}-{workers}"
                out.mkdir()
                row[f"dask_{workers}w_records_per_s"] = n / dask_rate(
                    files, sketcher, workers, out)
                shutil.rmtree(out)
        shutil.rmtree(data)
        rows.append(row)
        print_rows([row], header=len(rows) == 1)
    return rows


def index_recall(repo, rng):
    """Build time, query time and recall@10 of the FAISS HNSW index."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return {}
    start = time.perf_counter()
    repo.build_index(metric="cosine")
    build = time.perf_counter() - start
    # Queries near stored sketches, as in use: a stored one plus noise.
    n = len(repo)
    stored = np.asarray(repo._vectors(n)[np.sort(rng.integers(n, size=100))])
    Q = stored + 0.5 * rng.standard_normal(stored.shape).astype(np.float32)
    exact, _ = repo.query(Q, k=10)
    approximate, _ = repo.query(Q, k=10, approximate=True, ef_search=128)
    recall = np.mean([len(set(a) & set(e)) / 10
                      for a, e in zip(approximate.tolist(), exact.tolist())])
    return {"index_build_s": build,
            "query_100_hnsw_s": best_time(lambda: repo.query(Q, k=10, approximate=True,
                                                        ef_search=128)),
            "hnsw_recall_at_10": float(recall)}


def interleaved_best(functions, repeat):
    """Best time of each function, its calls interleaved with the others'.

    Interleaved, so that a change of the machine's load during the run
    touches all of them alike and their ratios stay meaningful.
    """
    for function in functions.values():
        function()  # warm-up
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(repeat):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def query_vs_numpy(repo, Q, X, repeat, suffix=""):
    """100 exact queries (cosine, dot) against one NumPy product ``Q @ X.T``."""
    best = interleaved_best({
        "numpy_product_100_s": lambda: Q @ X.T,
        "query_100_cosine_s": lambda: repo.query(Q, k=10),
        "query_100_dot_s": lambda: repo.query(Q, k=10, metric="dot")}, repeat)
    numpy_100 = best["numpy_product_100_s"]
    best["query_100_cosine_over_numpy"] = best["query_100_cosine_s"] / numpy_100
    best["query_100_dot_over_numpy"] = best["query_100_dot_s"] / numpy_100
    return {name + suffix: value for name, value in best.items()}


def bench_repository(repo_sizes, workdir, index_max, repeat):
    records = pool()[:50]
    sketcher = RecursiveSketcher(D_REPO, dtype="float32", random_state=0).fit(records)
    repo = SketchRepository(workdir / "repo", sketcher=sketcher, sum_keys=["g"])
    rng = np.random.default_rng(0)
    Q = rng.standard_normal((100, D_REPO)).astype(np.float32)
    batch, added, add_time, rows = 10_000, 0, 0.0, []
    for target in sorted(repo_sizes):
        last = 0.0
        while added < target:
            m = min(batch, target - added)
            X = rng.standard_normal((m, D_REPO)).astype(np.float32)
            metadata = [{"g": int(i % 16)} for i in range(added, added + m)]
            start = time.perf_counter()
            repo.add(X, metadata=metadata)
            last = time.perf_counter() - start
            add_time += last
            added += m
        X = np.array(repo._vectors(len(repo)))  # a copy in memory, for NumPy
        row = {
            "n_sketches": target, "d": D_REPO,
            "add_sketches_per_s": added / add_time,
            "add_batch_latency_s": last,
            "query_1_s": best_time(lambda: repo.query(Q[:1], k=10)),
            "query_100_where_s": best_time(lambda: repo.query(Q, k=10,
                                                         where={"g": 3})),
            "sum_group_s": best_time(lambda: repo.sum(group_by="g")),
        }
        for suffix, enabled in (("", True), ("_busy_core", busy.ENABLED)):
            if enabled:
                with busy.busy_core(bool(suffix)):
                    row.update(query_vs_numpy(repo, Q, X, repeat, suffix))
        with threadpool_limits(1):  # both sides on one BLAS thread
            row.update(query_vs_numpy(repo, Q, X, repeat, "_1_thread"))
        if target <= index_max:
            row.update(index_recall(repo, rng))
        del X
        rows.append(row)
        print_rows([row], header=len(rows) == 1)
    repo.close()
    return rows


def print_rows(rows, header=True):
    keys = list(rows[0])
    if header:
        print(" | ".join(f"{k:>12}" for k in keys))
    for row in rows:
        print(" | ".join(f"{v:>12.4g}" if isinstance(v, float) else f"{v:>12}"
                         for v in row.values()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=sizes, default=sizes("10000,30000"))
    parser.add_argument("--repo-sizes", type=sizes, default=sizes("10000,100000"))
    parser.add_argument("--index-max", type=int, default=100_000,
                        help="largest repository to build a FAISS index of")
    parser.add_argument("--repeat", type=int, default=5,
                        help="runs of each query timing (the best is kept)")
    parser.add_argument("--busy-core", action="store_true",
                        help="also time the queries while another process "
                             "spins on one core")
    parser.add_argument("--skip", choices=["sketch", "repository", "dask"],
                        action="append", default=[])
    parser.add_argument("--output", default=str(Path(__file__).parent / "results"
                                                 / "bench_scale.json"))
    parser.add_argument("--workdir", default=None,
                        help="where the data sets go (default: a temporary "
                             "directory, removed)")
    args = parser.parse_args()
    busy.ENABLED = args.busy_core
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_scale_"))
    results = {"machine": platform.platform(), "processor": platform.processor(),
               "cpus": os.cpu_count(), "python": platform.python_version(),
               "numpy": np.__version__, "date": time.strftime("%Y-%m-%d"),
               "load_average_at_start": os.getloadavg()}
    try:
        if "sketch" not in args.skip:
            print("\nsketching record files (streamed; 1 vs 2 workers)")
            results["sketch"] = bench_sketch(args.records, workdir,
                                             "dask" not in args.skip)
        if "repository" not in args.skip:
            print(f"\nSketchRepository, d = {D_REPO}, float32")
            results["repository"] = bench_repository(args.repo_sizes, workdir,
                                                     args.index_max, args.repeat)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    out = Path(args.output)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
