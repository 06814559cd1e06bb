"""Network recovery: blocks and wiring against samples, d and paths per record.

Sketches only (``fit(S)``), on records that each activate one root-to-leaf
chain of a 3-layer, 8-module network:

- block cosine (mean principal-angle cosine of every true path block with its
  learned block), path-tree F1 and fit time against the number of sketches
  and d, and the first sample count where F1 reaches 1.0;
- peers on the same sketches: scikit-learn's MiniBatchDictionaryLearning and
  SPAMS (``spams-bin``, skipped where it does not install), scored by the
  same block cosine, taking for each block the atoms closest to it;
- how success falls as records activate more chains per sketch.

With records (``fit(S, records)``, dense layers, edges dropped): block cosine
and wiring F1 against the number of pairs.

Prints tables, writes ``benchmarks/results/bench_network_recovery.json`` and,
with ``--plot``, ``docs/images/network_recovery.png``. With ``--busy-core``,
every fit is also timed while another process keeps one core busy (column
``busy s``).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.decomposition import MiniBatchDictionaryLearning

from sksketch import (
    ActivationRecord,
    NetworkRecoveryDictionaryLearner,
    RecursiveSketcher,
    make_activation_records,
    score_network_recovery,
)
from sksketch._batch import as_batch
from sksketch._paths import PathBlocks
from sksketch._unroll import ColumnLayout, unroll

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import busy_core as busy  # noqa: E402


def true_paths(records):
    batch = as_batch(records)
    return ColumnLayout.from_unrolled(batch, unroll(batch)).slots_by_path()


def cofiring(records):
    """Pairs of true paths that fire in exactly the same records (a path and
    its only child): no sketch tells them apart, so at most one block is
    learned for the two (see the docs, What cannot be identified)."""
    from sksketch._unroll import coefficients

    batch = as_batch(records)
    unrolled = unroll(batch)
    layout = ColumnLayout.from_unrolled(batch, unrolled)
    z = coefficients(batch, unrolled, layout)
    supports = {p: np.abs(z[:, layout.columns((p, None))]).sum(axis=1) > 0
                for p in layout.slots_by_path()}
    return sum(1 for p in supports for q in supports
               if len(q) == len(p) + 1 and q[:-1] == p
               and np.array_equal(supports[p], supports[q]))


def chain_data(n, sketch_dim, n_chains=1, seed=1, n_modules=8):
    """Records of ``n_chains`` chains each, or trees (``n_chains="tree"``:
    one root, each object consuming a random subset of the (up to 3) child
    modules it is wired to)."""
    tree = n_chains == "tree"
    records, _ = make_activation_records(
        n, n_modules=n_modules, depth=3, fan_in=3 if tree else 2,
        n_roots=1 if tree else n_chains,
        n_children=1, branching="subset" if tree else "one",
        shared_fraction=0.0, weights="random", class_sep=0.0, noise=1.0,
        n_classes=5, random_state=seed)
    sketcher = RecursiveSketcher(sketch_dim, random_state=0).fit(records)
    return records, sketcher, sketcher.transform(records)


def atom_block_cosine(atoms, sketcher, paths):
    """Block cosine of a generic dictionary: per true block of width w, the
    span of the w atoms that lie most inside it; also the number of atoms
    with 90% of their norm inside some block."""
    blocks = PathBlocks(sketcher._matrices(), sketcher.modules_)
    atoms = atoms / np.maximum(np.linalg.norm(atoms, axis=1, keepdims=True), 1e-300)
    cosines, inside = [], np.zeros(atoms.shape[0], dtype=bool)
    for path, slots in paths.items():
        block = np.vstack([blocks.rows(path, None)] + [blocks.rows(path, s)
                                                         for s in slots]).T
        basis = np.linalg.qr(block)[0]
        share = np.linalg.norm(atoms @ basis, axis=1)
        inside |= share >= 0.9
        chosen = atoms[np.argsort(share)[-basis.shape[1]:]].T
        q = np.linalg.qr(chosen)[0]
        cosines.append(np.linalg.svd(q.T @ basis, compute_uv=False).mean())
    return float(np.mean(cosines)), int(inside.sum())


def timed(function, repeat=1):
    """Result and best wall time of ``repeat`` calls.

    With ``--busy-core`` the time is a pair: idle, and with another process
    spinning on one core.
    """
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    if not busy.ENABLED:
        return result, best
    busiest = np.inf
    with busy.busy_core(True):
        for _ in range(repeat):
            start = time.perf_counter()
            function()
            busiest = min(busiest, time.perf_counter() - start)
    return result, (best, busiest)


def fit_times(value):
    """``timed``'s time as row fields: ``fit_s`` and ``fit_s_busy_core``."""
    idle, busy_s = value if isinstance(value, tuple) else (value, None)
    return {"fit_s": idle, "fit_s_busy_core": busy_s}


def show(row):
    """A row's fit time as a table cell: idle, and busy-core if measured."""
    busy_s = row.get("fit_s_busy_core")
    return f"{row['fit_s']:>6.2f}" + ("" if busy_s is None else f" {busy_s:>6.2f}")


def sketches_only(sample_counts, dims):
    rows = []
    for sketch_dim in dims:
        records, sketcher, sketches = chain_data(max(sample_counts), sketch_dim)
        for n in sample_counts:
            paths = true_paths(records[:n])
            learner, seconds = timed(lambda s=sketches[:n]: (
                NetworkRecoveryDictionaryLearner(random_state=0).fit(s)))
            score = score_network_recovery(learner, sketcher, paths)
            rows.append({"sketch_dim": sketch_dim, "n_sketches": n,
                         "n_paths": len(paths), "block_cosine": score["block_cosine"],
                         "f1": score["f1"], **fit_times(seconds)})
    return rows


def peers(n, sketch_dim):
    records, sketcher, sketches = chain_data(n, sketch_dim)
    paths = true_paths(records)
    n_atoms = sum(1 + 4 * len(s) for s in paths.values())  # the blocks' columns
    results = {}
    # Best of 3 for sksketch and SPAMS, whose times are compared.
    learner, seconds = timed(lambda: NetworkRecoveryDictionaryLearner(
        random_state=0).fit(sketches), repeat=3)
    cosine, inside = atom_block_cosine(learner.components_, sketcher, paths)
    results["sksketch"] = {"block_cosine": cosine, "atoms_inside_a_block": inside,
                           **fit_times(seconds),
                           "n_atoms": learner.components_.shape[0]}
    for name, n_components in (("MiniBatchDictionaryLearning", n_atoms),
                               ("MiniBatchDictionaryLearning x2", 2 * n_atoms)):
        model, seconds = timed(lambda k=n_components: MiniBatchDictionaryLearning(
            k, alpha=0.1, batch_size=256, max_iter=10, random_state=0).fit(sketches))
        cosine, inside = atom_block_cosine(model.components_, sketcher, paths)
        results[name] = {"block_cosine": cosine, "atoms_inside_a_block": inside,
                         **fit_times(seconds), "n_atoms": n_components}
    spams_fit = fit_spams(sketches, n_atoms, sketcher, paths, repeat=3)
    results["SPAMS"] = spams_fit and {**spams_fit, "n_atoms": n_atoms}
    return results


def fit_spams(sketches, n_atoms, sketcher, paths, repeat=1):
    """SPAMS's trainDL on the sketches: block cosine, atoms inside, times.

    None where SPAMS does not install (the ``bench`` extra's spams-bin).
    """
    try:
        import spams
    except ImportError:
        return None
    data = np.asfortranarray(sketches.T)
    atoms, seconds = timed(lambda: spams.trainDL(
        data, K=n_atoms, lambda1=0.1, iter=200, batchsize=256, verbose=False),
        repeat=repeat)
    cosine, inside = atom_block_cosine(np.asarray(atoms).T, sketcher, paths)
    return {"block_cosine": cosine, "atoms_inside_a_block": inside,
            **fit_times(seconds)}


def more_paths(sample_counts, sketch_dim, kinds=(1, 2, 3, 4, "tree"), seeds=(1,),
               mbdl_max=5000):
    """Every kind of record (chains per record, or trees), against the
    number of sketches and for each seed of the records, with the peers'
    block cosine and time on the same sketches (SPAMS at every count,
    MiniBatchDictionaryLearning up to ``mbdl_max`` sketches: it is slow)."""
    import warnings

    rows = []
    for kind in kinds:
        for seed in seeds:
            records, sketcher, sketches = chain_data(max(sample_counts), sketch_dim,
                                                     kind, seed=seed)
            for n in sample_counts:
                paths = true_paths(records[:n])
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    learner, seconds = timed(lambda s=sketches[:n]: (
                        NetworkRecoveryDictionaryLearner(random_state=0).fit(s)))
                score = score_network_recovery(learner, sketcher, paths)
                leaves = np.mean([sum(1 for o in r.objects if not o.inputs)
                                  for r in records[:n]])
                row = {"sketch_dim": sketch_dim, "chains_per_record": kind,
                       "seed": seed, "n_sketches": n, "n_paths": len(paths),
                       "leaves_per_record": float(leaves),
                       "cofiring_pairs": cofiring(records[:n]),
                       "block_cosine": score["block_cosine"], "f1": score["f1"],
                       "warned": bool(caught), **fit_times(seconds),
                       "peers": peer_cosines(sketches[:n], sketcher, paths,
                                             mbdl=n <= mbdl_max)}
                rows.append(row)
                print(format_row(row), flush=True)
    return rows


def format_row(r):
    """One row of the several-paths table, peers' cosine / time appended."""
    peers_text = ""
    for name in ("MiniBatchDictionaryLearning", "SPAMS"):
        peer = r.get("peers", {}).get(name)
        peers_text += ("      -      " if peer is None else
                       f" {peer['block_cosine']:.2f}/{peer['fit_s']:>6.1f}")
    return (f"{r['chains_per_record']!s:>7} {r['seed']:>4} {r['n_paths']:>6} "
            f"{r['cofiring_pairs']:>8} {r['leaves_per_record']:>7.2f} "
            f"{r['n_sketches']:>9} "
            f"{r['block_cosine']:>7.3f} {r['f1']:>5.2f} {r['warned']!s:>7} "
            f"{show(r)}{peers_text}")


def peer_cosines(sketches, sketcher, paths, mbdl=True):
    """MiniBatchDictionaryLearning (if ``mbdl``) and SPAMS on the same
    sketches: block cosine (atoms closest to each block) and fit time."""
    n_atoms = sum(1 + 4 * len(s) for s in paths.values())
    out = {}
    if mbdl:
        model, seconds = timed(lambda: MiniBatchDictionaryLearning(
            n_atoms, alpha=0.1, batch_size=256, max_iter=10,
            random_state=0).fit(sketches))
        out["MiniBatchDictionaryLearning"] = {
            "block_cosine": atom_block_cosine(model.components_, sketcher, paths)[0],
            **fit_times(seconds)}
    spams_fit = fit_spams(sketches, n_atoms, sketcher, paths)
    out["SPAMS"] = spams_fit and {key: spams_fit[key] for key in spams_fit
                                  if key != "atoms_inside_a_block"}
    return out


def with_records(pair_counts, sketch_dim=256):
    records, _, network = make_activation_records(
        max(pair_counts), n_modules=12, depth=3, connectivity="dense",
        n_children=(1, 2), weights="random", random_state=0, return_network=True)
    sketcher = RecursiveSketcher(sketch_dim, random_state=0).fit(records)
    sketches = sketcher.transform(records)
    stripped = [ActivationRecord([o._replace(inputs=()) for o in r.objects])
                for r in records]
    layers = [list(layer) for layer in network.layers[::-1]]
    rows = []
    for n in pair_counts:
        edges = {(o.module, r.modules[r.ids.index(c)]) for r in records[:n]
                 for o in r.objects for c in o.inputs}
        learner, seconds = timed(lambda n=n: NetworkRecoveryDictionaryLearner(
            layers=layers).fit(sketches[:n], stripped[:n]))
        score = score_network_recovery(learner, sketcher, true_paths(records[:n]),
                                       edges)
        rows.append({"sketch_dim": sketch_dim, "n_pairs": n,
                     "block_cosine": score["block_cosine"], "f1": score["f1"],
                     **fit_times(seconds)})
    return rows


def plot(crowded, path):
    """F1 and block cosine against the number of sketches, per record kind
    (mean over seeds); the peers' block cosine as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.8))
    kinds = list(dict.fromkeys(r["chains_per_record"] for r in crowded))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for kind, color in zip(kinds, colors):
        mine = [r for r in crowded if r["chains_per_record"] == kind]
        label = "trees" if kind == "tree" else f"{kind} chain{'s' * (kind != 1)}"
        n = sorted({r["n_sketches"] for r in mine})
        at = [[r for r in mine if r["n_sketches"] == k] for k in n]
        left.semilogx(n, [np.mean([r["f1"] for r in rs]) for rs in at], marker="o",
                      color=color, label=label)
        right.semilogx(n, [np.mean([r["block_cosine"] for r in rs]) for rs in at],
                       marker="o", color=color, label=f"sksketch, {label}")
        for name, marker in (("MiniBatchDictionaryLearning", "x"), ("SPAMS", "+")):
            points = [(k, np.mean([r["peers"][name]["block_cosine"] for r in rs]))
                      for k, rs in zip(n, at)
                      if all(r.get("peers", {}).get(name) for r in rs)]
            if points:
                right.plot(*zip(*points), marker=marker, color=color,
                           linestyle="none",
                           label=name if kind == kinds[0] else None)
    left.set(xlabel="sketches", ylabel="path-tree F1",
             title="Sketches only: wiring (d = 256)", ylim=(-0.05, 1.05))
    right.set(xlabel="sketches", ylabel="block cosine",
              title="Sketches only: blocks (x, +: peers)", ylim=(0, 1.05))
    counts = sorted({r["n_sketches"] for r in crowded})
    for axis in (left, right):
        axis.set_xticks(counts, [f"{k:,}" for k in counts])
        axis.minorticks_off()
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, nargs="+",
                        default=[250, 500, 1000, 2000, 5000, 10000, 20000])
    parser.add_argument("--dims", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--crowded-samples", type=int, nargs="+",
                        default=[2000, 5000, 20000, 50000])
    parser.add_argument("--kinds", nargs="+", default=["1", "2", "3", "4", "tree"],
                        help="chains per record (1-4) or 'tree', for the "
                             "several-paths table")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2],
                        help="record seeds of the several-paths table")
    parser.add_argument("--mbdl-max", type=int, default=5000,
                        help="largest sample MiniBatchDictionaryLearning runs on")
    parser.add_argument("--skip-chains", action="store_true",
                        help="skip the one-chain tables (sample counts, d, peers)")
    parser.add_argument("--skip-records", action="store_true",
                        help="skip the table with records")
    parser.add_argument("--plot", action="store_true")
    parser.add_argument("--busy-core", action="store_true",
                        help="also time with another process spinning on one core")
    parser.add_argument("--out", default=str(HERE / "results"
                                             / "bench_network_recovery.json"))
    args = parser.parse_args()
    busy.ENABLED = args.busy_core
    busy_header = " busy s" if args.busy_core else ""

    rows, first, peer_results, n_peer = [], {}, {}, max(args.samples)
    if not args.skip_chains:
        rows = sketches_only(args.samples, args.dims)
        print("Sketches only (chain records, 8 modules):")
        print(f"{'d':>5} {'sketches':>9} {'paths':>6} {'cosine':>7} {'F1':>5} "
              f"{'fit s':>6}{busy_header}")
        for r in rows:
            print(f"{r['sketch_dim']:>5} {r['n_sketches']:>9} {r['n_paths']:>6} "
                  f"{r['block_cosine']:>7.3f} {r['f1']:>5.2f} {show(r)}")
        first = {}
        for r in rows:
            if r["f1"] == 1.0 and r["sketch_dim"] not in first:
                first[r["sketch_dim"]] = r["n_sketches"]
        print(f"first sample count with F1 = 1.0: {first}")

        n_peer = max(args.samples)
        peer_results = peers(n_peer, args.dims[0])
        print(f"\nPeers on the same {n_peer} sketches (d = {args.dims[0]}):")
        for name, result in peer_results.items():
            if result is None:
                print(f"  {name}: not installed")
            else:
                print(f"  {name:<31} block cosine {result['block_cosine']:.3f}, atoms "
                      f"inside a block {result['atoms_inside_a_block']:>3} of "
                      f"{result['n_atoms']}, fit {show(result)} s")
        spams_result = peer_results.get("SPAMS")
        if spams_result:
            print(f"  time ratio sksketch / SPAMS: "
                  f"{peer_results['sksketch']['fit_s'] / spams_result['fit_s']:.2f}")

    print(f"\nSeveral chains per record, and trees (d = {args.dims[0]}; peers: "
          f"block cosine / fit s):")
    print(f"{'chains':>7} {'seed':>4} {'paths':>6} {'cofiring':>8} {'leaves':>7} "
          f"{'sketches':>9} "
          f"{'cosine':>7} {'F1':>5} {'warned':>7} {'fit s':>6}{busy_header}"
          f" {'MBDL':>12} {'SPAMS':>12}")
    kinds = [k if k == "tree" else int(k) for k in args.kinds]
    crowded = more_paths(args.crowded_samples, args.dims[0], kinds, args.seeds,
                         args.mbdl_max)

    records_rows = [] if args.skip_records else with_records([100, 200, 500, 1000,
                                                               2000])
    print("\nWith records (dense layers, 12 modules, edges dropped, d = 256):")
    print(f"{'pairs':>6} {'cosine':>7} {'F1':>5} {'fit s':>6}{busy_header}")
    for r in records_rows:
        print(f"{r['n_pairs']:>6} {r['block_cosine']:>7.3f} {r['f1']:>5.2f} "
              f"{show(r)}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = {"sketches_only": rows, "first_f1_1": first, "peers": peer_results,
               "more_paths": crowded, "with_records": records_rows}
    # Tables skipped this run keep their previous results.
    previous = json.loads(out.read_text()) if out.exists() else {}
    if args.skip_chains:
        for key in ("sketches_only", "first_f1_1", "peers"):
            results[key] = previous.get(key, results[key])
    if args.skip_records:
        results["with_records"] = previous.get("with_records", [])
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    if args.plot:
        image = HERE.parent / "docs" / "images" / "network_recovery.png"
        plot(crowded, image)
        print(f"wrote {image}")


if __name__ == "__main__":
    main()
