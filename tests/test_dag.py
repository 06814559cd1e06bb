import numpy as np

from sksketch._dag import check_acyclic, children_csr, default_slot_ordinals, expand


def test_check_acyclic_finds_an_object_on_the_cycle():
    # 0 -> 1 -> 2 -> 1 (cycle 1-2), 2 -> 3 (downstream of the cycle)
    parent, child = np.array([0, 1, 2, 2]), np.array([1, 2, 1, 3])
    assert check_acyclic(4, parent, child) in (1, 2)
    assert check_acyclic(4, np.array([0, 1, 2]), np.array([1, 2, 3])) == -1
    assert check_acyclic(0, np.array([], np.intp), np.array([], np.intp)) == -1


def test_expand_lists_children_in_order():
    parent, child = np.array([2, 0, 0, 1]), np.array([3, 2, 1, 3])
    indptr, indices = children_csr(4, parent, child)
    source, kids = expand(indptr, indices, np.array([0, 2, 3]))
    assert source.tolist() == [0, 0, 1] and kids.tolist() == [2, 1, 3]


def test_default_slot_ordinals():
    # object 0 consumes 1, 2, 3 (modules a, b, a); object 4 also consumes 3
    module = np.array([0, 1, 2, 1, 0, 1])
    parent, child = np.array([0, 0, 0, 4]), np.array([1, 2, 3, 3])
    ordinals = default_slot_ordinals(6, module, parent, child)
    # 1 and 3 are the 0th and 1st module-1 inputs of 0; 2 is alone in its
    # module; unconsumed 0, 4 (module 0) rank 0, 1; unconsumed 5 ranks 0.
    assert ordinals.tolist() == [0, 0, 0, 1, 1, 0]


def test_topological_levels_peel_leaves_first_in_rounds():
    from sksketch._dag import topological_levels

    # 0 consumes 1 and 2; 1 consumes 2; 3 alone. Children first: edges
    # child -> parent.
    parent, child = np.array([0, 0, 1]), np.array([1, 2, 2])
    levels, waiting = topological_levels(4, child, parent)
    assert [level.tolist() for level in levels] == [[2, 3], [1], [0]]
    assert not waiting.any()
    # A long chain costs one small step per object, never a pass over all.
    n = 5000
    levels, _ = topological_levels(n, np.arange(1, n), np.arange(n - 1))
    assert len(levels) == n and all(level.size == 1 for level in levels)
