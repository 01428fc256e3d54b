"""lipinverse: imaging inverse problems with certified 1-Lipschitz learned priors.

Subpackages are imported on demand (``lipinverse.nn``, ``lipinverse.solvers``,
``lipinverse.regularizers``, ``lipinverse.denoisers``, ``lipinverse.training``,
``lipinverse.pretrained``); forward operators live in the sibling package ``operators``.
"""

__version__ = "0.1.0"
