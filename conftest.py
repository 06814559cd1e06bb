"""Collection rules for the doctests of the package (``pytest sksketch``)."""

import importlib.util

# sksketch/torch.py's examples run a PyTorch model: without the torch extra
# there is nothing to run them with.
collect_ignore = ([] if importlib.util.find_spec("torch") else ["sksketch/torch.py"])
