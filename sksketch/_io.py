"""JSON Lines input and output of records, one record per line, streamed."""

import gzip
import io
import json
import math
import os
import secrets
import stat
import zlib
from contextlib import contextmanager, suppress
from functools import lru_cache

import numpy as np

from ._batch import RecordBatch
from ._parquet import is_parquet, iter_parquet, parquet_records, read_parquet
from ._records import (
    ActivationRecord,
    _Parsed,
    as_record,
    canonical_slot,
    parse_objects,
    record_fields,
)

_GZIP_MAGIC = b"\x1f\x8b"
# What a damaged gzip stream raises while it is read: a stream cut short
# (EOFError), a bad header (BadGzipFile) or bad deflate data or CRC (zlib.error).
_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


def _file_name(file):
    """The name to quote in error messages, or None (e.g. for a StringIO)."""
    if isinstance(file, str | os.PathLike):
        return os.fsdecode(os.fspath(file))
    name = getattr(file, "name", None)
    return name if isinstance(name, str) else None


def _line(line_number, name):
    return f"line {line_number}" + ("" if name is None else f" of {name!r}")


@contextmanager
def _open_for_reading(file):
    if not isinstance(file, str | os.PathLike):
        yield file
        return
    with open(file, "rb") as raw:
        # Gzip is told by its magic bytes, not by the suffix: ".JSONL.GZ" or a
        # renamed file read the same. peek() does not consume, so pipes work.
        if raw.peek(2)[:2] == _GZIP_MAGIC:
            with gzip.GzipFile(fileobj=raw, mode="rb") as handle:
                yield handle
        else:
            yield raw


def read_records(file):
    """Iterate over the records of a JSON Lines file, one line at a time.

    Parameters
    ----------
    file : str, path-like or file object
        A path, or an open file (text, or binary holding UTF-8). A path whose
        content starts with the gzip magic bytes ``1f 8b`` is decompressed,
        whatever its suffix; one starting with ``PAR1`` (or a directory of
        such files) is read as Parquet (see :func:`read_parquet`, extra
        ``sksketch[parquet]``). Blank lines are skipped.

    Yields
    ------
    record : ActivationRecord

    Raises
    ------
    ValueError, TypeError
        On a line that is not UTF-8, not JSON (or nested too deeply), a gzip
        stream that is truncated or corrupt, or an invalid record; the message
        names the line and, when it has a name, the file. Records before the
        bad line have been yielded.

    Examples
    --------
    >>> import io
    >>> from sksketch import read_records
    >>> lines = io.StringIO('{"objects": [{"id": 0, "module": "cat", '
    ...                     '"attributes": [1.0, 2.0]}]}\\n')
    >>> [record.modules for record in read_records(lines)]
    [('cat',)]
    """
    if is_parquet(file):  # told by content, as gzip is
        yield from parquet_records(file)
        return
    for data, where in _json_lines(file):
        yield ActivationRecord.from_dict(data, index=where)


def read_batch(file, *, dtype=np.float64):
    """Read a JSON Lines file of records straight into a :class:`RecordBatch`.

    The same as ``RecordBatch.from_records(list(read_records(file)))``, with
    the same checks and messages, but several times faster (see
    ``benchmarks/bench_io.py``): each line's objects
    are checked and kept as lists, and the structure of all records (cycles,
    default slots, finiteness, dimensions) is checked in one vectorized pass,
    without building an :class:`ActivationRecord` per line. With msgspec
    installed (``pip install 'sksketch[fast]'``), each line is decoded and its
    fields' types checked in C, 2-3 times faster again; a line msgspec
    refuses is read again with ``json``, so that the batch and every
    error message are the same with or without it.

    Parameters
    ----------
    file : str, path-like or file object
        As for :func:`read_records`.
    dtype : {np.float64, np.float32}, default=np.float64
        Floating type of the batch's attributes and weights.

    Returns
    -------
    batch : RecordBatch

    Raises
    ------
    ValueError, TypeError
        As :func:`read_records`; the message names the line and, when it has
        a name, the file.

    Examples
    --------
    >>> import io
    >>> from sksketch import read_batch
    >>> lines = io.StringIO('{"objects": [{"id": 0, "module": "cat", '
    ...                     '"attributes": [1.0, 2.0]}]}\\n')
    >>> batch = read_batch(lines)
    >>> batch.n_records, batch.module_dims
    (1, {'cat': 2})
    """
    if is_parquet(file):
        return read_parquet(file, dtype=dtype, ids=True)
    return RecordBatch.from_parsed(list(_parsed_lines(file)), dtype=dtype)


def read_batches(file, batch_size, *, dtype=np.float64):
    """Read a JSON Lines file of records as consecutive :class:`RecordBatch` es.

    Internal to sksketch (the command line): :func:`read_batch` in pieces of
    ``batch_size`` records, so that a large file streams. The checks and
    messages are those of :func:`read_batch`, and a module whose attribute
    dimension differs from an earlier batch's is refused too, naming both
    lines.

    Parameters
    ----------
    file : str, path-like or file object
        As for :func:`read_records`.
    batch_size : int
        Records per batch; the last batch may be smaller.
    dtype : {np.float64, np.float32}, default=np.float64

    Yields
    ------
    batch : RecordBatch
    """
    first_seen = {}  # module -> (dim, where it was first seen)
    parsed = []

    def assembled():
        # Checked here, not left to RecordBatch.from_parsed, so that a
        # conflict within a batch too names lines, not places in the batch.
        for record in parsed:
            for name, dim in record.module_dims.items():
                known, where = first_seen.setdefault(name, (dim, record.where))
                if known != dim:
                    raise ValueError(
                        f"{record.where}, object "
                        f"{record.ids[record.modules.index(name)]!r}: module "
                        f"{name!r} has attribute dimension {dim}, but {known} "
                        f"in the {where}")
        return RecordBatch.from_parsed(parsed, dtype=dtype)

    if is_parquet(file):  # already columnar: its own row groups
        yield from iter_parquet(file, dtype=dtype, ids=True)
        return
    for record in _parsed_lines(file):
        parsed.append(record)
        if len(parsed) == batch_size:
            yield assembled()
            parsed = []
    if parsed:
        yield assembled()


def _json_lines(file):
    """``(data, "on line n of 'file'")`` for each non-blank line of ``file``."""
    for line, line_number, name in _lines(file):
        data = _parse_line(line, line_number, name)
        if data is not None:  # None: a blank line
            yield data, f"on {_line(line_number, name)}"


def _parsed_lines(file):
    """Each non-blank line's record, its objects checked (``parse_objects``).

    With msgspec installed, a line is first decoded by a typed decoder that
    checks most fields in C (:func:`_parse_typed`); a line it refuses, for
    whatever reason, is parsed again the standard way, which raises the
    error with its usual message (or accepts what the stricter types
    refused): results and messages are those of the standard path.
    """
    decoder = _typed_decoder()
    for line, line_number, name in _lines(file):
        where = f"record on {_line(line_number, name)}"
        record = None if decoder is None else _parse_typed(decoder, line, where)
        if record is None:
            data = _parse_line(line, line_number, name)
            if data is None:  # a blank line
                continue
            record = parse_objects(*record_fields(data, where), where)
        yield record


def _lines(file):
    """``(line, line number, file name)`` for each line of ``file``."""
    name = _file_name(file)
    with _open_for_reading(file) as handle:
        lines = iter(handle)
        line_number = 0
        while True:
            # Reading, decompressing and (for a text file) decoding happen in
            # next(): their errors are about the line being read.
            try:
                line = next(lines)
            except StopIteration:
                return
            except _GZIP_ERRORS as exc:
                raise ValueError(f"{_line(line_number + 1, name)}: truncated or "
                                 f"corrupt gzip data: {exc}") from None
            except UnicodeDecodeError as exc:
                # A text file decodes in chunks: the bad byte is on this line
                # or a later one.
                raise ValueError(f"{_line(line_number + 1, name)} or later: "
                                 f"invalid UTF-8: {exc.reason}") from None
            line_number += 1
            yield line, line_number, name


def _parse_line(line, line_number, name):
    """The JSON value of one line, or None for a blank line."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{_line(line_number, name)}: invalid UTF-8 at byte "
                             f"{exc.start}: {exc.reason}") from None
    if not line.strip():
        return None
    try:
        return json.loads(line)
    except RecursionError:
        raise ValueError(f"{_line(line_number, name)}: invalid JSON: nested too "
                         f"deeply") from None
    except ValueError as exc:  # JSONDecodeError, or an int of > 4300 digits
        raise ValueError(f"{_line(line_number, name)}: invalid JSON: "
                         f"{exc}") from None


@lru_cache(maxsize=1)
def _typed_decoder():
    """A msgspec decoder of one record's line into typed structs, or None.

    msgspec (optional: ``pip install msgspec``) decodes and checks the types
    of every field in C, several times faster than ``json.loads`` followed by
    the checks in Python.
    """
    try:
        import msgspec
    except ImportError:
        return None

    Id = int | str

    # gc=False: the structs hold no cycles, and untracked objects decode
    # faster (msgspec's advice for many small structs).
    class _Object(msgspec.Struct, forbid_unknown_fields=True, gc=False):
        id: Id
        module: str
        attributes: list[float]
        weight: float = 1.0
        slot: int | str | list | None = None
        inputs: list[Id] | None = None

    class _Record(msgspec.Struct, forbid_unknown_fields=True, gc=False):
        objects: list[_Object]
        outputs: list[Id] | None = None

    return msgspec.json.Decoder(_Record)


def _parse_typed(decoder, line, where):
    """One line's record through the typed decoder, or None.

    Makes the checks of :func:`parse_objects` that the types leave (unique
    ids, module names, dimensions within the record, weights, slots, inputs
    and outputs naming objects once) and returns the same fields (attributes
    as lists of floats, which the batch stacks as it stacks arrays); returns
    None at the first doubt (invalid JSON, a type refused, a check failed),
    leaving the line to the standard path and its error messages.
    """
    try:
        record = decoder.decode(line)
    except Exception:  # msgspec's DecodeError or ValidationError: json judges
        return None
    try:
        return _typed_fields(record, where)
    except (KeyError, TypeError, ValueError):  # a missing id, a bad slot
        return None


def _typed_fields(record, where):
    """The fields of :func:`parse_objects` from a decoded record, or None."""
    objects = record.objects
    n = len(objects)
    ids = [o.id for o in objects]
    position = dict(zip(ids, range(n)))
    if len(position) != n:  # an id twice
        return None
    modules = [o.module for o in objects]
    attributes = [o.attributes for o in objects]
    dims = list(map(len, attributes))
    module_dims = dict(zip(modules, dims))  # first-seen order, as parse_objects
    if len(set(zip(modules, dims))) != len(module_dims):
        return None  # a module with two dimensions
    if any(not module or "/" in module for module in module_dims):
        return None
    weights = [o.weight for o in objects]
    # msgspec parses no NaN; an overflow to inf is caught here.
    if n and not (min(weights) >= 0 and max(weights) < math.inf):
        return None
    slots = [o.slot for o in objects]
    if any(type(s) is list for s in slots):
        slots = [canonical_slot(s, where) if type(s) is list else s for s in slots]
    parent = [index for index, o in enumerate(objects) if o.inputs
              for _ in o.inputs]
    child = [position[i] for o in objects if o.inputs for i in o.inputs]
    if len(set(zip(parent, child))) != len(child):
        return None  # an object lists an input twice
    roots = None
    if record.outputs is not None:
        roots = [position[i] for i in record.outputs]
        if len(set(roots)) != len(roots):
            return None
    return _Parsed(where, ids, modules, attributes, weights, slots, parent, child,
                   roots, module_dims)


def _write_lines(records, handle, binary):
    n_written = 0
    for index, data in enumerate(records):
        # Checked and serialised before anything is written: a bad record
        # never leaves part of a line behind.
        record = as_record(data, index=index)
        line = json.dumps(record.to_dict(), separators=(",", ":")) + "\n"
        handle.write(line.encode("utf-8") if binary else line)
        n_written += 1
    return n_written


def _create_beside(path):
    """Open a new, uniquely named file in ``path``'s directory for writing.

    ``os.open`` with mode 0o666 lets the umask apply, as ``open`` would
    (``tempfile.mkstemp`` would make it 0o600).
    """
    directory, base = os.path.split(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        temporary = os.path.join(directory, f".{base}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path!r}")


def write_records(records, file):
    """Write records as JSON Lines, one record per line, as they come.

    Parameters
    ----------
    records : iterable of ActivationRecord or dict
    file : str, path-like or file object
        A path (compressed with gzip when it ends in ``.gz``, in any case) or
        an open file (text, or binary: UTF-8 is written).

    Returns
    -------
    n_written : int
        Number of records written.

    Raises
    ------
    ValueError, TypeError
        On an invalid record; the message names its position in ``records``.

    Notes
    -----
    Writing to a path is all or nothing: the lines go to a temporary file
    beside it (in the same directory, so that the final ``os.replace`` is
    atomic), which replaces ``file`` only once every record was written and
    synced to disk. If a record is invalid, or ``records`` raises, or the
    disk fills, the temporary file is removed and ``file`` keeps its former
    content. A replaced file keeps its permission bits; a symbolic link is
    followed, and its target is replaced. There is no append mode, since an
    append cannot be undone: to add records, write them all to a new file.

    An open file object is written as records come, one whole line per
    record: each record is checked and serialised before its line is
    written, so a bad record leaves the lines before it, never part of one.

    Examples
    --------
    >>> import io
    >>> from sksketch import make_activation_records, read_records, write_records
    >>> records, _ = make_activation_records(3, random_state=0)
    >>> buffer = io.StringIO()
    >>> write_records(records, buffer)
    3
    >>> _ = buffer.seek(0)
    >>> list(read_records(buffer)) == records
    True
    """
    if not isinstance(file, str | os.PathLike):
        binary = isinstance(file, io.RawIOBase | io.BufferedIOBase)
        return _write_lines(records, file, binary)
    with atomic_output(file) as (raw, path):
        if path.lower().endswith(".gz"):
            # filename: the header names the final file, not the temporary.
            with gzip.GzipFile(filename=path, mode="wb", fileobj=raw) as handle:
                return _write_lines(records, handle, binary=True)
        return _write_lines(records, raw, binary=True)


@contextmanager
def atomic_output(file):
    """Write a file all or nothing: into a temporary beside it, then replace it.

    Internal to sksketch (:func:`write_records`, the command line).

    Parameters
    ----------
    file : str or path-like
        The file to write; a symbolic link is followed, and its target is
        replaced.

    Yields
    ------
    handle : binary file object
        The temporary file, open for writing.
    path : str
        The resolved path that will be replaced.

    Notes
    -----
    The temporary is in the same directory, so that the final ``os.replace``
    is atomic. It replaces ``file`` only once the block ended without an
    exception and the data was synced to disk; otherwise (an exception, an
    interrupt, a full disk) it is removed and ``file`` keeps its former
    content. A replaced file keeps its permission bits.
    """
    path = os.path.realpath(os.fsdecode(os.fspath(file)))
    descriptor, temporary = _create_beside(path)
    try:
        with open(descriptor, "wb") as raw:
            yield raw, path
            raw.flush()
            os.fsync(raw.fileno())
        with suppress(FileNotFoundError):
            os.chmod(temporary, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(temporary, path)
    except BaseException:  # also KeyboardInterrupt: never leave the temporary
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
