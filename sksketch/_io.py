"""JSON Lines input and output of records, one record per line, streamed."""

import gzip
import json
import os
from contextlib import contextmanager

from ._records import ActivationRecord, as_record


@contextmanager
def _open(file, mode):
    if isinstance(file, str | os.PathLike):
        opener = gzip.open if os.fspath(file).endswith(".gz") else open
        with opener(file, mode + "t", encoding="utf-8") as handle:
            yield handle
    else:
        yield file


def read_records(file):
    """Iterate over the records of a JSON Lines file, one line at a time.

    Parameters
    ----------
    file : str, path-like or text file object
        A path (``.gz`` is decompressed) or an open text file. Blank lines are
        skipped.

    Yields
    ------
    record : ActivationRecord

    Raises
    ------
    ValueError, TypeError
        On invalid JSON or an invalid record; the message names the line.

    Examples
    --------
    >>> import io
    >>> from sksketch import read_records
    >>> lines = io.StringIO('{"objects": [{"id": 0, "module": "cat", '
    ...                     '"attributes": [1.0, 2.0]}]}\\n')
    >>> [record.modules for record in read_records(lines)]
    [('cat',)]
    """
    with _open(file, "r") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"line {line_number}: invalid JSON: {exc}") from None
            yield ActivationRecord.from_dict(data, index=f"on line {line_number}")


def write_records(records, file):
    """Write records as JSON Lines, one record per line, as they come.

    Parameters
    ----------
    records : iterable of ActivationRecord or dict
    file : str, path-like or text file object
        A path (``.gz`` is compressed) or an open text file.

    Returns
    -------
    n_written : int
        Number of records written.

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
    n_written = 0
    with _open(file, "w") as handle:
        for index, data in enumerate(records):
            record = as_record(data, index=index)
            handle.write(json.dumps(record.to_dict(), separators=(",", ":")))
            handle.write("\n")
            n_written += 1
    return n_written

