import numpy as np

from sksketch import RecursiveSketcher
from sksketch._paths import PathBlocks


def _blocks(wrapper="half_identity"):
    record = {"objects": [
        {"id": 0, "module": "top", "attributes": [1.0, 2.0], "inputs": [1]},
        {"id": 1, "module": "mid", "attributes": [0.5], "inputs": [2]},
        {"id": 2, "module": "low", "attributes": [1.0, 0.0, 3.0]}]}
    sketcher = RecursiveSketcher(32, wrapper=wrapper, random_state=0).fit([record])
    matrices = sketcher._matrices()
    return PathBlocks(matrices, sketcher.modules_), matrices


def test_chain_is_the_product_of_the_matrices():
    blocks, m = _blocks()
    d = m.sketch_dim

    def wrap(module):
        return 0.5 * (np.eye(d) + m.wrapper_matrix(module))

    chain = (wrap("top") @ m.wiring("top") @ wrap("mid") @ m.wiring("mid")
             @ wrap("low"))
    path = ("top", "mid", "low")
    np.testing.assert_allclose(blocks.chain(path, None).T,
                               chain @ m.subspace("low", 3), atol=1e-12)
    np.testing.assert_allclose(blocks.chain(path, 7).T,
                               chain @ m.node("low", 7, 3), atol=1e-12)


def test_rows_combine_presence_and_slot_blocks():
    blocks, m = _blocks(wrapper="none")
    path = ("top", "mid")
    chain = m.wiring("top")
    presence = blocks.rows(path, None)
    slot = blocks.rows(path, 2)
    assert presence.shape == (1, 32) and slot.shape == (1, 32)
    np.testing.assert_allclose(presence.T, chain @ m.subspace("mid", 1)[:, 1:],
                               atol=1e-12)
    np.testing.assert_allclose(
        slot.T, chain @ (m.subspace("mid", 1)[:, :1] + m.node("mid", 2, 1)),
        atol=1e-12)


def test_blocks_do_not_depend_on_what_was_cached():
    blocks, m = _blocks()
    keys = [(("top", "mid", "low"), s) for s in (None, 0, 1, "x")]
    blocks.warm(keys)
    first = [blocks.chain(*k).copy() for k in keys]
    m.clear()
    blocks.warm(keys[::-1])  # another order, a cold cache
    for key, expected in zip(keys, first):
        np.testing.assert_array_equal(blocks.chain(*key), expected)


def test_each_module_matrix_drawn_once_per_transform_when_cache_is_small(
        monkeypatch):
    import sksketch._random as random_module
    from sksketch import make_activation_records

    records, _ = make_activation_records(60, n_modules=8, depth=4, random_state=0)
    d = 128
    # Room for one module's wiring and wrapper and a few blocks, not more.
    pair_mib = 2 * d * d * 8 / 2**20
    sketcher = RecursiveSketcher(d, engine="unrolled", cache_size=1.2 * pair_mib,
                                 random_state=0).fit(records)
    draws = []
    original = random_module.draw_matrix

    def counting(seed, module, role, shape, **kwargs):
        draws.append((module, role))
        return original(seed, module, role, shape, **kwargs)

    monkeypatch.setattr(random_module, "draw_matrix", counting)
    first = sketcher.transform(records)
    square = [key for key in draws if key[1] in ("C", "R")]
    assert len(square) == len(set(square))
    # A repeated transform costs no more than the first, and gives the same.
    draws.clear()
    np.testing.assert_array_equal(sketcher.transform(records), first)
    again = [key for key in draws if key[1] in ("C", "R")]
    assert len(again) == len(set(again)) and len(again) <= len(square)
