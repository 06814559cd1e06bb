"""Importing an optional dependency, with an error that names its extra."""

import importlib


def import_optional(name, extra, needed_by):
    """Import and return the module ``name``, installed with ``sksketch[extra]``.

    Parameters
    ----------
    name : str
        The module, such as ``"pyarrow.parquet"``.
    extra : str
        The pip extra of sksketch that installs it.
    needed_by : str
        What needs it, for the message: ``"Parquet support"``.

    Raises
    ------
    ImportError
        Naming the package and the command that installs it; the original
        error is chained (a package present but broken shows why).

    Examples
    --------
    >>> from sksketch._optional import import_optional
    >>> import_optional("numpy.linalg", "parquet", "this example").__name__
    'numpy.linalg'
    >>> import_optional("no_such_module", "parquet", "this example")
    Traceback (most recent call last):
    ...
    ImportError: this example needs 'no_such_module': pip install 'sksketch[parquet]'
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        package = name.partition(".")[0]
        raise ImportError(f"{needed_by} needs {package!r}: pip install "
                          f"'sksketch[{extra}]'") from exc
