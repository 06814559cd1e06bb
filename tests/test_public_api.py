import inspect

import sksketch


def test_all_lists_exactly_the_public_names():
    # Public submodules (sksketch.torch, .repository, .dask, .cli) become
    # attributes of the package once imported: modules, not re-exported names.
    public = {name for name in dir(sksketch) if not name.startswith("_")
              and not inspect.ismodule(getattr(sksketch, name))}
    assert sorted(sksketch.__all__) == sksketch.__all__
    assert set(sksketch.__all__) == public


def test_estimators_store_parameters_keyword_only():
    for name in sksketch.__all__:
        obj = getattr(sksketch, name)
        if inspect.isclass(obj) and hasattr(obj, "get_params"):
            parameters = list(inspect.signature(obj).parameters.values())[1:]
            assert all(p.kind is p.KEYWORD_ONLY for p in parameters), name
            assert set(obj._parameter_constraints) == set(obj().get_params()), name
