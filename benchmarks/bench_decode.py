"""Decoding speed and error against the sketch dimension and erasure.

For both decoders of SketchAttributeRecoverer ("lstsq", "transpose") it
measures, on the records of a synthetic 3-layer network:

- sketches decoded per second (``transform``: counts and means of every path)
  and the relative error of the decoded unknowns (per-path counts and
  per-(path, slot) attribute sums) against the truth, for several d;
- the same error when only the first d' < d coordinates are kept;
- the speed of sparse decoding (more unknowns than d/2), against the group
  pursuit alone on the same sketches, and the share of sketches each explains.

Prints a table, writes ``benchmarks/results/bench_decode.json`` and, with
``--plot``, ``docs/images/decode_error.png``. With ``--busy-core``, every
timing also runs while another process keeps one core busy (column
``busy s/s``).
"""

import argparse
import json
import sys
import warnings
from functools import partial
from pathlib import Path

import numpy as np

from sksketch import (
    OutOfStructureWarning,
    RecursiveSketcher,
    SketchAttributeRecoverer,
    make_activation_records,
)
from sksketch._batch import as_batch
from sksketch._decode import _noise_level
from sksketch._unroll import coefficients, unroll

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import busy_core as busy  # noqa: E402
from common import best_time  # noqa: E402


def relative_error(recoverer, records, sketches, kept=None):
    """||z_hat - z|| / ||z|| over all sketches, z the decoded unknowns."""
    batch = as_batch(records)
    truth = coefficients(batch, unroll(batch, max_depth=recoverer.max_depth),
                         recoverer._structure.layout)
    if kept is None:
        kept = np.arange(sketches.shape[1])
    estimate = recoverer._decoder().decode(sketches, kept).z
    return float(np.linalg.norm(estimate - truth) / np.linalg.norm(truth))


def decode_rate(recoverer, sketches, busy_core_too=None):
    """Sketches per second, best of at least 3 calls (and 1 s of calls)
    after a call that factorizes; with a busy core too: (idle, busy)."""
    def decode():
        with warnings.catch_warnings():
            # The sparse case holds sketches beyond the decoder's budget:
            # expected, and reported as the relative error.
            warnings.simplefilter("ignore", OutOfStructureWarning)
            recoverer.transform(sketches)

    idle = sketches.shape[0] / best_time(decode, min_total=1.0)
    if not (busy.ENABLED if busy_core_too is None else busy_core_too):
        return idle, None
    with busy.busy_core(True):
        return idle, sketches.shape[0] / best_time(decode, warmup=False,
                                                   min_total=1.0)


def run(n_records, dims, erasure_dim):
    records, _ = make_activation_records(n_records, n_modules=6, depth=3,
                                         n_roots=(1, 2), shared_fraction=0.2,
                                         random_state=0)
    by_d, by_kept = [], []
    for method in ("lstsq", "transpose"):
        for d in dims:
            recoverer = SketchAttributeRecoverer(RecursiveSketcher(d, random_state=0),
                                                 method=method).fit(records)
            sketches = recoverer.sketcher_.transform(records)
            rate, busy_rate = decode_rate(recoverer, sketches)
            by_d.append({"method": method, "sketch_dim": d,
                         "n_unknowns": recoverer._structure.n_unknowns,
                         "sketches_per_s": rate,
                         "sketches_per_s_busy_core": busy_rate,
                         "relative_error": relative_error(recoverer, records,
                                                          sketches)})
        recoverer = SketchAttributeRecoverer(
            RecursiveSketcher(erasure_dim, random_state=0), method=method).fit(records)
        sketches = recoverer.sketcher_.transform(records)
        for fraction in (1, 2, 4, 8, 16, 32, 64):
            kept = erasure_dim // fraction
            by_kept.append({"method": method, "sketch_dim": erasure_dim,
                            "kept": kept,
                            "relative_error": relative_error(
                                recoverer, records, sketches[:, :kept],
                                np.arange(kept))})
    # Sparse decoding: a wider network, more unknowns than d/2; a larger
    # batch too (memory per batch is bounded, the rate should hold). The
    # decoder (least squares on a support superset) against the group
    # pursuit alone on the same sketches, and how many each explains.
    omp = []
    for n_omp in (n_records, 5 * n_records):
        wide, _ = make_activation_records(n_omp, n_modules=9, depth=3, fan_in=3,
                                          n_roots=(1, 2), shared_fraction=0.3,
                                          random_state=0)
        recoverer = SketchAttributeRecoverer(
            RecursiveSketcher(256, random_state=0)).fit(wide)
        sketches = recoverer.sketcher_.transform(wide)
        rate, busy_rate = decode_rate(recoverer, sketches)
        decoded = recoverer._decoder().decode(sketches, np.arange(256))
        # The pursuit as the decoder called it before: the same stopping
        # rule and condition-number limit.
        pursuit = recoverer._decoder()._factor(np.arange(256))[1]
        floor = _noise_level(np.finfo(np.float64).eps, 256, 1.0)
        solve = partial(pursuit.solve, sketches, recoverer.tol / floor,
                        stop=max(recoverer.tol, floor))
        pursuit_rate = n_omp / best_time(solve, min_total=1.0)
        _, residual, _ = solve()
        norms = np.linalg.norm(sketches, axis=1)
        omp.append({"n_sketches": n_omp, "sketch_dim": 256,
                    "n_unknowns": recoverer._structure.n_unknowns,
                    "sketches_per_s": rate, "sketches_per_s_busy_core": busy_rate,
                    "pursuit_sketches_per_s": pursuit_rate,
                    "explained": float(np.mean(decoded.residual <= decoded.noise)),
                    "pursuit_explained": float(np.mean(
                        np.linalg.norm(residual, axis=1)
                        <= max(recoverer.tol, floor) * norms)),
                    "relative_error": relative_error(recoverer, wide, sketches)})
    return by_d, by_kept, omp


def plot(by_d, by_kept, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    for method, marker in (("transpose", "o"), ("lstsq", "s")):
        rows = [r for r in by_d if r["method"] == method]
        left.loglog([r["sketch_dim"] for r in rows],
                    [max(r["relative_error"], 1e-16) for r in rows], marker=marker,
                    label=method)
        rows = [r for r in by_kept if r["method"] == method]
        right.loglog([r["kept"] for r in rows],
                     [max(r["relative_error"], 1e-16) for r in rows], marker=marker,
                     label=method)
    rows = [r for r in by_d if r["method"] == "transpose"]
    d0, e0 = rows[0]["sketch_dim"], rows[0]["relative_error"]
    ds = np.array([r["sketch_dim"] for r in rows])
    left.loglog(ds, e0 * np.sqrt(d0 / ds), "k:", label=r"$\propto 1/\sqrt{d}$")
    left.set(xlabel="sketch dimension d", ylabel="relative error of the unknowns",
             title="Error against d")
    right.set(xlabel="coordinates kept d'",
              title=f"Erasure (d = {by_kept[0]['sketch_dim']})")
    for axis, rows in ((left, by_d), (right, by_kept)):
        ticks = sorted({r["kept" if axis is right else "sketch_dim"] for r in rows})
        axis.set_xscale("log", base=2)
        axis.set_xticks(ticks, [str(t) for t in ticks])
        axis.minorticks_off()
        axis.grid(True, alpha=0.3)
        axis.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-records", type=int, default=400)
    parser.add_argument("--dims", type=int, nargs="+",
                        default=[256, 512, 1024, 2048, 4096])
    parser.add_argument("--erasure-dim", type=int, default=2048)
    parser.add_argument("--plot", action="store_true")
    parser.add_argument("--busy-core", action="store_true",
                        help="also time with another process spinning on one core")
    parser.add_argument("--out", default=str(HERE / "results" / "bench_decode.json"))
    args = parser.parse_args()
    busy.ENABLED = args.busy_core
    by_d, by_kept, omp = run(args.n_records, args.dims, args.erasure_dim)

    print(f"{args.n_records} records, {by_d[0]['n_unknowns']} unknowns; "
          f"sketches/s is warm: a second transform, after one that factorizes")
    print(f"{'method':>9} {'d':>5} {'sketches/s':>11} {'busy s/s':>11} "
          f"{'rel. error':>11}")
    for r in by_d:
        busy_rate = r["sketches_per_s_busy_core"]
        busy_text = "-" if busy_rate is None else f"{busy_rate:,.0f}"
        print(f"{r['method']:>9} {r['sketch_dim']:>5} {r['sketches_per_s']:>11,.0f} "
              f"{busy_text:>11} {r['relative_error']:>11.2e}")
    print(f"\n{'method':>9} {'d':>5} {'kept':>5} {'rel. error':>11}")
    for r in by_kept:
        print(f"{r['method']:>9} {r['sketch_dim']:>5} {r['kept']:>5} "
              f"{r['relative_error']:>11.2e}")
    for r in omp:
        print(f"\nsparse decoding: {r['n_sketches']} sketches, d={r['sketch_dim']}, "
              f"{r['n_unknowns']} unknowns, {r['sketches_per_s']:,.0f} sketches/s"
              + ("" if r["sketches_per_s_busy_core"] is None else
                 f" ({r['sketches_per_s_busy_core']:,.0f} with a busy core)")
              + f", {r['explained']:.1%} explained, relative error "
              f"{r['relative_error']:.2e}; group pursuit alone "
              f"{r['pursuit_sketches_per_s']:,.0f} sketches/s, "
              f"{r['pursuit_explained']:.1%} explained")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"by_dim": by_d, "by_kept": by_kept,
                               "group_omp": omp}, indent=2))
    print(f"wrote {out}")
    if args.plot:
        image = HERE.parent / "docs" / "images" / "decode_error.png"
        plot(by_d, by_kept, image)
        print(f"wrote {image}")


if __name__ == "__main__":
    main()
