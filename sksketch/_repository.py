"""Helpers of :mod:`sksketch.repository`: storage layout, filters, top-k scans.

Storage
-------
A repository is a directory with two files:

``meta.sqlite``
    SQLite in WAL mode (``synchronous=FULL``). Table ``config`` holds the
    sketcher's parameters and seed (JSON); table ``sketches`` one row per
    sketch: ``row`` (its position in the vector file), ``id``, ``time``,
    ``metadata`` (JSON); table ``sums`` the running sums, in float64, of
    every tracked group.
``vectors.bin``
    The sketches, row after row, ``sketch_dim`` values of the repository's
    dtype each, with no header: an append-only array read by memory mapping.

An ``add`` takes SQLite's write lock (``BEGIN IMMEDIATE``: one writer at a
time, across processes), writes its vectors at the end of the committed part
of the vector file and syncs them, then inserts its rows and updates the
running sums in the same transaction, and commits. The committed length is
the number of rows in ``sketches``: vector bytes past it (a writer killed
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

META_FILE = "meta.sqlite"
VECTOR_FILE = "vectors.bin"
FORMAT_VERSION = 1
# Bytes of stored vectors read per step of a scan, and most scores held at once.
CHUNK_BYTES = 32 * 2**20
MAX_SCORES = 2**23
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


def write_at(fd, data, offset):
    """Write all of ``data`` at ``offset``, then sync it to disk."""
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
    (getattr(os, "fdatasync", None) or os.fsync)(fd)


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


def iter_chunks(vectors, rows, chunk):
    """``(rows, block)`` pieces of the stored ``vectors`` (a memmap).

    ``rows`` None means all rows, read as contiguous views; otherwise the
    sorted row numbers to read, gathered a chunk at a time.
    """
    n = vectors.shape[0] if rows is None else rows.size
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        if rows is None:
            yield np.arange(lo, hi), np.asarray(vectors[lo:hi])
        else:
            yield rows[lo:hi], np.asarray(vectors[rows[lo:hi]])


def inverse_norms(block):
    norms = np.sqrt(np.einsum("ij,ij->i", block, block))
    return np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)


def top_k(queries, chunks, k, metric):
    """Exact top-``k`` rows per query: ``(rows, scores)``, best first.

    Scores are inner products (``"dot"``) or cosines (``"cosine"``; 0 for a
    zero vector). Ties keep the smaller row. Rows are -1 and scores -inf
    where fewer than ``k`` rows were scanned.

    Only the first ``FIRST_PIECE`` scores per query are partitioned; after
    that, each query's running ``k``-th best score lets a comparison pick the
    few candidates of a chunk, so the cost beyond the products is one
    comparison per score.
    """
    n_queries = queries.shape[0]
    if metric == "cosine":
        queries = queries * inverse_norms(queries)[:, None]
    best = (np.full((n_queries, k), -np.inf), np.full((n_queries, k), -1, np.int64))
    for rows, block in chunks:
        scores = queries @ block.T
        if metric == "cosine":
            scores *= inverse_norms(block)[None, :]
        if best[1][0, -1] < 0 and scores.shape[1] > FIRST_PIECE:
            best = _merge(best, scores[:, :FIRST_PIECE], rows[:FIRST_PIECE], k)
            scores, rows = scores[:, FIRST_PIECE:], rows[FIRST_PIECE:]
        best = _merge(best, scores, rows, k)
    return best[1], best[0]


FIRST_PIECE = 4096


def _merge(best, scores, rows, k):
    """The running best ``(scores, rows)`` updated with a block of scores."""
    best_scores, best_rows = best
    n_queries = best_scores.shape[0]
    above = scores > best_scores[:, -1:]
    n_above = int(np.count_nonzero(above))
    if n_above == 0:
        return best
    if n_above > max(4 * n_queries * k, scores.size // 8) and scores.shape[1] > k:
        # Most entries compete (the first block): keep each query's best k.
        columns = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        query_index = np.repeat(np.arange(n_queries), k)
        candidates = np.take_along_axis(scores, columns, axis=1).ravel()
        candidate_rows = rows[columns].ravel()
    else:
        query_index, columns = np.nonzero(above)
        candidates = scores[query_index, columns]
        candidate_rows = rows[columns]
    return merge_candidates(best, query_index, candidates.astype(np.float64),
                            candidate_rows, k)


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
    try:
        import faiss
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("an approximate index needs FAISS: pip install "
                          "'sksketch[index]'") from None
    return faiss
