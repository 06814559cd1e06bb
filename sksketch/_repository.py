"""Helpers of :mod:`sksketch.repository`: storage layout, filters, top-k scans.

Storage
-------
A repository is a directory with three files:

``meta.sqlite``
    SQLite in WAL mode (``synchronous=FULL``). Table ``config`` holds the
    sketcher's parameters and seed (JSON); table ``sketches`` one row per
    sketch: ``row`` (its position in the vector file), ``id``, ``time``,
    ``metadata`` (JSON); table ``sums`` the running sums, in float64, of
    every tracked group.
``vectors.bin``
    The sketches, row after row, ``sketch_dim`` values of the repository's
    dtype each, with no header: an append-only array read by memory mapping.
``norms.bin``
    Each sketch's Euclidean norm (float64), in the same order, so that a
    cosine scan needs no pass over the vectors to compute them. Format
    version 1 had no norm file: opening such a repository computes it, under
    the write lock, and records version 2.

An ``add`` takes SQLite's write lock (``BEGIN IMMEDIATE``: one writer at a
time, across processes), writes its vectors and their norms at the end of
the committed part of the two files and syncs them, then inserts its rows and
updates the running sums in the same transaction, and commits. The committed
length is the number of rows in ``sketches``: bytes past it (a writer killed
between writing and committing) are ignored by readers and overwritten by the
next writer. Committed rows are never rewritten, so a reader that read the
count in one snapshot can map and read those rows while a writer appends.
"""

import json
import math
import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager

import numpy as np

from ._optional import import_optional

META_FILE = "meta.sqlite"
VECTOR_FILE = "vectors.bin"
NORM_FILE = "norms.bin"
# Version 2 added the norm file; a version 1 repository gets one when opened.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
# Bytes of stored vectors read per step of a scan, and most scores held at once.
# Large chunks: with fewer, larger products, BLAS threads synchronize less
# often, which matters most when another process holds a core (smaller chunks
# gained nothing on an idle machine; benchmarks/bench_scale.py measures).
CHUNK_BYTES = 32 * 2**20
MAX_SCORES = 2**23
# Columns of the first chunk partitioned to start the running k-th best scores.
FIRST_PIECE = 4096
# Most SQL parameters per statement (SQLite's limit is 32766 since 3.32).
MAX_PARAMS = 900
# What a tracked metadata value may be: a JSON scalar.
SCALARS = (str, bool, int, float, type(None))
OPERATORS = {"==": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


def connect(file, timeout):
    """A connection in autocommit mode (transactions are explicit), WAL."""
    con = sqlite3.connect(file, timeout=timeout, isolation_level=None,
                          check_same_thread=False)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    return con


@contextmanager
def transaction(con, *, write):
    """``BEGIN IMMEDIATE`` (the write lock) or ``BEGIN``; commit, or roll back."""
    con.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


SCHEMA = """
CREATE TABLE IF NOT EXISTS config (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sketches (
    row INTEGER PRIMARY KEY, id UNIQUE NOT NULL, time REAL NOT NULL,
    metadata TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS sketches_time ON sketches (time);
CREATE TABLE IF NOT EXISTS sums (
    keys TEXT NOT NULL, value TEXT NOT NULL, count INTEGER NOT NULL,
    vector BLOB NOT NULL, PRIMARY KEY (keys, value));
"""


def committed_rows(con):
    """Number of committed sketches: rows are numbered 0, 1, ... without gaps."""
    (last,) = con.execute("SELECT max(row) FROM sketches").fetchone()
    return 0 if last is None else int(last) + 1


def dumps(value):
    """Canonical JSON: the same text for equal values."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"),
                      allow_nan=False)


def write_at(fd, data, offset, *, sync=True):
    """Write all of ``data`` at ``offset``, then (by default) sync it to disk."""
    view = memoryview(np.ascontiguousarray(data)).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
    if sync:
        sync_file(fd)


def sync_file(fd):
    (getattr(os, "fdatasync", None) or os.fsync)(fd)


def file_rows(file, row_bytes):
    """Whole rows of ``row_bytes`` in ``file`` (0 if it does not exist)."""
    try:
        return os.path.getsize(file) // row_bytes
    except FileNotFoundError:
        return 0


# -- metadata filters --------------------------------------------------------

def json_path(key, argument):
    if not isinstance(key, str):
        raise TypeError(f"SketchRepository: '{argument}' keys must be str; got "
                        f"{type(key).__name__} {key!r}")
    if not key or '"' in key or "\\" in key:
        raise ValueError(f"SketchRepository: '{argument}' key {key!r} must be a "
                         f"non-empty str without '\"' or '\\'")
    return f'$."{key}"'


def check_scalar(value, what):
    if not isinstance(value, SCALARS) or isinstance(value, np.generic):
        raise TypeError(f"SketchRepository: {what} must be a str, int, float, "
                        f"bool or None; got {type(value).__name__} {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"SketchRepository: {what} must be finite; got {value!r}")
    return value


def where_sql(where):
    """``(sql, params)``: a WHERE clause over ``sketches`` for a metadata filter.

    ``where`` maps metadata keys to a value (equality; None matches a missing
    key or a null) or to a dict of operators: ``==``, ``!=``, ``<``, ``<=``,
    ``>``, ``>=`` (a value each) and ``in``, ``not in`` (a list of values).
    Conditions are and-ed. Values compare as SQLite compares JSON values:
    ``true`` equals 1 and a string never equals a number.
    """
    if where is None:
        return "1", []
    if not isinstance(where, Mapping):
        raise TypeError(f"SketchRepository: 'where' must be a dict of metadata "
                        f"conditions or None; got {type(where).__name__} "
                        f"{where!r}")
    clauses, params = [], []
    for key, condition in where.items():
        column = "json_extract(metadata, ?)"
        path = json_path(key, "where")
        conditions = condition if isinstance(condition, Mapping) else {"==": condition}
        if isinstance(condition, list | tuple | set | np.ndarray):
            raise TypeError(f"SketchRepository: 'where' condition on {key!r} is "
                            f"a {type(condition).__name__}; write {{'in': [...]}} "
                            f"to match any of several values")
        for operator, value in conditions.items():
            what = f"'where' value of {key!r} for {operator!r}"
            if operator in ("in", "not in"):
                if isinstance(value, str) or not isinstance(value, Iterable):
                    raise TypeError(f"SketchRepository: {what} must be a list; "
                                    f"got {type(value).__name__} {value!r}")
                values = [check_scalar(v, what) for v in value]
                present = [v for v in values if v is not None]
                marks = ", ".join("?" * len(present))
                test = f"{column} IN ({marks})"
                if None in values:
                    test = f"({test} OR {column} IS NULL)"
                    params += [path, *present, path]
                else:
                    params += [path, *present]
                if operator == "not in":
                    test = f"NOT coalesce({test}, 0)"
                clauses.append(test)
            elif operator in OPERATORS:
                check_scalar(value, what)
                if value is None and operator in ("==", "!="):
                    clauses.append(f"{column} IS {'NOT ' * (operator == '!=')}NULL")
                    params.append(path)
                elif value is None:
                    raise ValueError(f"SketchRepository: {what} cannot be None")
                else:
                    clauses.append(f"{column} {OPERATORS[operator]} ?")
                    params += [path, value]
            else:
                raise ValueError(f"SketchRepository: 'where' operator {operator!r} "
                                 f"on {key!r} is not one of "
                                 f"{sorted([*OPERATORS, 'in', 'not in'])}")
    return " AND ".join(clauses) or "1", params


def equality_filter(where):
    """``where`` as ``{key: value}`` if it only tests equalities, else None."""
    if where is None:
        return {}
    equal = {}
    for key, condition in where.items():
        if isinstance(condition, Mapping):
            if set(condition) != {"=="}:
                return None
            condition = condition["=="]
        equal[key] = condition
    return equal


def key_tuple(keys, argument):
    """``keys`` (a str or a sequence of str) as a tuple of checked str."""
    if keys is None:
        return ()
    if isinstance(keys, str):
        keys = (keys,)
    if not isinstance(keys, Sequence):
        raise TypeError(f"SketchRepository: '{argument}' must be a str or a "
                        f"sequence of str; got {type(keys).__name__} {keys!r}")
    keys = tuple(keys)
    for key in keys:
        json_path(key, argument)
    if len(set(keys)) != len(keys):
        raise ValueError(f"SketchRepository: '{argument}' repeats a key: {keys!r}")
    return keys


def group_values(metadata, keys, row_name):
    """The tuple of ``metadata``'s values for ``keys`` (None where absent)."""
    values = tuple(metadata.get(key) for key in keys)
    for key, value in zip(keys, values):
        if not isinstance(value, SCALARS):
            raise ValueError(f"SketchRepository: {row_name}: metadata {key!r} is "
                             f"a {type(value).__name__}, but sums are grouped "
                             f"by it; grouped values must be JSON scalars")
    return values


def group_rows(values):
    """``(groups, codes)``: the distinct tuples of ``values`` and each one's."""
    index, codes = {}, np.empty(len(values), np.intp)
    for i, value in enumerate(values):
        codes[i] = index.setdefault(value, len(index))
    return list(index), codes


def group_sums(vectors, codes, n_groups):
    """Float64 sums of ``vectors`` rows per group code."""
    sums = np.zeros((n_groups, vectors.shape[1]), np.float64)
    np.add.at(sums, codes, vectors)
    return sums


# -- scans -------------------------------------------------------------------

def chunk_rows(sketch_dim, itemsize, n_queries=1):
    by_bytes = CHUNK_BYTES // max(1, sketch_dim * itemsize)
    return int(max(1, min(by_bytes, MAX_SCORES // max(1, n_queries))))


def row_norms(block):
    """Euclidean norms of the rows of ``block``, computed in float64."""
    block = np.asarray(block, np.float64)
    return np.sqrt(np.einsum("ij,ij->i", block, block))


def inverse(norms, dtype):
    """``1 / norms`` (0 for a zero norm) in ``dtype``."""
    norms = np.asarray(norms, np.float64)
    out = np.zeros(norms.shape)
    return np.divide(1.0, norms, out=out, where=norms > 0).astype(dtype, copy=False)


def inverse_norms(block):
    return inverse(row_norms(block), np.asarray(block).dtype)


def iter_chunks(vectors, rows, chunk, norms=None):
    """``(rows, block, block_norms)`` pieces of the stored ``vectors``.

    ``vectors`` (and ``norms``, the rows' norms, or None) are memory-mapped;
    ``rows`` None means all rows, read as contiguous views; otherwise the
    sorted row numbers to read, gathered a chunk at a time. ``block_norms``
    is None without ``norms``.
    """
    vectors = np.asarray(vectors)  # a plain view: no memmap bookkeeping per slice
    norms = None if norms is None else np.asarray(norms)
    n = vectors.shape[0] if rows is None else rows.size
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        index = slice(lo, hi) if rows is None else rows[lo:hi]
        yield (np.arange(lo, hi) if rows is None else index, vectors[index],
               None if norms is None else norms[index])


def top_k(queries, chunks, k, metric):
    """Exact top-``k`` rows per query: ``(rows, scores)``, best first.

    Scores are inner products (``"dot"``) or cosines (``"cosine"``; 0 for a
    zero vector), computed in the stored vectors' dtype. Ties keep the
    smaller row. Rows are -1 and scores -inf where fewer than ``k`` rows were
    scanned. ``chunks`` is :func:`iter_chunks`'s; cosine uses the stored
    norms when they are given.

    Beyond the products, the cost is one comparison per score: each query's
    running ``k``-th best score picks the few candidates of a chunk (the
    first chunk's start is partitioned for it), and the products are written
    into one reused buffer.
    """
    n_queries = queries.shape[0]
    best = (np.full((n_queries, k), -np.inf), np.full((n_queries, k), -1, np.int64))
    buffer = threshold = None
    for rows, block, norms in chunks:
        m = block.shape[0]
        if buffer is None:
            dtype = np.result_type(queries.dtype, block.dtype)
            queries = queries.astype(dtype, copy=False)
            if metric == "cosine":
                queries = queries * inverse_norms(queries)[:, None]
            buffer = np.empty(n_queries * m, dtype)
            threshold = np.full((n_queries, 1), -np.inf, dtype)
        scores = buffer[:n_queries * m].reshape(n_queries, m)
        np.matmul(queries, block.T, out=scores)
        if metric == "cosine":
            scores *= inverse(row_norms(block) if norms is None else norms,
                              scores.dtype)
        if best[1][0, -1] >= 0:
            # Each query's candidates: the scores above its running k-th
            # best (np.nonzero on 2-D is many times slower than flatnonzero).
            flat = np.flatnonzero(scores > threshold)
            if flat.size == 0:
                continue
        elif m > k:
            # Fewer than k rows seen. The k-th best of a first piece bounds
            # the chunk's from below: the scores reaching it hold the chunk's
            # k best, ties included, and partitioning the piece costs less.
            p = max(k, min(m, FIRST_PIECE))
            cut = np.partition(scores[:, :p], p - k, axis=1)[:, p - k:p - k + 1]
            flat = np.flatnonzero(scores >= cut)
        else:
            flat = np.arange(n_queries * m)
        query_index, columns = np.divmod(flat, m)
        candidates = scores.ravel()[flat]
        best = merge_candidates(best, query_index, candidates.astype(np.float64),
                                np.asarray(rows)[columns], k)
        # Exact: the running scores are float64 images of ``dtype`` values.
        threshold[:, 0] = best[0][:, -1]
    return best[1], best[0]


def merge_candidates(best, query_index, candidates, candidate_rows, k):
    """The ``k`` best of the running best and of candidates ``(query, score, row)``.
    """
    best_scores, best_rows = best
    n_queries = best_scores.shape[0]
    query_all = np.concatenate([np.repeat(np.arange(n_queries), k), query_index])
    score_all = np.concatenate([best_scores.ravel(), candidates])
    row_all = np.concatenate([best_rows.ravel(), candidate_rows])
    # The k best of each query: by query, score descending, row ascending.
    order = np.lexsort((row_all, -score_all, query_all))
    query_sorted = query_all[order]
    starts = np.searchsorted(query_sorted, np.arange(n_queries))
    keep = order[np.arange(order.size) - starts[query_sorted] < k]
    return score_all[keep].reshape(n_queries, k), row_all[keep].reshape(n_queries, k)


def faiss_module():
    return import_optional("faiss", "index", "An approximate index")
