"""SketchRepository: a persistent, queryable, summable store of sketches.

Why SQLite in WAL mode plus a memory-mapped vector file
-------------------------------------------------------
The repository must survive a writer killed at any instant, let readers in
other processes query while one process appends, filter on metadata, keep
running sums, and scan millions of ``d``-dimensional vectors at the speed of
a matrix product. The standard library's ``sqlite3`` gives the first three
without a new dependency: one transaction per ``add`` (all of a batch or
none of it), WAL so that readers never block the writer nor see half a
transaction, ``json_extract`` for metadata filters, and an index on time.
The vectors themselves live beside it, in an append-only file read through
``numpy.memmap``: a scan multiplies the queries with contiguous views of the
mapped file, with no per-row Python work, no copy and no decoding, so an
exact query runs close to the speed of one BLAS product over the same
matrix (``benchmarks/bench_scale.py`` measures it), and the operating system's
page cache, not the process, holds what is read. Vectors as BLOBs in SQLite
would be as safe but pay a Python object and a copy per row on every scan;
DuckDB or LanceDB would be dependencies for what this split already gives.

Each sketch's norm is stored too, in a second append-only file, so that a
cosine scan costs no more than an inner-product one. The files stay
consistent because the committed length lives in SQLite: an ``add`` writes
its vectors and norms past the committed rows and syncs them *before* the
transaction that inserts its rows commits. A writer killed in between
leaves bytes past the committed length, which readers never read and the next
writer overwrites; committed rows are never rewritten. See
``sksketch/_repository.py`` for the layout.
"""

import datetime
import os
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from numbers import Integral, Real

import numpy as np
from sklearn.utils import Bunch

from . import _repository as _store
from ._array_api import is_array, to_numpy

__all__ = ["SketchRepository"]

_COMPARED = ("sketch_dim", "wrapper", "matrix", "seed")
_PARAMETER = {"sketch_dim": "sketch_dim", "wrapper": "wrapper", "matrix": "matrix",
              "seed": "random_state (seed_)"}


def _sketcher_config(sketcher):
    from ._sketch import RecursiveSketcher

    if not isinstance(sketcher, RecursiveSketcher):
        raise TypeError(f"SketchRepository: 'sketcher' must be a fitted "
                        f"RecursiveSketcher; got {type(sketcher).__name__}")
    if not hasattr(sketcher, "seed_"):
        raise ValueError("SketchRepository: 'sketcher' is not fitted; fit it on "
                         "records first (its seed_ and modules_ define the "
                         "sketches)")
    return {"sketch_dim": int(sketcher.sketch_dim), "wrapper": sketcher.wrapper,
            "matrix": sketcher.matrix, "seed": int(sketcher.seed_),
            "dtype": np.dtype(sketcher.dtype).name,
            "modules": {name: int(dim) for name, dim in sketcher.modules_.items()},
            "module_graph": {name: list(children) for name, children
                             in sketcher.module_graph_.items()}}


def _rebuild_sketcher(config):
    """A fitted sketcher equal to the one recorded: same seed, modules, graph.

    Fitted, through the public API, on one record per module and one per
    edge of the module graph, with zero attributes.
    """
    from ._batch import RecordBatch
    from ._sketch import RecursiveSketcher

    modules, graph = config["modules"], config["module_graph"]
    names, record, edges = list(modules), list(range(len(modules))), []
    for parent, children in graph.items():
        for child in children:
            edges.append((len(names), len(names) + 1))
            record += [len(set(record))] * 2
            names += [parent, child]
    attributes = {name: np.zeros((names.count(name), dim))
                  for name, dim in modules.items()}
    batch = RecordBatch(module=np.array(names, dtype=object), attributes=attributes,
                        record=record, n_records=len(set(record)),
                        edges=np.array(edges, np.intp).reshape(-1, 2))
    return RecursiveSketcher(config["sketch_dim"], wrapper=config["wrapper"],
                             matrix=config["matrix"], dtype=config["dtype"],
                             random_state=config["seed"]).fit(batch)


def _timestamp(value, argument):
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"SketchRepository: '{argument}' must be a number (seconds "
                        f"since the epoch) or a datetime; got "
                        f"{type(value).__name__} {value!r}")
    if not np.isfinite(value):
        raise ValueError(f"SketchRepository: '{argument}' must be finite; "
                         f"got {value!r}")
    return float(value)


class SketchRepository:
    """A persistent store of sketches: add, query, sum, find what is new.

    The paper's long-lived memory: sketches of many inputs, kept on disk,
    queried by similarity, filtered by metadata and summed by group. By
    linearity, a group's sum is the sketch of the union of its records, which
    :class:`SketchAttributeRecoverer` decodes (counts, mean attributes).

    Parameters
    ----------
    path : str or path-like
        A directory: opened if it holds a repository, created otherwise.
    sketcher : RecursiveSketcher, default=None
        The fitted sketcher the sketches come from. Required to create a
        repository, whose sketcher parameters and seed it records. When
        opening one, a sketcher whose ``sketch_dim``, ``wrapper``, ``matrix``
        or ``seed_`` (from ``random_state``) differs is refused: its sketches
        would compare and decode into wrong numbers. It may know more
        modules (``partial_fit``); they are recorded. ``None`` rebuilds the
        recorded sketcher.
    sum_keys : sequence of (str or tuple of str), default=()
        Metadata keys (or tuples of keys) whose groups keep running sums: a
        group's sum then costs ``O(d)``, not a scan. The total is always
        kept. Keys added when opening an existing repository are summed once
        over what it holds.
    timeout : float, default=60
        Seconds to wait for another process's write lock.

    Attributes
    ----------
    path : str
        The repository's directory.
    sketcher : RecursiveSketcher
        The sketcher records given to :meth:`add` and :meth:`query` are
        sketched with.
    sketch_dim : int
    dtype : numpy.dtype
        Floating type of the stored sketches (the creating sketcher's).

    See Also
    --------
    RecursiveSketcher : Make the sketches.
    SketchAttributeRecoverer : Decode sums of sketches.

    Notes
    -----
    Entries are appended, never changed or removed. Every ``add`` is one
    transaction: after a crash at any instant the repository holds every
    ``add`` that returned and nothing of the others. One process writes at a
    time (the others wait up to ``timeout``); any number of processes read
    while it writes, each query seeing the entries committed when it began.
    A repository object is for one thread at a time: open one per thread or
    process. The storage choice is defended in the module docstring.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from sksketch import (RecursiveSketcher, SketchRepository,
    ...                       make_activation_records)
    >>> records, labels = make_activation_records(30, random_state=0)
    >>> sketcher = RecursiveSketcher(64, random_state=0).fit(records)
    >>> S = sketcher.transform(records)
    >>> directory = tempfile.mkdtemp()
    >>> with SketchRepository(directory, sketcher=sketcher,
    ...                       sum_keys=["label"]) as repo:
    ...     ids = repo.add(S, metadata=[{"label": int(c)} for c in labels])
    ...     found, scores = repo.query(S[:2], k=1)
    ...     label_sum = repo.sum(group_by="label")[0]
    >>> found[:, 0].tolist()
    [0, 1]
    >>> bool(np.allclose(label_sum, S[labels == 0].sum(axis=0)))
    True

    The repository reopens with its own sketcher, whose sketches match:

    >>> reopened = SketchRepository(directory)
    >>> len(reopened), reopened.sketcher.seed_
    (30, 0)
    >>> bool(np.allclose(reopened.sketcher.transform(records[:1]), S[:1]))
    True
    >>> reopened.close()
    """

    def __init__(self, path, *, sketcher=None, sum_keys=(), timeout=60.0):
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"SketchRepository: 'path' must be a str or path-like; "
                            f"got {type(path).__name__} {path!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, Real) or timeout < 0:
            raise ValueError(f"SketchRepository: 'timeout' must be a number >= 0; "
                             f"got {timeout!r}")
        if isinstance(sum_keys, str):
            raise TypeError(f"SketchRepository: 'sum_keys' must be a sequence of "
                            f"keys or of tuples of keys; got the str {sum_keys!r} "
                            f"(write [{sum_keys!r}])")
        tracked = sorted({tuple(sorted(_store.key_tuple(keys, "sum_keys")))
                          for keys in sum_keys})
        given = None if sketcher is None else _sketcher_config(sketcher)
        self.path = os.fspath(path)
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise ValueError(f"SketchRepository: 'path' {self.path!r} is a file, "
                             f"not a repository directory")
        meta = os.path.join(self.path, _store.META_FILE)
        if given is None and not os.path.exists(meta):
            raise ValueError(f"SketchRepository: no repository at {self.path!r}; "
                             f"pass a fitted 'sketcher' to create one")
        os.makedirs(self.path, exist_ok=True)
        self._vector_file = os.path.join(self.path, _store.VECTOR_FILE)
        self._norm_file = os.path.join(self.path, _store.NORM_FILE)
        self._mapped = self._mapped_norms = None
        self._con = _store.connect(meta, float(timeout))
        try:
            self._open(given, tracked)
        except BaseException:
            self._con.close()
            raise
        self.sketcher = sketcher if sketcher is not None else _rebuild_sketcher(
            self._config)

    def _open(self, given, tracked):
        with _store.transaction(self._con, write=True) as con:
            for statement in _store.SCHEMA.split(";"):
                if statement.strip():
                    con.execute(statement)
            config = {key: _json_load(value) for key, value
                      in con.execute("SELECT key, value FROM config")}
            created = not config
            if created and given is None:  # created and removed meanwhile
                raise ValueError(f"SketchRepository: no repository at "
                                 f"{self.path!r}; pass a fitted 'sketcher' to "
                                 f"create one")
            if created:
                config = {**given, "format_version": _store.FORMAT_VERSION,
                          "sum_keys": []}
            self.sketch_dim = int(config["sketch_dim"])
            self.dtype = np.dtype(config["dtype"])
            if created:
                self._write_config(con, config)
                self._track(con, config, [()])
            elif config.get("format_version") not in _store.READABLE_VERSIONS:
                raise ValueError(f"SketchRepository: {self.path!r} has format "
                                 f"version {config.get('format_version')!r}; this "
                                 f"sksketch reads versions "
                                 f"{list(_store.READABLE_VERSIONS)}")
            elif given is not None:
                self._check_config(config, given)
                if self._merge_modules(config, given):
                    self._write_config(con, config)
            if not created:
                self._store_missing_norms(con, config)
            new = [keys for keys in tracked
                   if list(keys) not in config["sum_keys"]]
            if new:
                self._track(con, config, new)
        self._config = config

    # -- configuration -------------------------------------------------------

    def _store_missing_norms(self, con, config):
        """Compute the norms the norm file lacks (all of them in version 1).

        Under the write lock, like an ``add``: the norms are written and
        synced, then the format version is raised in the same transaction.
        Killed in between, the next opening does it again.
        """
        n = _store.committed_rows(con)
        have = 0
        if config["format_version"] == _store.FORMAT_VERSION:
            have = min(n, _store.file_rows(self._norm_file, 8))
        if have < n:
            vectors = self._vectors(n)
            chunk = _store.chunk_rows(self.sketch_dim, 8)
            fd = os.open(self._norm_file, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                for lo in range(have, n, chunk):
                    norms = _store.row_norms(vectors[lo:min(n, lo + chunk)])
                    _store.write_at(fd, norms, lo * 8, sync=False)
                _store.sync_file(fd)
            finally:
                os.close(fd)
        if config["format_version"] != _store.FORMAT_VERSION:
            config["format_version"] = _store.FORMAT_VERSION
            self._write_config(con, config)

    def _check_config(self, config, given):
        for key in _COMPARED:
            if config[key] != given[key]:
                raise ValueError(
                    f"SketchRepository: the sketcher's {_PARAMETER[key]} is "
                    f"{given[key]!r}, but the sketches in {self.path!r} were made "
                    f"with {_PARAMETER[key]}={config[key]!r}; sketches of "
                    f"different sketchers do not compare or decode. Use the "
                    f"repository's sketcher (open it with sketcher=None)")
        for name, dim in given["modules"].items():
            known = config["modules"].get(name)
            if known is not None and known != dim:
                raise ValueError(f"SketchRepository: the sketcher's module {name!r} "
                                 f"has dimension {dim}, but {known} in "
                                 f"{self.path!r}")

    @staticmethod
    def _merge_modules(config, given):
        """Add the modules and graph edges ``given`` knows; True if any."""
        modules = {**config["modules"], **given["modules"]}
        graph = {name: set(children) for name, children
                 in config["module_graph"].items()}
        for name, children in given["module_graph"].items():
            graph.setdefault(name, set()).update(children)
        graph = {name: sorted(graph[name]) for name in sorted(graph)}
        modules = dict(sorted(modules.items()))
        changed = modules != config["modules"] or graph != config["module_graph"]
        config["modules"], config["module_graph"] = modules, graph
        return changed

    @staticmethod
    def _read_config(con):
        return {key: _json_load(value) for key, value
                in con.execute("SELECT key, value FROM config")}

    @staticmethod
    def _write_config(con, config):
        con.executemany("INSERT OR REPLACE INTO config VALUES (?, ?)",
                        [(key, _store.dumps(value)) for key, value in config.items()])

    def _track(self, con, config, new_keys):
        """Start running sums for ``new_keys``, over the entries held."""
        n = _store.committed_rows(con)
        vectors = self._vectors(n)
        for keys in new_keys:
            totals = {}
            rows = con.execute("SELECT row, metadata FROM sketches ORDER BY row")
            while batch := rows.fetchmany(_store.chunk_rows(self.sketch_dim, 8)):
                index = np.array([row for row, _ in batch], np.intp)
                values = [_store.group_values(_json_load(meta), keys, f"row {row}")
                          for row, meta in batch]
                groups, codes = _store.group_rows(values)
                sums = _store.group_sums(np.asarray(vectors[index], np.float64),
                                         codes, len(groups))
                counts = np.bincount(codes, minlength=len(groups))
                for group, vector, count in zip(groups, sums, counts):
                    total = totals.setdefault(group,
                                              [0, np.zeros(self.sketch_dim)])
                    total[0] += int(count)
                    total[1] += vector
            if not keys:
                totals.setdefault((), [0, np.zeros(self.sketch_dim)])
            con.executemany("INSERT OR REPLACE INTO sums VALUES (?, ?, ?, ?)",
                            [(_store.dumps(list(keys)), _store.dumps(list(group)),
                              count, vector.tobytes())
                             for group, (count, vector) in totals.items()])
            config["sum_keys"] = sorted([*config["sum_keys"], list(keys)])
        self._write_config(con, config)

    def _check_sketcher(self, sketcher):
        if sketcher is not None:
            self._check_config(self._config, _sketcher_config(sketcher))

    # -- reading -------------------------------------------------------------

    def _vectors(self, n):
        """The first ``n`` stored sketches, memory-mapped (read-only).

        The mapping is kept, and remapped only when the file grew past it,
        so pages already mapped are not faulted in again by the next query.
        Rows past the committed ``n`` may be mapped but are never read.
        """
        if n == 0:
            return np.empty((0, self.sketch_dim), self.dtype)
        mapped = self._mapped
        if mapped is None or mapped.shape[0] < n:
            row_bytes = self.sketch_dim * self.dtype.itemsize
            rows = os.path.getsize(self._vector_file) // row_bytes
            mapped = self._mapped = np.memmap(self._vector_file, dtype=self.dtype,
                                              mode="r", shape=(rows, self.sketch_dim))
        return mapped[:n]

    def _norms(self, n):
        """The norms of the first ``n`` stored sketches (float64), memory-mapped."""
        if n == 0:
            return np.empty(0)
        mapped = self._mapped_norms
        if mapped is None or mapped.shape[0] < n:
            rows = _store.file_rows(self._norm_file, 8)
            if rows < n:
                raise ValueError(f"SketchRepository: {self.path!r} holds {n} "
                                 f"sketches but the norms of only {rows}; the "
                                 f"norm file was changed outside sksketch")
            mapped = self._mapped_norms = np.memmap(self._norm_file, np.float64,
                                                    mode="r", shape=(rows,))
        return mapped[:n]

    def _snapshot(self, where=None, since=None, before=None):
        """``(n, rows)``: committed count and the rows matching, in one read.

        ``rows`` is None when every committed row matches.
        """
        sql, params = _store.where_sql(where)
        if since is not None:
            sql, params = f"({sql}) AND time >= ?", [*params, since]
        if before is not None:
            sql, params = f"({sql}) AND time < ?", [*params, before]
        with _store.transaction(self._con, write=False) as con:
            n = _store.committed_rows(con)
            if sql == "1":
                return n, None
            rows = np.fromiter((row for (row,) in con.execute(
                f"SELECT row FROM sketches WHERE {sql} ORDER BY row", params)),
                np.int64)
        return n, rows

    def _as_sketches(self, sketches, argument):
        from ._recover import _is_records

        if _is_records(sketches):
            sketches = self.sketcher.transform(sketches)
        if is_array(sketches):  # CuPy, PyTorch (autograd on or not), ...
            sketches = to_numpy(sketches)
        try:
            array = np.asarray(sketches, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"SketchRepository: '{argument}' must be a 2-D array of "
                            f"sketches or a sequence of records; got "
                            f"{type(sketches).__name__}") from None
        if array.ndim == 1:
            array = array[None, :]
        if array.ndim != 2 or array.shape[1] != self.sketch_dim:
            raise ValueError(f"SketchRepository: '{argument}' must have shape "
                             f"(n, {self.sketch_dim}); got {array.shape}")
        if not np.isfinite(array).all():
            raise ValueError(f"SketchRepository: '{argument}' has non-finite "
                             f"values")
        return array.astype(self.dtype, copy=False)

    def _ids_of(self, rows):
        """The ids of ``rows`` (an int array), as an object array."""
        flat = np.asarray(rows).ravel()
        wanted = sorted(set(flat[flat >= 0].tolist()))
        found = {}
        for lo in range(0, len(wanted), _store.MAX_PARAMS):
            part = wanted[lo:lo + _store.MAX_PARAMS]
            found.update(self._con.execute(
                f"SELECT row, id FROM sketches WHERE row IN "
                f"({', '.join('?' * len(part))})", part))
        ids = np.empty(flat.size, dtype=object)
        ids[:] = [found.get(row) for row in flat.tolist()]
        return ids.reshape(np.shape(rows))

    def __len__(self):
        return _store.committed_rows(self._con)

    def __repr__(self):
        return (f"SketchRepository({self.path!r}, sketch_dim={self.sketch_dim}, "
                f"n_sketches={len(self)})")

    def get(self, ids):
        """The sketches and metadata stored under ``ids``.

        Parameters
        ----------
        ids : sequence of (str or int)

        Returns
        -------
        sketches : ndarray of shape (len(ids), sketch_dim)
        metadata : list of dict

        Raises
        ------
        KeyError
            Naming the first id the repository does not hold.

        Examples
        --------
        >>> import tempfile
        >>> import numpy as np
        >>> from sksketch import RecursiveSketcher, SketchRepository
        >>> from sksketch import make_activation_records
        >>> records, _ = make_activation_records(3, random_state=0)
        >>> sketcher = RecursiveSketcher(16, random_state=0).fit(records)
        >>> repo = SketchRepository(tempfile.mkdtemp(), sketcher=sketcher)
        >>> _ = repo.add(records, ids=["a", "b", "c"], metadata=[{"n": i}
        ...                                                    for i in range(3)])
        >>> vectors, metadata = repo.get(["c", "a"])
        >>> metadata
        [{'n': 2}, {'n': 0}]
        >>> bool(np.allclose(vectors[1], sketcher.transform(records[:1])[0]))
        True
        """
        ids = self._check_ids(ids, None)
        with _store.transaction(self._con, write=False) as con:
            n = _store.committed_rows(con)
            found = {}
            for lo in range(0, len(ids), _store.MAX_PARAMS):
                part = ids[lo:lo + _store.MAX_PARAMS]
                for id_, row, meta in con.execute(
                        f"SELECT id, row, metadata FROM sketches WHERE id IN "
                        f"({', '.join('?' * len(part))})", part):
                    found[id_] = (row, meta)
        for id_ in ids:
            if id_ not in found:
                raise KeyError(f"SketchRepository: no sketch with id {id_!r} in "
                               f"{self.path!r}")
        rows = np.array([found[id_][0] for id_ in ids], np.int64)
        vectors = np.array(self._vectors(n)[rows]) if ids else np.empty(
            (0, self.sketch_dim), self.dtype)
        return vectors, [_json_load(found[id_][1]) for id_ in ids]

    # -- writing -------------------------------------------------------------

    @staticmethod
    def _check_ids(ids, n):
        if isinstance(ids, str) or not isinstance(ids, Sequence | np.ndarray):
            raise TypeError(f"SketchRepository: 'ids' must be a sequence of str or "
                            f"int; got {type(ids).__name__} {ids!r}")
        checked = []
        for index, id_ in enumerate(ids.tolist() if isinstance(ids, np.ndarray)
                                    else ids):
            if isinstance(id_, bool) or not isinstance(id_, str | Integral):
                raise TypeError(f"SketchRepository: 'ids[{index}]' must be a str "
                                f"or an int; got {type(id_).__name__} {id_!r}")
            checked.append(id_ if isinstance(id_, str) else int(id_))
        if n is not None and len(checked) != n:
            raise ValueError(f"SketchRepository: 'ids' has {len(checked)} ids for "
                             f"{n} sketches")
        if len(set(checked)) != len(checked):
            seen = set()
            duplicate = next(i for i in checked if i in seen or seen.add(i))
            raise ValueError(f"SketchRepository: 'ids' repeats the id "
                             f"{duplicate!r}")
        return checked

    @staticmethod
    def _check_metadata(metadata, n):
        if metadata is None:
            return [{}] * n, ["{}"] * n
        if isinstance(metadata, Mapping) or not isinstance(metadata, Sequence):
            raise TypeError(f"SketchRepository: 'metadata' must be a sequence of "
                            f"dicts, one per sketch; got {type(metadata).__name__}")
        if len(metadata) != n:
            raise ValueError(f"SketchRepository: 'metadata' has {len(metadata)} "
                             f"entries for {n} sketches")
        texts = []
        for index, entry in enumerate(metadata):
            if entry is None:
                entry = {}
            if not isinstance(entry, Mapping):
                raise TypeError(f"SketchRepository: 'metadata[{index}]' must be a "
                                f"dict; got {type(entry).__name__} {entry!r}")
            try:
                texts.append(_store.dumps(dict(entry)))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"SketchRepository: 'metadata[{index}]' is not "
                                 f"JSON-able: {exc}") from None
        # Round-tripped, as they will be read back (tuples become lists).
        return [_json_load(text) for text in texts], texts

    def add(self, sketches, *, ids=None, metadata=None, times=None, sketcher=None):
        """Append sketches, all of them or (on any error or crash) none.

        Parameters
        ----------
        sketches : array-like of shape (n, sketch_dim), or records
            Sketches, or records (a sequence of records or a RecordBatch),
            which :attr:`sketcher` sketches.
        ids : sequence of (str or int), default=None
            Unique ids; default: the entries' row numbers, ``len(self)``
            onwards.
        metadata : sequence of dict, default=None
            A JSON-able dict per sketch, for ``where`` filters and group sums.
        times : float, datetime or sequence of them, default=None
            When each sketch was made (seconds since the epoch), used by
            :meth:`find_emerging`; default: now.
        sketcher : RecursiveSketcher, default=None
            The sketcher that made ``sketches``, if known: checked against the
            repository's, and refused if its parameters or seed differ.

        Returns
        -------
        ids : ndarray of object of shape (n,)
            The ids of the added entries.

        Examples
        --------
        >>> import tempfile
        >>> import numpy as np
        >>> from sksketch import RecursiveSketcher, SketchRepository
        >>> from sksketch import make_activation_records
        >>> records, _ = make_activation_records(4, random_state=0)
        >>> sketcher = RecursiveSketcher(16, random_state=0).fit(records)
        >>> repo = SketchRepository(tempfile.mkdtemp(), sketcher=sketcher)
        >>> repo.add(records[:2]).tolist(), repo.add(records[2:]).tolist()
        ([0, 1], [2, 3])
        >>> other = RecursiveSketcher(16, random_state=1).fit(records)
        >>> repo.add(other.transform(records), sketcher=other)
        Traceback (most recent call last):
        ...
        ValueError: SketchRepository: the sketcher's random_state (seed_) is 1, ...
        """
        self._check_sketcher(sketcher)
        vectors = self._as_sketches(sketches, "sketches")
        n_new = vectors.shape[0]
        user_ids = None if ids is None else self._check_ids(ids, n_new)
        parsed, texts = self._check_metadata(metadata, n_new)
        if times is None:
            stamps = [time.time()] * n_new
        elif isinstance(times, Sequence | np.ndarray):
            stamps = [_timestamp(t, f"times[{i}]") for i, t in enumerate(times)]
            if len(stamps) != n_new:
                raise ValueError(f"SketchRepository: 'times' has {len(stamps)} "
                                 f"values for {n_new} sketches")
        else:
            stamps = [_timestamp(times, "times")] * n_new
        # Tracked keys as this process knows them, checked before any write;
        # re-read under the write lock, as another process may have added one.
        for keys in self._config["sum_keys"]:
            for i, entry in enumerate(parsed):
                _store.group_values(entry, keys, f"metadata[{i}]")
        given = (None if self.sketcher is None
                 else _sketcher_config(self.sketcher))
        with _store.transaction(self._con, write=True) as con:
            config = self._read_config(con)
            n = _store.committed_rows(con)
            new_ids = user_ids if user_ids is not None else list(range(n, n + n_new))
            self._refuse_existing(con, new_ids)
            if n_new:  # vectors and norms synced before the rows commit
                for file, data, offset in (
                        (self._vector_file, vectors,
                         n * self.sketch_dim * self.dtype.itemsize),
                        (self._norm_file, _store.row_norms(vectors), n * 8)):
                    fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o666)
                    try:
                        _store.write_at(fd, np.ascontiguousarray(data), offset)
                    finally:
                        os.close(fd)
            con.executemany("INSERT INTO sketches VALUES (?, ?, ?, ?)",
                            zip(range(n, n + n_new), new_ids, stamps, texts))
            for keys in map(tuple, config["sum_keys"] if n_new else ()):
                groups, codes = _store.group_rows([
                    _store.group_values(entry, keys, f"metadata[{i}]")
                    for i, entry in enumerate(parsed)])
                sums = _store.group_sums(vectors.astype(np.float64), codes,
                                         len(groups))
                counts = np.bincount(codes, minlength=len(groups))
                self._add_sums(con, keys, groups, sums, counts)
            if given is not None and self._merge_modules(config, given):
                self._write_config(con, config)
        self._config = config  # as committed
        result = np.empty(n_new, dtype=object)
        result[:] = new_ids
        return result

    def _refuse_existing(self, con, ids):
        for lo in range(0, len(ids), _store.MAX_PARAMS):
            part = ids[lo:lo + _store.MAX_PARAMS]
            row = con.execute(f"SELECT id FROM sketches WHERE id IN "
                              f"({', '.join('?' * len(part))}) LIMIT 1",
                              part).fetchone()
            if row is not None:
                raise ValueError(f"SketchRepository: id {row[0]!r} is already in "
                                 f"{self.path!r}; ids must be unique")

    @staticmethod
    def _add_sums(con, keys, groups, sums, counts):
        key_text = _store.dumps(list(keys))
        for group, vector, count in zip(groups, sums, counts):
            value = _store.dumps(list(group))
            old = con.execute("SELECT count, vector FROM sums WHERE keys = ? AND "
                              "value = ?", (key_text, value)).fetchone()
            if old is not None:
                count = count + old[0]
                vector = vector + np.frombuffer(old[1], np.float64)
            con.execute("INSERT OR REPLACE INTO sums VALUES (?, ?, ?, ?)",
                        (key_text, value, int(count), vector.tobytes()))

    # -- queries -------------------------------------------------------------

    def query(self, sketches, k=10, *, metric="cosine", where=None, sketcher=None,
              approximate=False, ef_search=64):
        """The ``k`` stored sketches most similar to each query, exactly.

        The stored sketches are read from the memory-mapped file in chunks
        and multiplied with all queries at once; only the running ``k`` best
        per query are kept, so memory stays bounded whatever the size.

        Parameters
        ----------
        sketches : array-like of shape (n_queries, sketch_dim), or records
            Query sketches, or records, which :attr:`sketcher` sketches.
        k : int, default=10
            Results per query (fewer if fewer entries match).
        metric : {"cosine", "dot"}, default="cosine"
            Cosine similarity (0 against a zero vector) or inner product.
        where : dict, default=None
            Metadata filter: ``{key: value}`` (equality; None matches a
            missing key), or ``{key: {op: value}}`` with ``op`` among
            ``==, !=, <, <=, >, >=, in, not in``; conditions are and-ed.
        sketcher : RecursiveSketcher, default=None
            The sketcher that made ``sketches``, if known: refused if it
            differs from the repository's.
        approximate : bool, default=False
            Use the approximate index of :meth:`build_index` for the entries
            it holds (and an exact scan for those added since), when it was
            built for ``metric`` and ``where`` is None; otherwise, or without
            an index, the query is exact.
        ef_search : int, default=64
            With ``approximate``: the HNSW search breadth (more: better
            recall, slower).

        Returns
        -------
        ids : ndarray of object of shape (n_queries, k')
            The ids found, best first; ``k' = min(k, number matching)``.
        scores : ndarray of shape (n_queries, k')
            Their scores. Ties keep the earlier-added entry first.

        Examples
        --------
        >>> import tempfile
        >>> import numpy as np
        >>> from sksketch import RecursiveSketcher, SketchRepository
        >>> rng = np.random.default_rng(0)
        >>> from sksketch import make_activation_records
        >>> records, _ = make_activation_records(2, random_state=0)
        >>> sketcher = RecursiveSketcher(8, random_state=0).fit(records)
        >>> repo = SketchRepository(tempfile.mkdtemp(), sketcher=sketcher)
        >>> X = rng.standard_normal((100, 8))
        >>> _ = repo.add(X, metadata=[{"even": i % 2 == 0} for i in range(100)])
        >>> ids, scores = repo.query(X[:3], k=2, metric="dot")
        >>> brute = np.sort(X[:3] @ X.T, axis=1)[:, ::-1][:, :2]
        >>> bool(np.allclose(scores, brute))
        True
        >>> ids, _ = repo.query(X[:3], k=5, where={"even": True})
        >>> all(i % 2 == 0 for i in ids.ravel())
        True
        """
        self._check_sketcher(sketcher)
        queries = self._as_sketches(sketches, "sketches")
        if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
            raise ValueError(f"SketchRepository: 'k' must be an int >= 1; got {k!r}")
        if metric not in ("cosine", "dot"):
            raise ValueError(f"SketchRepository: 'metric' must be 'cosine' or "
                             f"'dot'; got {metric!r}")
        if approximate and where is None:
            index = self._load_index(metric)
            if index is not None:
                n, _ = self._snapshot()
                return self._search_index(queries, int(k), metric, n, index,
                                          ef_search)
        n, rows = self._snapshot(where)
        return self._search(queries, int(k), metric, n, rows)

    # -- approximate index -----------------------------------------------------

    def build_index(self, *, metric="cosine", m=32, ef_construction=200):
        """Build an approximate (HNSW) index of the entries held, for ``metric``.

        For when exact scans stop sufficing: ``query(..., approximate=True)``
        then searches the index for the entries it holds and scans the ones
        added since exactly. Needs FAISS (extra ``sksketch[index]``). The
        index is read a chunk at a time from the stored vectors, held in
        memory (FAISS keeps its own float32 copy plus the graph), and saved
        beside the repository; an older index is replaced once the new one
        is complete and recorded.

        Parameters
        ----------
        metric : {"cosine", "dot"}, default="cosine"
        m : int, default=32
            Graph degree of HNSW.
        ef_construction : int, default=200
            Build-time search breadth.

        Returns
        -------
        n_indexed : int
            Entries in the index.

        Examples
        --------
        >>> import tempfile
        >>> import numpy as np
        >>> from sksketch import (RecursiveSketcher, SketchRepository,
        ...                       make_activation_records)
        >>> records, _ = make_activation_records(2, random_state=0)
        >>> sketcher = RecursiveSketcher(16, random_state=0).fit(records)
        >>> repo = SketchRepository(tempfile.mkdtemp(), sketcher=sketcher)
        >>> X = np.random.default_rng(0).standard_normal((500, 16))
        >>> _ = repo.add(X)
        >>> repo.build_index()
        500
        >>> ids, _ = repo.query(X[:3], k=1, approximate=True)
        >>> ids[:, 0].tolist()
        [0, 1, 2]
        """
        from ._repository import faiss_module

        faiss = faiss_module()
        if metric not in ("cosine", "dot"):
            raise ValueError(f"SketchRepository: 'metric' must be 'cosine' or "
                             f"'dot'; got {metric!r}")
        for name, value in (("m", m), ("ef_construction", ef_construction)):
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 2:
                raise ValueError(f"SketchRepository: '{name}' must be an int >= 2; "
                                 f"got {value!r}")
        n, _ = self._snapshot()
        index = faiss.IndexHNSWFlat(self.sketch_dim, int(m),
                                    faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(ef_construction)
        chunk = _store.chunk_rows(self.sketch_dim, self.dtype.itemsize)
        for _, block, norms in _store.iter_chunks(self._vectors(n), None, chunk,
                                                  self._norms(n)):
            block = np.ascontiguousarray(block, np.float32)
            if metric == "cosine":
                block = block * _store.inverse(norms, np.float32)[:, None]
            index.add(block)
        name = f"index-{metric}-{n}.faiss"
        final = os.path.join(self.path, name)
        temporary = final + ".tmp"
        faiss.write_index(index, temporary)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, final)
        with _store.transaction(self._con, write=True) as con:
            config = {key: _json_load(value) for key, value
                      in con.execute("SELECT key, value FROM config")}
            indexes = {**config.get("indexes", {}),
                       metric: {"file": name, "rows": n}}
            con.execute("INSERT OR REPLACE INTO config VALUES (?, ?)",
                        ("indexes", _store.dumps(indexes)))
        self._config["indexes"] = indexes
        self._index_cache = {}
        for stale in os.listdir(self.path):  # older indexes, no longer named
            if (stale.startswith(f"index-{metric}-") and stale != name
                    and not stale.endswith(".tmp")):
                with suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.path, stale))
        return n

    def _load_index(self, metric):
        """The index recorded for ``metric`` as ``(index, rows)``, or None."""
        (value,) = self._con.execute(
            "SELECT coalesce((SELECT value FROM config WHERE key = 'indexes'), "
            "'{}')").fetchone()
        entry = _json_load(value).get(metric)
        if entry is None:
            return None
        cache = getattr(self, "_index_cache", None) or {}
        if cache.get(metric, (None,))[0] != entry["file"]:
            from ._repository import faiss_module

            index = faiss_module().read_index(os.path.join(self.path, entry["file"]))
            cache[metric] = (entry["file"], index, int(entry["rows"]))
            self._index_cache = cache
        return cache[metric][1:]

    def _search_index(self, queries, k, metric, n, index, ef_search):
        index, indexed = index
        if isinstance(ef_search, bool) or not isinstance(ef_search, Integral) or (
                ef_search < 1):
            raise ValueError(f"SketchRepository: 'ef_search' must be an int >= 1; "
                             f"got {ef_search!r}")
        k = min(k, n)
        if k == 0 or queries.shape[0] == 0:
            return (np.empty((queries.shape[0], k), dtype=object),
                    np.empty((queries.shape[0], k)))
        q = np.ascontiguousarray(queries, np.float32)
        if metric == "cosine":
            q = q * _store.inverse_norms(q)[:, None]
        index.hnsw.efSearch = max(int(ef_search), k)
        scores, rows = index.search(q, min(k, indexed)) if indexed else (
            np.empty((q.shape[0], 0)), np.empty((q.shape[0], 0), np.int64))
        best = (np.full((q.shape[0], k), -np.inf), np.full((q.shape[0], k), -1,
                                                          np.int64))
        found = rows >= 0
        best = _store.merge_candidates(best, np.nonzero(found)[0],
                                       scores[found].astype(np.float64),
                                       rows[found].astype(np.int64), k)
        if n > indexed:  # added since the index: scanned exactly
            chunk = _store.chunk_rows(self.sketch_dim, self.dtype.itemsize,
                                      queries.shape[0])
            newer = np.arange(indexed, n)
            new_rows, new_scores = _store.top_k(
                queries, _store.iter_chunks(self._vectors(n), newer, chunk,
                                            self._norms(n)), k, metric)
            keep = new_rows >= 0
            best = _store.merge_candidates(best, np.nonzero(keep)[0],
                                           new_scores[keep], new_rows[keep], k)
        best_scores, best_rows = best
        return self._ids_of(best_rows), best_scores

    def _search(self, queries, k, metric, n, rows):
        matching = n if rows is None else rows.size
        k = min(k, matching)
        if k == 0 or queries.shape[0] == 0:
            k = 0 if queries.shape[0] else k
            return (np.empty((queries.shape[0], k), dtype=object),
                    np.empty((queries.shape[0], k)))
        chunk = _store.chunk_rows(self.sketch_dim, self.dtype.itemsize,
                                  queries.shape[0])
        best_rows, scores = _store.top_k(
            queries, _store.iter_chunks(self._vectors(n), rows, chunk,
                                        self._norms(n)), k, metric)
        return self._ids_of(best_rows), scores

    # -- sums ----------------------------------------------------------------

    def sum(self, where=None, *, group_by=None, return_counts=False):
        """The sum of the matching sketches: the sketch of their records' union.

        From the running sums when ``where`` only tests equalities and a
        tracked key tuple (see ``sum_keys``) covers its keys and
        ``group_by``'s: ``O(d)`` per group kept. Otherwise by one scan of the
        matching entries, in chunks.

        Parameters
        ----------
        where : dict, default=None
            Metadata filter, as for :meth:`query`.
        group_by : str or sequence of str, default=None
            Metadata keys to group by (a missing key groups as None).
        return_counts : bool, default=False
            Also return the number of sketches summed.

        Returns
        -------
        sums : ndarray of shape (sketch_dim,), or dict
            Float64. With ``group_by``, a dict from the group's value (a
            tuple of values for several keys) to its sum; groups with no
            matching sketch are absent.
        counts : int or dict
            Only with ``return_counts``.

        Examples
        --------
        >>> import tempfile
        >>> import numpy as np
        >>> from sksketch import (RecursiveSketcher, SketchAttributeRecoverer,
        ...                       SketchRepository, make_activation_records)
        >>> records, labels = make_activation_records(40, random_state=0)
        >>> sketcher = RecursiveSketcher(256, random_state=0).fit(records)
        >>> repo = SketchRepository(tempfile.mkdtemp(), sketcher=sketcher,
        ...                         sum_keys=["label"])
        >>> _ = repo.add(records, metadata=[{"label": int(c)} for c in labels])
        >>> sums, counts = repo.sum(group_by="label", return_counts=True)
        >>> counts[0] == int((labels == 0).sum())
        True

        The sum decodes like one sketch, into the counts of the union:

        >>> recoverer = SketchAttributeRecoverer(sketcher).fit(records)
        >>> each = recoverer.transform(sketcher.transform(records))
        >>> union = recoverer.transform(sums[0][None, :])
        >>> count = [name.endswith(":count")
        ...          for name in recoverer.get_feature_names_out()]
        >>> bool(np.allclose(union[0, count], each[labels == 0][:, count].sum(0)))
        True
        """
        keys = _store.key_tuple(group_by, "group_by")
        if not isinstance(return_counts, bool):
            raise TypeError(f"SketchRepository: 'return_counts' must be a bool; "
                            f"got {return_counts!r}")
        _store.where_sql(where)  # validates
        equal = _store.equality_filter(where)
        result = None
        if equal is not None:
            for key, value in equal.items():
                _store.check_scalar(value, f"'where' value of {key!r}")
            result = self._sum_tracked(equal, keys)
        if result is None:
            result = self._sum_scan(where, keys)
        sums, counts = result
        if group_by is None:
            sums = sums.get((), np.zeros(self.sketch_dim))
            counts = counts.get((), 0)
        elif isinstance(group_by, str):
            sums = {group[0]: vector for group, vector in sums.items()}
            counts = {group[0]: count for group, count in counts.items()}
        return (sums, counts) if return_counts else sums

    def _sum_tracked(self, equal, keys):
        """Sums from the running sums, or None if no tracked tuple covers them."""
        needed = set(equal) | set(keys)
        (value,) = self._con.execute(
            "SELECT value FROM config WHERE key = 'sum_keys'").fetchone()
        covering = [tuple(t) for t in _json_load(value) if needed <= set(t)]
        if not covering:
            return None
        tracked = min(covering, key=len)
        position = {key: i for i, key in enumerate(tracked)}
        sums, counts = {}, {}
        for value, count, blob in self._con.execute(
                "SELECT value, count, vector FROM sums WHERE keys = ?",
                (_store.dumps(list(tracked)),)):
            values = _json_load(value)
            if any(not _same(values[position[key]], wanted)
                   for key, wanted in equal.items()):
                continue
            group = tuple(values[position[key]] for key in keys)
            vector = np.frombuffer(blob, np.float64)
            if group in sums:
                sums[group] = sums[group] + vector
                counts[group] += count
            else:
                sums[group], counts[group] = vector.copy(), count
        return sums, counts

    def _sum_scan(self, where, keys):
        sql, params = _store.where_sql(where)
        sums, counts = {}, {}
        with _store.transaction(self._con, write=False) as con:
            n = _store.committed_rows(con)
            vectors = self._vectors(n)
            cursor = con.execute(f"SELECT row, metadata FROM sketches WHERE {sql} "
                                 f"ORDER BY row", params)
            chunk = _store.chunk_rows(self.sketch_dim, self.dtype.itemsize)
            while batch := cursor.fetchmany(chunk):
                rows = np.array([row for row, _ in batch], np.intp)
                values = [_store.group_values(_json_load(meta), keys, f"row {row}")
                          for row, meta in batch]
                groups, codes = _store.group_rows(values)
                part = _store.group_sums(np.asarray(vectors[rows], np.float64),
                                         codes, len(groups))
                part_counts = np.bincount(codes, minlength=len(groups))
                for group, vector, count in zip(groups, part, part_counts):
                    sums[group] = sums.get(group, 0) + vector
                    counts[group] = counts.get(group, 0) + int(count)
        return sums, counts

    # -- what is new ---------------------------------------------------------

    def find_emerging(self, since, *, threshold=0.5, min_size=2, where=None):
        """Clusters of recent sketches far from every older one.

        The rule, on cosine similarity:

        1. *Recent* sketches were added with ``time >= since``, *older* ones
           before (both among those matching ``where``).
        2. A recent sketch is *novel* when its greatest similarity to any
           older sketch is below ``threshold`` (exact, by the chunked scan
           of :meth:`query`); with no older sketch, every recent one is.
        3. Novel sketches whose similarity reaches ``threshold`` are linked;
           the clusters are the connected components (single linkage).
        4. Clusters of at least ``min_size`` sketches are returned, largest
           first (ties: earliest added first).

        The recent sketches are held in memory (``n_recent x sketch_dim``).

        Parameters
        ----------
        since : float or datetime
            Seconds since the epoch (as ``times`` in :meth:`add`).
        threshold : float in (-1, 1], default=0.5
        min_size : int >= 1, default=2
        where : dict, default=None
            Metadata filter, as for :meth:`query`.

        Returns
        -------
        clusters : list of Bunch
            Each with ``ids`` (ndarray of object, in the order added),
            ``sum`` (the sum of their sketches: the sketch of their union,
            decodable) and ``similarity`` (the greatest similarity of a
            member to an older sketch; -inf with no older sketch).

        Examples
        --------
        Older sketches near two directions; recent ones near those and near
        a third, new one:

        >>> import tempfile
        >>> import numpy as np
        >>> from sksketch import (RecursiveSketcher, SketchRepository,
        ...                       make_activation_records)
        >>> records, _ = make_activation_records(2, random_state=0)
        >>> sketcher = RecursiveSketcher(32, random_state=0).fit(records)
        >>> repo = SketchRepository(tempfile.mkdtemp(), sketcher=sketcher)
        >>> rng = np.random.default_rng(0)
        >>> centers = rng.standard_normal((3, 32))
        >>> def near(c, n):
        ...     return centers[c] + 0.1 * rng.standard_normal((n, 32))
        >>> _ = repo.add(np.vstack([near(0, 20), near(1, 20)]), times=0.0)
        >>> _ = repo.add(near(0, 5), ids=[f"old{i}" for i in range(5)], times=1.0)
        >>> _ = repo.add(near(2, 4), ids=[f"new{i}" for i in range(4)], times=1.0)
        >>> [cluster.ids.tolist() for cluster in repo.find_emerging(since=1.0)]
        [['new0', 'new1', 'new2', 'new3']]
        """
        since = _timestamp(since, "since")
        if (isinstance(threshold, bool) or not isinstance(threshold, Real)
                or not -1 < threshold <= 1):
            raise ValueError(f"SketchRepository: 'threshold' must be a number in "
                             f"(-1, 1]; got {threshold!r}")
        if isinstance(min_size, bool) or not isinstance(min_size, Integral) or (
                min_size < 1):
            raise ValueError(f"SketchRepository: 'min_size' must be an int >= 1; "
                             f"got {min_size!r}")
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        n, recent = self._snapshot(where, since=since)
        _, older = self._snapshot(where, before=since)
        # Rows added by another process between the two snapshots are ignored.
        recent, older = recent[recent < n], older[older < n]
        vectors = self._vectors(n)
        X = np.asarray(vectors[recent])
        if older.size:
            _, best = self._search(X, 1, "cosine", n, older)
            nearest = best[:, 0]
        else:
            nearest = np.full(recent.size, -np.inf)
        novel = np.flatnonzero(nearest < threshold)
        Y = X[novel] * _store.inverse_norms(X[novel])[:, None]
        links_i, links_j = [], []
        chunk = _store.chunk_rows(1, 8, max(1, Y.shape[0]))
        for lo in range(0, Y.shape[0], chunk):
            i, j = np.nonzero(Y[lo:lo + chunk] @ Y.T >= threshold)
            links_i.append(i + lo)
            links_j.append(j)
        m = novel.size
        i = np.concatenate(links_i) if links_i else np.empty(0, np.intp)
        j = np.concatenate(links_j) if links_j else np.empty(0, np.intp)
        graph = coo_matrix((np.ones(i.size), (i, j)), shape=(m, m))
        _, labels = connected_components(graph, directed=False)
        clusters = []
        for label in np.unique(labels):
            members = np.flatnonzero(labels == label)
            if members.size < min_size:
                continue
            rows = recent[novel[members]]
            clusters.append(Bunch(
                ids=self._ids_of(rows), sum=X[novel[members]].sum(
                    axis=0, dtype=np.float64),
                similarity=float(nearest[novel[members]].max()), _first=rows[0]))
        clusters.sort(key=lambda c: (-c.ids.size, c._first))
        for cluster in clusters:
            del cluster["_first"]
        return clusters

    # -- life cycle ------------------------------------------------------------

    def close(self):
        """Close the connection; the repository stays on disk."""
        self._mapped = self._mapped_norms = None
        self._con.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _json_load(text):
    import json

    return json.loads(text)


def _same(a, b):
    """Equality as a ``where`` filter tests it (True equals 1, "1" not 1)."""
    if isinstance(a, str) != isinstance(b, str):
        return False
    return a == b
