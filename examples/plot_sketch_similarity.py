"""
Sketch similarity on a trained network
======================================

The inner product of two sketches estimates what their records share: for
every module path the two records have in common, the product of their
weighted counts plus the inner products of their attributes, each path
weighted by :math:`2^{-|P|}`. Records with no module path in common have
nearly orthogonal sketches: :math:`|\\langle S_1, S_2\\rangle| \\le
3\\|S_1\\|\\|S_2\\|/\\sqrt{d}` for 99.7% of pairs.

We record a small multilayer perceptron trained on scikit-learn's digits
(4 hidden modules of 8 units feed one output module), sketch the records,
and compare (left) the cosine of two images' sketches for the same and for
different digits, and (right) the cosine between a record and a copy of a
record whose modules were renamed, so that no path is shared.
"""

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import normalize

from sksketch import RecursiveSketcher

X, y = load_digits(return_X_y=True)
X = X / 16
net = MLPClassifier((32,), max_iter=1000, random_state=0).fit(X, y)
hidden = np.maximum(X @ net.coefs_[0] + net.intercepts_[0], 0)
proba = net.predict_proba(X)


def record(h, p, prefix=""):
    """One image's activations: 4 hidden modules of 8 units, one output."""
    objects = [{"id": k, "module": f"{prefix}hidden{k}",
                "attributes": h[8 * k:8 * k + 8]} for k in range(4)]
    objects.append({"id": 4, "module": f"{prefix}output", "attributes": p,
                    "inputs": [0, 1, 2, 3]})
    return {"objects": objects}


records = [record(h, p) for h, p in zip(hidden, proba)]
renamed = [record(h, p, prefix="other_") for h, p in zip(hidden, proba)]

# %%
# Same digit, different digit
# ---------------------------
# The cosine of two sketches, over random pairs of images.

rng = np.random.default_rng(0)
i, j = rng.integers(len(records), size=(2, 3000))
keep = i != j
i, j = i[keep], j[keep]
S = normalize(RecursiveSketcher(512, random_state=0).fit_transform(records))
cosine = np.einsum("ij,ij->i", S[i], S[j])
same = y[i] == y[j]
print(f"mean cosine: same digit {cosine[same].mean():.2f}, "
      f"different digits {cosine[~same].mean():.2f}")

# %%
# No path in common
# -----------------
# A record against a renamed record (the same numbers under other module
# names): the expected inner product is 0, and :math:`\sqrt{d}` times the
# cosine stays within 3 for 99.7% of pairs, at every ``d``. The expectation
# is over the random matrices; here every pair shares one sketcher's draw,
# and the records are alike, so the histogram can sit off 0 by a fraction
# of its width.

scaled = {}
for d in (128, 512):
    sketcher = RecursiveSketcher(d, random_state=0).fit(records + renamed)
    A = normalize(sketcher.transform(records))
    B = normalize(sketcher.transform(renamed))
    scaled[d] = np.sqrt(d) * np.einsum("ij,ij->i", A[i], B[j])
    print(f"d = {d}: |sqrt(d) cos| > 3 for {np.mean(abs(scaled[d]) > 3):.2%} "
          f"of pairs, max |cos| = {abs(scaled[d]).max() / np.sqrt(d):.3f}")

fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
bins = np.linspace(0.2, 1, 41)
left.hist(cosine[same], bins, alpha=0.6, density=True, label="same digit")
left.hist(cosine[~same], bins, alpha=0.6, density=True, label="different digits")
left.set(xlabel="cosine of the two sketches (d = 512)", ylabel="density",
         title="Records of one network")
left.legend()
for d, values in scaled.items():
    right.hist(values, np.linspace(-4, 4, 41), histtype="step", density=True,
               label=f"d = {d}")
for bound in (-3, 3):
    right.axvline(bound, color="k", linestyle="--", linewidth=1)
right.set(xlabel=r"$\sqrt{d}\,\cos(S_1, S_2)$", title="No module path in common")
right.legend()
fig.tight_layout()
plt.show()
