"""The ``sksketch`` command line: sketch record files, decode and inspect them.

Run ``sksketch --help`` (or ``python -m sksketch --help``). Every subcommand
reports a bad input as one line on stderr, ``sksketch: error: <message>``,
and exits with status 2; outputs are written atomically and never replace
an existing file without ``--force``.
"""

import argparse
import csv
import io
import os
import runpy
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

# Records (or sketches) per step of a streamed run: large enough for the
# vectorized checks and products to pay, small enough for a lively bar.
_BATCH_SIZE = 1024
# The digits demo lives in the source tree, beside the package, not in a wheel.
_DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.py"
_NPY_MAGIC = b"\x93NUMPY"
_MODEL_SUFFIXES = (".joblib", ".pkl", ".pickle")


class CommandError(Exception):
    """A problem with the command's files or arguments: one line, exit 2."""


def main(argv=None):
    """Run the ``sksketch`` command line.

    Parameters
    ----------
    argv : list of str, default=None
        The arguments, without the program name; default ``sys.argv[1:]``.

    Returns
    -------
    status : int
        0 on success, 2 on a bad input (the message is on stderr). ``--help``
        and argument errors exit through ``SystemExit``, as argparse does.
    """
    args = _parser().parse_args(argv)
    try:
        args.run(args)
    except BrokenPipeError:
        # The reader left (``sksketch info F | head``): no message, and no
        # second error when Python flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (CommandError, ValueError, TypeError, OSError) as exc:
        # The library's messages name the file, line, object and field; a
        # traceback would only bury them.
        message = " ".join(str(exc).split())
        print(f"sksketch: error: {message}", file=sys.stderr)
        return 2
    return 0


def _parser():
    parser = argparse.ArgumentParser(
        prog="sksketch",
        description="Sketch module-activation records into fixed-size vectors, "
                    "decode counts and attributes back, inspect the files.")
    commands = parser.add_subparsers(title="commands", required=True,
                                     metavar="COMMAND")
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("-q", "--quiet", action="store_true",
                       help="no progress bar")
    force = argparse.ArgumentParser(add_help=False)
    force.add_argument("--force", action="store_true",
                       help="replace output files that exist")

    demo = commands.add_parser(
        "demo", help="train a small CNN on digits and sketch what it saw",
        description="Run examples/demo.py (needs the source tree and "
                    "sksketch[torch]).")
    demo.add_argument("--fast", action="store_true",
                      help="fewer images, epochs and dimensions")
    demo.add_argument("--out", default="demo_output",
                      help="folder for the plots (default: demo_output)")
    demo.set_defaults(run=_demo)

    sketch = commands.add_parser(
        "sketch", parents=[quiet, force], help="sketch a records file",
        description="Fit a RecursiveSketcher on the records of a JSON Lines file "
                    "(gzip allowed) and write one sketch per record to a .npy "
                    "file.")
    sketch.add_argument("records", metavar="RECORDS.jsonl[.gz]")
    sketch.add_argument("-o", "--output", required=True, metavar="SKETCHES.npy")
    sketch.add_argument("--dim", required=True, type=_positive_int, metavar="D",
                        help="sketch dimension")
    # 0, not a fresh seed: the same command gives the same sketches, and two
    # runs on different files give comparable ones.
    sketch.add_argument("--random-state", type=int, default=0, metavar="N",
                        help="seed of the random matrices (default: 0)")
    sketch.add_argument("--save-model", metavar="M.joblib",
                        help="also save a SketchAttributeRecoverer fitted on the "
                             "records, for 'sksketch decode'")
    sketch.set_defaults(run=_sketch)

    decode = commands.add_parser(
        "decode", parents=[quiet, force], help="decode sketches into a CSV table",
        description="Decode the count and mean attributes of every module path "
                    "from each sketch, with a model saved by 'sksketch sketch "
                    "--save-model'. The model is a pickle: load only trusted "
                    "files.")
    decode.add_argument("sketches", metavar="SKETCHES.npy")
    decode.add_argument("--model", required=True, metavar="M.joblib")
    decode.add_argument("--method", choices=("lstsq", "transpose"),
                        help="decoder (default: the model's, lstsq)")
    decode.add_argument("-o", "--output", required=True, metavar="TABLE.csv")
    decode.set_defaults(run=_decode)

    info = commands.add_parser(
        "info", parents=[quiet], help="describe a records, sketches or model file",
        description="Describe a records file (.jsonl[.gz]), sketches (.npy) or "
                    "a saved model (.joblib: a pickle, load only trusted files).")
    info.add_argument("file", metavar="FILE")
    info.set_defaults(run=_info)
    return parser


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


# -- helpers ---------------------------------------------------------------


def _check_outputs(args, *paths):
    """Refuse, before any work, outputs that exist (unless --force) or clash."""
    paths = [p for p in paths if p is not None]
    if len({os.path.realpath(p) for p in paths}) < len(paths):
        raise CommandError(f"{paths[0]!r} is given as two outputs")
    for path in paths:
        # Said here: the temporary file's name would be in the OSError.
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise CommandError(f"{path!r}: no folder {folder!r} to write it in")
        if os.path.lexists(path) and not args.force:
            raise CommandError(f"{path!r} exists; pass --force to replace it")


@contextmanager
def _progress(args, **kwargs):
    """A tqdm bar on stderr, or a silent stand-in with --quiet or no tqdm."""
    bar = None
    if not args.quiet:
        try:
            from tqdm.auto import tqdm
        except ImportError:  # tqdm is optional (the torch extra)
            pass
        else:
            # disable=None: no bar when stderr is not a terminal (pipes, CI).
            bar = tqdm(file=sys.stderr, disable=None, **kwargs)
    if bar is None:
        yield _NoBar()
        return
    with bar:
        yield bar


class _NoBar:
    def update(self, n=1):
        pass


def _load_model(path):
    """A fitted SketchAttributeRecoverer or RecursiveSketcher saved by joblib."""
    import joblib

    from ._recover import SketchAttributeRecoverer
    from ._sketch import RecursiveSketcher

    path = os.fspath(path)
    with open(path, "rb"):  # a missing file: the usual OSError message
        pass
    try:
        model = joblib.load(path)
    except Exception as exc:  # unpickling raises anything: the file is not a model
        raise CommandError(f"{path!r}: not a model saved by 'sksketch sketch "
                           f"--save-model' ({type(exc).__name__}: {exc})") from None
    fitted = ("paths_" if isinstance(model, SketchAttributeRecoverer)
              else "seed_" if isinstance(model, RecursiveSketcher) else None)
    if fitted is None or not hasattr(model, fitted):
        raise CommandError(f"{path!r}: holds a {type(model).__name__}, not a fitted "
                           f"SketchAttributeRecoverer or RecursiveSketcher")
    return model


def _load_sketches(path):
    """The sketches of a .npy file, memory-mapped: read a slice at a time."""
    sketches = np.load(path, mmap_mode="r", allow_pickle=False)
    if sketches.ndim != 2 or not np.issubdtype(sketches.dtype, np.floating):
        raise CommandError(f"{os.fspath(path)!r}: expected a 2-d float array of "
                           f"sketches, got shape {sketches.shape} and dtype "
                           f"{sketches.dtype}")
    return sketches


def _kind(path):
    """'sketches', 'model' or 'records', told by magic bytes and suffix."""
    with open(path, "rb") as handle:
        head = handle.read(len(_NPY_MAGIC))
    if head == _NPY_MAGIC:
        return "sketches"
    name = os.fspath(path).lower().removesuffix(".gz")
    # 0x80: a pickle's protocol opcode, which joblib writes first.
    if name.endswith(_MODEL_SUFFIXES) or head[:1] == b"\x80":
        return "model"
    return "records"


# -- subcommands -------------------------------------------------------------


def _demo(args):
    if not _DEMO.is_file():
        raise CommandError("the demo is examples/demo.py in the source tree, which "
                           "this installation lacks: clone the repository and run "
                           "'make demo'")
    argv = ["--out", args.out] + (["--fast"] if args.fast else [])
    try:
        # run_path, not import: examples/ is no package.
        runpy.run_path(str(_DEMO))["main"](argv)
    except ImportError as exc:
        raise CommandError(f"the demo needs {exc.name or exc}: pip install "
                           f"'sksketch[torch,docs]'") from None


def _sketch(args):
    import joblib

    from ._io import atomic_output, read_batch, read_batches
    from ._recover import SketchAttributeRecoverer
    from ._sketch import RecursiveSketcher

    _check_outputs(args, args.output, args.save_model)
    sketcher = RecursiveSketcher(args.dim, random_state=args.random_state)
    if args.save_model:
        # The recoverer learns the module paths of all records at once, so
        # the file is read whole; the sketches are still made by batches.
        whole = read_batch(args.records)
        sketcher.fit(whole)
        recoverer = SketchAttributeRecoverer(sketcher).fit(whole)
        batches = (whole.take(np.arange(lo, min(lo + _BATCH_SIZE, len(whole))))
                   for lo in range(0, len(whole), _BATCH_SIZE))
    else:
        batches = read_batches(args.records, _BATCH_SIZE)
    sketches = []
    with _progress(args, desc="sketching", unit=" records") as bar:
        for batch in batches:
            # Every matrix derives from the seed and a module's name, so
            # adding each batch's modules as they come gives the sketches of
            # one fit on all records.
            sketches.append(sketcher.partial_fit(batch).transform(batch))
            bar.update(len(batch))
    if not sketches:
        raise CommandError(f"{args.records!r}: no records")
    with atomic_output(args.output) as (handle, _):
        np.save(handle, np.vstack(sketches))
    if args.save_model:
        with atomic_output(args.save_model) as (handle, _):
            joblib.dump(recoverer, handle)


def _decode(args):
    from ._io import atomic_output
    from ._recover import OutOfStructureWarning, SketchAttributeRecoverer

    _check_outputs(args, args.output)
    model = _load_model(args.model)
    if not isinstance(model, SketchAttributeRecoverer):
        raise CommandError(f"{args.model!r}: holds a {type(model).__name__}; "
                           f"decoding needs the SketchAttributeRecoverer that "
                           f"'sksketch sketch --save-model' saves")
    if args.method is not None:
        model.set_params(method=args.method)
    sketches = _load_sketches(args.sketches)
    header = io.StringIO()
    # csv quotes module names holding commas or quotes.
    csv.writer(header, lineterminator="\n").writerow(model.get_feature_names_out())
    n_warned, first_warning = 0, None
    with atomic_output(args.output) as (handle, _), \
            _progress(args, desc="decoding", unit=" sketches",
                      total=len(sketches)) as bar:
        handle.write(header.getvalue().encode("utf-8"))
        for lo in range(0, len(sketches), _BATCH_SIZE):
            block = np.asarray(sketches[lo:lo + _BATCH_SIZE])
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", OutOfStructureWarning)
                features = model.transform(block)
            for warning in caught:
                if issubclass(warning.category, OutOfStructureWarning):
                    n_warned += 1
                    first_warning = first_warning or str(warning.message)
                else:
                    warnings.warn_explicit(warning.message, warning.category,
                                           warning.filename, warning.lineno)
            # %.17g: every float64 reads back exactly.
            np.savetxt(handle, features, fmt="%.17g", delimiter=",")
            bar.update(len(block))
    if first_warning is not None:
        more = (f" (and in {n_warned - 1} more blocks of {_BATCH_SIZE} sketches)"
                if n_warned > 1 else "")
        print(f"sksketch: warning: {first_warning}{more}", file=sys.stderr)


def _info(args):
    kind = _kind(args.file)
    if kind == "sketches":
        _info_sketches(args)
    elif kind == "model":
        _info_model(args)
    else:
        _info_records(args)


def _info_records(args):
    from ._io import read_batches

    n_records = 0
    objects = {}  # module -> [dim, number of objects]
    with _progress(args, desc="reading", unit=" records") as bar:
        for batch in read_batches(args.file, _BATCH_SIZE):
            n_records += len(batch)
            for (name, dim), block in zip(batch.module_dims.items(),
                                          batch._attributes):
                objects.setdefault(name, [dim, 0])[1] += block.shape[0]
            bar.update(len(batch))
    print(f"{args.file}: records")
    print(f"records: {n_records}")
    print(f"objects: {sum(n for _, n in objects.values())}")
    print(f"modules: {len(objects)}")
    for name, (dim, n) in sorted(objects.items()):
        print(f"  {name}: dim {dim}, {n} objects")


def _info_sketches(args):
    sketches = _load_sketches(args.file)
    norms = np.concatenate(
        [np.linalg.norm(np.asarray(sketches[lo:lo + _BATCH_SIZE], np.float64),
                        axis=1) for lo in range(0, len(sketches), _BATCH_SIZE)]
        or [np.zeros(0)])
    print(f"{args.file}: sketches")
    print(f"shape: {sketches.shape}")
    print(f"dtype: {sketches.dtype}")
    if norms.size:
        print(f"norms: min {norms.min():.4g}, median {np.median(norms):.4g}, "
              f"mean {norms.mean():.4g}, max {norms.max():.4g}")


def _info_model(args):
    from ._recover import SketchAttributeRecoverer, path_name

    model = _load_model(args.file)
    recoverer = isinstance(model, SketchAttributeRecoverer)
    sketcher = model.sketcher_ if recoverer else model
    print(f"{args.file}: {type(model).__name__}")
    print(f"sketch_dim: {sketcher.sketch_dim}")
    print(f"random_state: {sketcher.random_state}")
    if recoverer:
        print(f"method: {model.method}")
    print(f"modules: {len(sketcher.modules_)}")
    for name, dim in sketcher.modules_.items():
        print(f"  {name}: dim {dim}")
    if recoverer:
        print(f"paths: {len(model.paths_)}")
        for path in model.paths_:
            print(f"  {path_name(path)}")
