"""How a cell runs over a whole sequence."""

from .base import Backend, RunSpec
from .extension import set_recurrence_threads, set_step_gemm, set_target_cpu
from .registry import available, register, select
from . import fused, native, scan  # noqa: F401  (register the backends; nothing compiles until first use)

__all__ = ["Backend", "RunSpec", "available", "register", "select", "set_recurrence_threads", "set_step_gemm",
           "set_target_cpu"]
