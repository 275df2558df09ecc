"""deepreshape: design, count, train, ReLU-optimize and privately run networks for
private inference (PI), following DeepReShape (Jha & Reagen, ICLR 2023 submission).

Python API (the CLI is a thin layer over these)::

    import deepreshape as dr
    spec = dr.parse("hrn-5x7x2x", dataset="cifar100")   # NetSpec: a network as data
    counts = dr.count(spec)                               # exact ReLUs / MACs / params
    model = dr.build(spec)                                # a plain torch.nn.Module
    sols = dr.design((3, 2, 4, 1))                        # DeepReShape solver
"""

from __future__ import annotations

from deepreshape.count import Counts, count, count_module
from deepreshape.errors import DeepReshapeError, UsageError
from deepreshape.lazy import lazy_exports
from deepreshape.spec import NetSpec
from deepreshape.zoo import list_models, parse

__version__ = "0.1.0"

__all__ = [
    "Counts", "DeepReshapeError", "NetSpec", "UsageError", "build", "count", "count_module",
    "create_model", "design", "list_models", "load_run", "parse", "Recipe", "train",
]

# Heavier parts (torch) are imported on first use so `import deepreshape` (and with it
# `deepreshape count`) stays fast.
_LAZY = {"build": "deepreshape.build", "create_model": "deepreshape.build",
         "design": "deepreshape.design.solver", "train": "deepreshape.training",
         "Recipe": "deepreshape.training",
         "load_run": "deepreshape.rundir.run"}


lazy_exports(__name__, _LAZY)
