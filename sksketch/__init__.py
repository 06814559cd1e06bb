"""sksketch: recursive sketches of modular networks, as scikit-learn estimators.

The data flows records -> sketch -> recover / statistics -> network recovery.
"""

# records
from ._batch import RecordBatch
from ._datasets import SyntheticNetwork, make_activation_records

# recover / statistics
from ._decode import erase
from ._dimension import suggest_sketch_dim
from ._io import read_batch, read_records, write_records
from ._network import NetworkRecoveryDictionaryLearner, score_network_recovery

# dictionary learning
from ._parquet import iter_parquet, jsonl_to_parquet, read_parquet, write_parquet
from ._records import ActivationObject, ActivationRecord, merge_records
from ._recover import OutOfStructureWarning, SketchAttributeRecoverer

# sketch
from ._sketch import RecursiveSketcher

# storage
from .repository import SketchRepository

__version__ = "0.1.0.dev0"

__all__ = [
    "ActivationObject",
    "ActivationRecord",
    "NetworkRecoveryDictionaryLearner",
    "OutOfStructureWarning",
    "RecordBatch",
    "RecursiveSketcher",
    "SketchAttributeRecoverer",
    "SketchRepository",
    "SyntheticNetwork",
    "erase",
    "iter_parquet",
    "jsonl_to_parquet",
    "make_activation_records",
    "merge_records",
    "read_batch",
    "read_parquet",
    "read_records",
    "score_network_recovery",
    "suggest_sketch_dim",
    "write_parquet",
    "write_records",
]
