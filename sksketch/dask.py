"""Sketching beyond one machine, with Dask (extra ``sksketch[dask]``).

A fitted :class:`RecursiveSketcher` pickles to its parameters, ``seed_`` and
modules: its random matrices never travel (they are dropped when pickled and
re-derived from the seed by each worker, on first use). So every worker makes
the same matrices, and the sketches equal those of one process (to float
rounding: ``1e-12``).

``dask`` is imported by these functions only; ``import sksketch`` does not.
"""

from functools import partial

import numpy as np

from ._optional import import_optional

__all__ = ["group_sums", "sketch_records"]


def _dask():
    return (import_optional("dask", "dask", "sksketch.dask"),
            import_optional("dask.array", "dask", "sksketch.dask"))


def _check_sketcher(sketcher):
    from ._sketch import RecursiveSketcher

    if not isinstance(sketcher, RecursiveSketcher):
        raise TypeError(f"'sketcher' must be a fitted RecursiveSketcher; got "
                        f"{type(sketcher).__name__}")
    if not hasattr(sketcher, "seed_"):
        raise ValueError("'sketcher' is not fitted; fit it (on a sample of the "
                         "records) first: workers derive its matrices from seed_")


def _sketch_list(records, sketcher):
    records = list(records)
    if not records:
        return np.empty((0, sketcher.sketch_dim), np.dtype(sketcher.dtype))
    return sketcher.transform(records)


def _sketch_file(path, sketcher):
    from ._parquet import read_parquet

    return sketcher.transform(read_parquet(path, dtype=np.dtype(sketcher.dtype)))


def _sketch_frame(frame, sketcher):
    """Sketch a pandas partition in the Parquet layout (whole records)."""
    from ._parquet import _pyarrow, table_to_batch

    pa, _ = _pyarrow()
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if table.num_rows == 0:
        return np.empty((0, sketcher.sketch_dim), np.dtype(sketcher.dtype))
    first = int(table.column("record").to_numpy().min())
    batch = table_to_batch(table, first_record=first,
                           dtype=np.dtype(sketcher.dtype))
    return sketcher.transform(batch)


def sketch_records(records, sketcher):
    """Sketch records in parallel: one task per partition or file.

    Parameters
    ----------
    records : dask.bag.Bag, str, path-like, list of paths, or dask DataFrame
        A bag of records (ActivationRecord or JSON dicts); a Parquet file
        written by :func:`write_parquet`, a directory of them or a list of
        files (one task per file; the sizes come from the files' footers);
        or a dask DataFrame in that Parquet layout whose partitions hold
        whole records (``dask.dataframe.read_parquet(files,
        split_row_groups=False)``: a partition per file).
    sketcher : RecursiveSketcher
        Fitted. It is shipped as its seed and parameters, never its matrices.

    Returns
    -------
    sketches : dask.array.Array of shape (n_records, sketch_dim)
        In the records' order. Chunk sizes are unknown (NaN) for a bag or a
        DataFrame, known for Parquet files.

    Examples
    --------
    >>> import dask
    >>> import dask.bag as db
    >>> import numpy as np
    >>> from sksketch import RecursiveSketcher, make_activation_records
    >>> from sksketch.dask import sketch_records
    >>> records, _ = make_activation_records(40, random_state=0)
    >>> sketcher = RecursiveSketcher(64, random_state=0).fit(records)
    >>> bag = db.from_sequence(records, npartitions=4)
    >>> with dask.config.set(scheduler="synchronous"):
    ...     S = sketch_records(bag, sketcher).compute()
    >>> bool(np.allclose(S, sketcher.transform(records), rtol=1e-12, atol=1e-12))
    True
    """
    import os

    dask, da = _dask()
    _check_sketcher(sketcher)
    dim, dtype = int(sketcher.sketch_dim), np.dtype(sketcher.dtype)
    if isinstance(records, str | os.PathLike | list | tuple):
        from ._parquet import _files, parquet_n_records

        files = ([os.fspath(p) for p in records] if isinstance(records, list | tuple)
                 else _files(records))
        task = dask.delayed(_sketch_file, pure=True)
        blocks = [da.from_delayed(task(file, sketcher), (parquet_n_records(file), dim),
                                  dtype=dtype) for file in files]
    elif hasattr(records, "to_delayed") and hasattr(records, "map_partitions"):
        if hasattr(records, "columns"):
            function = _sketch_frame
        else:
            function = _sketch_list
        task = dask.delayed(function, pure=True)
        blocks = [da.from_delayed(task(part, sketcher), (np.nan, dim), dtype=dtype)
                  for part in records.to_delayed()]
    else:
        raise TypeError(f"'records' must be a dask bag, a dask DataFrame, or "
                        f"Parquet path(s); got {type(records).__name__}")
    if not blocks:
        return da.empty((0, dim), dtype=dtype)
    return da.concatenate(blocks, axis=0)


def _partition_sums(records, sketcher, by):
    records = list(records)
    sums = {}
    if not records:
        return sums
    sketches = sketcher.transform(records)
    for record, sketch in zip(records, sketches):
        group = by(record)
        count, total = sums.get(group, (0, 0.0))
        sums[group] = (count + 1, total + sketch.astype(np.float64))
    return sums


def _merge_sums(parts):
    merged = {}
    for part in parts:
        for group, (count, total) in part.items():
            old_count, old_total = merged.get(group, (0, 0.0))
            merged[group] = (old_count + count, old_total + total)
    return merged


def group_sums(records, sketcher, by, *, split_every=8):
    """Per-group sums of the records' sketches, reduced across partitions.

    Each partition sketches its records and sums them per group; the partial
    sums are merged by a tree reduction. By linearity, a group's sum is the
    sketch of the union of its records.

    Parameters
    ----------
    records : dask.bag.Bag
        Records (ActivationRecord or JSON dicts).
    sketcher : RecursiveSketcher
        Fitted.
    by : callable
        Maps a record to its (hashable) group.
    split_every : int, default=8
        Partial results merged per step of the reduction.

    Returns
    -------
    sums : dask.bag.Item
        Computes to a dict ``group -> (count, float64 sum)``.

    Examples
    --------
    >>> import dask
    >>> import dask.bag as db
    >>> import numpy as np
    >>> from sksketch import RecursiveSketcher, make_activation_records
    >>> from sksketch.dask import group_sums
    >>> records, _ = make_activation_records(30, random_state=0)
    >>> sketcher = RecursiveSketcher(64, random_state=0).fit(records)
    >>> def parity(record):
    ...     return record.n_objects % 2
    >>> bag = db.from_sequence(records, npartitions=3)
    >>> with dask.config.set(scheduler="synchronous"):
    ...     sums = group_sums(bag, sketcher, by=parity).compute()
    >>> odd = np.array([parity(r) for r in records]) == 1
    >>> count, total = sums[1]
    >>> count == int(odd.sum())
    True
    >>> bool(np.allclose(total, sketcher.transform(records)[odd].sum(axis=0)))
    True
    """
    _dask()
    _check_sketcher(sketcher)
    if not callable(by):
        raise TypeError(f"'by' must be a callable mapping a record to its group; "
                        f"got {type(by).__name__}")
    if not hasattr(records, "reduction"):
        raise TypeError(f"'records' must be a dask bag; got "
                        f"{type(records).__name__}")
    return records.reduction(partial(_partition_sums, sketcher=sketcher, by=by),
                             _merge_sums, split_every=split_every)
