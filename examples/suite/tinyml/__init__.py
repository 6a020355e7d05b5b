"""tinyml: a tiny, dependency-free ML lab codebase."""

from tinyml.tensor import Tensor, ShapeError

__all__ = ["ShapeError", "Tensor", "__version__"]
__version__ = "0.3.0"
