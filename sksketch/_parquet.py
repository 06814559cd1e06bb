"""Record datasets as Parquet: columns that map onto :class:`RecordBatch`.

Layout: one row per object, the objects of a record in consecutive rows and
every row group holding whole records, with the columns

``record`` (int64)
    The record's number in the file, from 0, non-decreasing. Records without
    objects have no row; the file's key-value metadata ``sksketch.n_records``
    counts them all.
``module`` (dictionary of string)
``attributes`` (list of float64 or float32)
    The object's attribute vector; its length is its module's dimension.
``weight`` (float64 or float32)
``slot`` (dictionary of string, nullable)
    The slot as JSON (``0``, ``"left"``, ``[1, 2]``), or null where it is the
    default slot (the ordinal among the same-module inputs of its first
    consumer), so that a file of default slots reads without a Python object
    per object.
``inputs`` (list of int32)
    The objects it consumed, as row offsets within the record, in order.
``root`` (bool)
    Whether the object is one of the record's roots (``outputs``).
``id`` (string, optional)
    The object's id as JSON, read only when asked for (``ids=True``).

pyarrow is imported only by these functions (extra ``sksketch[parquet]``).
"""

import json
import os
from contextlib import suppress
from numbers import Integral

import numpy as np

from ._batch import RecordBatch, as_batch
from ._dag import default_slot_ordinals
from ._optional import import_optional

_N_RECORDS = b"sksketch.n_records"
_FORMAT = b"sksketch.format"


def _pyarrow():
    return (import_optional("pyarrow", "parquet", "Parquet support"),
            import_optional("pyarrow.parquet", "parquet", "Parquet support"))


def _check_chunk_size(chunk_size):
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, Integral) or (
            chunk_size < 1):
        raise ValueError(f"'chunk_size' must be an int >= 1; got {chunk_size!r}")
    return int(chunk_size)


def _record_starts(batch):
    """First object of every record (objects of a record are consecutive)."""
    counts = np.bincount(batch._record, minlength=batch.n_records)
    return np.concatenate(([0], np.cumsum(counts)))


def batch_to_table(batch, *, first_record=0):
    """A :class:`RecordBatch` as a pyarrow Table in the layout above."""
    pa, _ = _pyarrow()
    record = batch._record
    if record.size and np.any(np.diff(record) < 0):
        batch = batch.take(np.arange(batch.n_records))  # objects by record
        record = batch._record
    n = batch.n_objects
    dims = np.array([block.shape[1] for block in batch._attributes] or [0], np.intp)
    lengths = dims[batch._module_codes] if n else np.zeros(0, np.intp)
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    values = np.empty(int(offsets[-1]), batch.dtype)
    for code, block in enumerate(batch._attributes):
        members = np.flatnonzero(batch._module_codes == code)
        if members.size and block.shape[1]:
            index = offsets[members][:, None] + np.arange(block.shape[1])
            values[index] = block[batch._rows[members]]
    attributes = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))

    starts = _record_starts(batch)
    order = np.argsort(batch._parent, kind="stable")
    parent, child = batch._parent[order], batch._child[order]
    input_offsets = np.concatenate(
        ([0], np.cumsum(np.bincount(parent, minlength=n)))).astype(np.int32)
    local = (child - starts[record[child]]).astype(np.int32)
    inputs = pa.ListArray.from_arrays(pa.array(input_offsets), pa.array(local))

    # Slots equal to the default (with the edges in the order stored) are null.
    default = default_slot_ordinals(n, batch._module_codes, parent, child,
                                    group=record)
    keys = batch._slot_keys
    slot_of = np.array([key if type(key) is int else -1 for key in keys] or [0],
                       np.intp)[batch._slot_codes] if n else np.zeros(0, np.intp)
    explicit = slot_of != default
    text = [json.dumps(key, separators=(",", ":")) for key in keys] or ["0"]
    slot = pa.DictionaryArray.from_arrays(
        pa.array(batch._slot_codes.astype(np.int32), mask=~explicit),
        pa.array(text, pa.string()))
    root = np.zeros(n, bool)
    root[batch._roots] = True
    columns = {
        "record": pa.array(record.astype(np.int64) + first_record),
        "module": pa.DictionaryArray.from_arrays(
            pa.array(batch._module_codes.astype(np.int32)),
            pa.array(list(batch._module_names) or [""], pa.string())),
        "attributes": attributes,
        "weight": pa.array(batch._weight),
        "slot": slot,
        "inputs": inputs,
        "root": pa.array(root),
    }
    if getattr(batch, "_object_ids", None) is not None:
        columns["id"] = pa.array([json.dumps(i) for i in batch._object_ids],
                                 pa.string())
    return pa.table(columns)


def _dictionary_codes(column):
    """``(codes, values)`` of a string column: distinct values, -1 for null.

    Dictionary chunks may each have their own dictionary (files written
    apart): the column is re-encoded as a whole.
    """
    import pyarrow.compute as pc

    pa, _ = _pyarrow()
    if pa.types.is_dictionary(column.type):
        column = pc.cast(column, pa.string())
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    encoded = column.dictionary_encode()
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
    return codes.astype(np.intp), encoded.dictionary.to_pylist()


def table_to_batch(table, *, n_records=None, first_record=0, dtype=np.float64,
                   ids=False, where="Parquet data"):
    """A pyarrow Table in the layout above as a validated :class:`RecordBatch`.

    Records are numbered from ``first_record``; ``n_records`` defaults to the
    last record present.
    """
    pa, _ = _pyarrow()
    required = ("record", "module", "attributes", "weight", "slot", "inputs",
                "root")
    missing = [name for name in required if name not in table.column_names]
    if missing:
        raise ValueError(f"{where}: not a sksketch record table; missing columns "
                         f"{missing}")
    n = table.num_rows
    record = table.column("record").to_numpy().astype(np.intp) - first_record
    if n and (record[0] < 0 or np.any(np.diff(record) < 0)):
        raise ValueError(f"{where}: column 'record' must be non-decreasing from "
                         f"{first_record}")
    if n_records is None:
        n_records = int(record[-1]) + 1 if n else 0
    codes, names = _dictionary_codes(table.column("module"))
    if n and np.any(codes < 0):
        raise ValueError(f"{where}: column 'module' holds nulls")
    module = np.asarray(names, dtype=object)[codes] if n else np.zeros(0, object)

    attributes_column = table.column("attributes").combine_chunks()
    offsets = attributes_column.offsets.to_numpy().astype(np.intp)
    values = attributes_column.flatten().to_numpy(zero_copy_only=False)
    lengths = np.diff(offsets)
    attributes = {}
    used = np.unique(codes) if n else np.zeros(0, np.intp)
    for code in used.tolist():
        members = np.flatnonzero(codes == code)
        dim = int(lengths[members[0]])
        wrong = members[lengths[members] != dim]
        if wrong.size:
            raise ValueError(f"{where}: record {int(record[wrong[0]]) + first_record}"
                             f", row {int(wrong[0])}: module {names[code]!r} has "
                             f"{int(lengths[wrong[0]])} attributes, but "
                             f"{dim} elsewhere")
        index = offsets[members][:, None] + np.arange(dim)
        attributes[names[code]] = values[index].reshape(members.size, dim)

    starts = np.searchsorted(record, np.arange(n_records + 1))
    inputs = table.column("inputs").combine_chunks()
    input_offsets = inputs.offsets.to_numpy().astype(np.intp)
    local = inputs.flatten().to_numpy(zero_copy_only=False).astype(np.intp)
    parent = np.repeat(np.arange(n), np.diff(input_offsets))
    sizes = np.diff(starts)[record[parent]] if parent.size else np.zeros(0, np.intp)
    if local.size and (np.any(local < 0) or np.any(local >= sizes)):
        bad = int(np.flatnonzero((local < 0) | (local >= sizes))[0])
        raise ValueError(f"{where}: record {int(record[parent[bad]]) + first_record}"
                         f": column 'inputs' holds offset {int(local[bad])}, "
                         f"outside the record's {int(sizes[bad])} objects")
    child = local + starts[record[parent]] if parent.size else local

    slot_codes, slot_text = _dictionary_codes(table.column("slot"))
    slot = None
    explicit = slot_codes >= 0
    if explicit.any():
        default = default_slot_ordinals(n, codes, parent, child, group=record)
        decoded = np.empty(len(slot_text), dtype=object)
        decoded[:] = [json.loads(text) for text in slot_text]
        slot = np.empty(n, dtype=object)
        slot[:] = default.tolist()
        slot[explicit] = decoded[slot_codes[explicit]]
    root = np.flatnonzero(table.column("root").to_numpy(zero_copy_only=False))
    object_ids = None
    if ids and "id" in table.column_names and not table.column("id").null_count:
        object_ids = [json.loads(text) for text in table.column("id").to_pylist()]
    weight = table.column("weight").to_numpy()
    return RecordBatch(module=module, attributes=attributes, record=record,
                       n_records=n_records, weight=weight, slot=slot,
                       edges=np.stack((parent, child), axis=1), roots=root,
                       object_ids=object_ids, dtype=dtype)


def _files(path):
    """The Parquet files of a path: itself, or a directory's, sorted."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return sorted(os.path.join(path, name) for name in os.listdir(path)
                      if name.endswith(".parquet") and not name.startswith("."))
    return [path]


def parquet_n_records(path):
    """Number of records of a Parquet file or dataset, read from footers."""
    _, pq = _pyarrow()
    total = 0
    for file in _files(path):
        total += _file_n_records(pq.ParquetFile(file))
    return total


def _file_n_records(parquet_file):
    metadata = parquet_file.metadata.metadata or {}
    if _N_RECORDS in metadata:
        return int(metadata[_N_RECORDS])
    records = parquet_file.read(columns=["record"]).column("record")
    return int(records.to_numpy()[-1]) + 1 if len(records) else 0


def iter_parquet(path, *, dtype=np.float64, ids=False):
    """Iterate over a Parquet record file (or a directory of them) in batches.

    One :class:`RecordBatch` per row group (row groups hold whole records),
    so memory stays bounded by the largest row group.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`write_parquet`, or a directory whose
        ``*.parquet`` files are read in name order.
    dtype : {np.float64, np.float32}, default=np.float64
    ids : bool, default=False
        Read the object ids (one Python object per object); by default
        objects are numbered within their record.

    Yields
    ------
    batch : RecordBatch

    Examples
    --------
    >>> import os, tempfile
    >>> from sksketch import iter_parquet, make_activation_records, write_parquet
    >>> records, _ = make_activation_records(25, random_state=0)
    >>> path = os.path.join(tempfile.mkdtemp(), "records.parquet")
    >>> write_parquet(records, path, chunk_size=10)
    25
    >>> [batch.n_records for batch in iter_parquet(path)]
    [10, 10, 5]
    """
    _, pq = _pyarrow()
    for file in _files(path):
        parquet_file = pq.ParquetFile(file)
        n_records = _file_n_records(parquet_file)
        # Written here: every row group holds whole records.
        aligned = (parquet_file.metadata.metadata or {}).get(_FORMAT) == b"1"
        next_record = 0
        pending = None
        for group in range(parquet_file.num_row_groups):
            table = parquet_file.read_row_group(group)
            if pending is not None:
                import pyarrow as pa

                table = pa.concat_tables([pending, table])
            if table.num_rows == 0:
                continue
            records = table.column("record").to_numpy()
            last = int(records[-1])
            is_last = group == parquet_file.num_row_groups - 1
            # A record may continue in the next group (files not written here).
            cut = (table.num_rows if is_last or aligned
                   else int(np.searchsorted(records, last)))
            pending = None if cut == table.num_rows else table.slice(cut)
            if cut == 0:
                continue
            head = table.slice(0, cut)
            end = n_records if is_last else last + aligned
            yield table_to_batch(head, n_records=end - next_record,
                                 first_record=next_record, dtype=dtype, ids=ids,
                                 where=f"{file!r}, row group {group}")
            next_record = end
        if next_record < n_records:  # trailing records without objects
            yield RecordBatch(module=[], attributes={}, n_records=n_records -
                              next_record, dtype=dtype)


def read_parquet(path, *, dtype=np.float64, ids=False):
    """Read a Parquet record file (or a directory of them) into a RecordBatch.

    Columns map onto the batch's arrays (attributes, weights, modules, edges)
    without a Python object per record; see :func:`write_parquet` for the
    layout.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`write_parquet`, or a directory of them.
    dtype : {np.float64, np.float32}, default=np.float64
    ids : bool, default=False
        Read the object ids too (one Python object per object).

    Returns
    -------
    batch : RecordBatch

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from sksketch import (RecursiveSketcher, make_activation_records,
    ...                       read_parquet, write_parquet)
    >>> records, _ = make_activation_records(20, random_state=0)
    >>> path = os.path.join(tempfile.mkdtemp(), "records.parquet")
    >>> write_parquet(records, path)
    20
    >>> batch = read_parquet(path)
    >>> sketcher = RecursiveSketcher(64, random_state=0).fit(records)
    >>> bool(np.allclose(sketcher.transform(batch), sketcher.transform(records)))
    True
    """
    pa, pq = _pyarrow()
    tables, first = [], 0
    for file in _files(path):
        parquet_file = pq.ParquetFile(file)
        table = parquet_file.read()
        if first:
            table = table.set_column(
                table.column_names.index("record"), "record",
                pa.array(table.column("record").to_numpy() + first))
        tables.append(table)
        first += _file_n_records(parquet_file)
    if not tables:
        return RecordBatch(module=[], attributes={}, n_records=0, dtype=dtype)
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
    return table_to_batch(table, n_records=first, dtype=dtype, ids=ids,
                          where=repr(os.fspath(path)))


def is_parquet(file):
    """Whether ``file`` is a path to a Parquet file (magic bytes ``PAR1``).

    Without importing pyarrow, for :func:`read_records` and the CLI to tell
    Parquet from JSON Lines by content, as gzip is told.
    """
    if not isinstance(file, str | os.PathLike):
        return False
    try:
        with open(file, "rb") as handle:
            return handle.read(4) == b"PAR1"
    except (IsADirectoryError, FileNotFoundError, PermissionError):
        return os.path.isdir(file) and bool(_files(file))


def parquet_records(path):
    """The records of a Parquet file, one :class:`ActivationRecord` at a time.

    What :func:`read_records` yields for a JSON Lines file; ids are read.
    """
    for batch in iter_parquet(path, ids=True):
        yield from batch.to_records()


def _chunks(records, chunk_size):
    if isinstance(records, RecordBatch):
        for lo in range(0, records.n_records, chunk_size):
            yield records[lo:lo + chunk_size]
        return
    chunk = []
    for record in records:
        chunk.append(record)
        if len(chunk) == chunk_size:
            yield as_batch(chunk)
            chunk = []
    if chunk:
        yield as_batch(chunk)


def _write_batches(batches, path, compression):
    """Write RecordBatches to a Parquet file atomically; the record count."""
    from ._io import _create_beside

    pa, pq = _pyarrow()
    path = os.path.realpath(os.fspath(path))
    descriptor, temporary = _create_beside(path)
    os.close(descriptor)
    writer = None
    n_records = 0
    try:
        schema = None
        for batch in batches:
            table = batch_to_table(batch, first_record=n_records)
            if schema is None:
                schema = table.schema
                if "id" not in schema.names:
                    schema = schema.append(pa.field("id", pa.string()))
                writer = pq.ParquetWriter(temporary, schema,
                                          compression=compression)
            if "id" not in table.column_names:
                table = table.append_column("id", pa.nulls(table.num_rows,
                                                           pa.string()))
            writer.write_table(table.cast(schema),
                               row_group_size=max(1, table.num_rows))
            n_records += batch.n_records
        if writer is None:  # no records: an empty file with the schema
            empty = RecordBatch(module=[], attributes={}, n_records=0)
            schema = batch_to_table(empty).schema.append(pa.field("id", pa.string()))
            writer = pq.ParquetWriter(temporary, schema, compression=compression)
        writer.add_key_value_metadata({_N_RECORDS: str(n_records).encode(),
                                       _FORMAT: b"1"})
        writer.close()
        writer = None
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        if writer is not None:
            with suppress(Exception):
                writer.close()
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return n_records


def write_parquet(records, path, *, chunk_size=10_000, compression="zstd"):
    """Write records as a Parquet file, a chunk of records at a time.

    Parameters
    ----------
    records : iterable of ActivationRecord or dict, or RecordBatch
        Consumed ``chunk_size`` records at a time: memory stays bounded.
    path : str or path-like
    chunk_size : int, default=10000
        Records per row group.
    compression : str, default="zstd"
        Any codec pyarrow writes ("snappy", "gzip", "none", ...).

    Returns
    -------
    n_written : int

    Notes
    -----
    All or nothing, like :func:`write_records`: the file is written beside
    ``path`` and replaces it once complete and synced. Layout: one row per
    object (columns ``record``, ``module``, ``attributes``, ``weight``,
    ``slot``, ``inputs``, ``root``, ``id``), each row group holding whole
    records; see ``sksketch/_parquet.py``.

    Examples
    --------
    >>> import os, tempfile
    >>> from sksketch import make_activation_records, write_parquet
    >>> from sksketch import iter_parquet
    >>> records, _ = make_activation_records(5, random_state=0)
    >>> path = os.path.join(tempfile.mkdtemp(), "records.parquet")
    >>> write_parquet(records, path)
    5
    >>> next(iter_parquet(path, ids=True)).to_records() == records
    True
    """
    chunk_size = _check_chunk_size(chunk_size)
    return _write_batches(_chunks(records, chunk_size), path, compression)


def jsonl_to_parquet(source, destination, *, chunk_size=10_000,
                     compression="zstd"):
    """Convert a JSON Lines record file to Parquet in one streaming pass.

    At most ``chunk_size`` records are held at once, whatever the file's
    size; each chunk is parsed straight into columns, as :func:`read_batch`
    does.

    Parameters
    ----------
    source : str, path-like or file object
        A JSON Lines file (gzip too), as for :func:`read_records`.
    destination : str or path-like
        The Parquet file, written atomically.
    chunk_size : int, default=10000
    compression : str, default="zstd"

    Returns
    -------
    n_records : int

    Raises
    ------
    ValueError, TypeError
        On an invalid record, naming its line; ``destination`` is then left
        as it was.

    Examples
    --------
    >>> import os, tempfile
    >>> from sksketch import (jsonl_to_parquet, make_activation_records,
    ...                       read_parquet, write_records)
    >>> records, _ = make_activation_records(7, random_state=0)
    >>> directory = tempfile.mkdtemp()
    >>> write_records(records, os.path.join(directory, "r.jsonl"))
    7
    >>> jsonl_to_parquet(os.path.join(directory, "r.jsonl"),
    ...                  os.path.join(directory, "r.parquet"), chunk_size=3)
    7
    >>> read_parquet(os.path.join(directory, "r.parquet"), ids=True
    ...              ).to_records() == records
    True
    """
    from ._io import _json_lines
    from ._records import parse_objects, record_fields

    chunk_size = _check_chunk_size(chunk_size)

    def batches():
        parsed = []
        for data, index in _json_lines(source):
            where = f"record {index}"
            parsed.append(parse_objects(*record_fields(data, where), where))
            if len(parsed) == chunk_size:
                yield RecordBatch.from_parsed(parsed)
                parsed = []
        if parsed:
            yield RecordBatch.from_parsed(parsed)

    return _write_batches(batches(), destination, compression)
