"""BLAS threads for small matrix products.

OpenBLAS splits even small products across its threads, which then spin
waiting for each other; when another process holds one of the cores, a
product of a few rows becomes 10-100 times slower (measured on 2 cores: a
20 x 256 by 256 x 256 product, 0.2 ms on one thread, 23 ms on two under
load). Loops of small products therefore run on one thread, as
scikit-learn's KMeans does; large products keep every thread.
"""

from contextlib import nullcontext
from functools import lru_cache

# Products below this many floating-point operations run on one BLAS thread
# (about a millisecond at a core's rate: threads cannot pay off below it).
SMALL_PRODUCT_FLOPS = 2**25


@lru_cache(maxsize=1)
def _controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def one_blas_thread():
    """A context running BLAS on one thread, around loops of small products.

    Entering it costs a few microseconds (the controller is built once).
    """
    return _controller().limit(limits=1, user_api="blas")


def blas_threads_for(flops):
    """One BLAS thread when a product of ``flops`` is small, else all of them."""
    if flops >= SMALL_PRODUCT_FLOPS:
        return nullcontext()
    return one_blas_thread()
