"""How a cell runs over a whole sequence."""

from .base import Backend, RunSpec
from .registry import available, register, select

__all__ = ["Backend", "RunSpec", "available", "register", "select"]
