"""LLM Serving Workbench: batching schedulers under BurstGPT-like traffic.

The public API::

    import workbench as wb
    trace = wb.load_trace()                        # synthetic BurstGPT-like default
    res = wb.simulate(trace, wb.SimConfig(scheduler="multi_bin_dynamic", num_gpus=4))
    res.summary, res.requests
"""

from .capacity import CapacityError, CapacityResult, capacity
from .bins import BinningWarning, equal_mass_edges
from .config import SimConfig
from .latency import LatencyModel
from .predictors import PREDICTORS, predict_output_tokens
from .schedulers import SCHEDULERS, register
from .simulate import SimResult, SimulationError, simulate
from .synthetic import synthetic_trace
from .trace import Trace, TraceFormatError, TraceSizeWarning, load_trace

__all__ = [
    "BinningWarning", "CapacityError", "CapacityResult", "capacity", "LatencyModel", "PREDICTORS", "SCHEDULERS", "SimConfig", "SimResult",
    "SimulationError", "Trace", "TraceFormatError", "TraceSizeWarning", "equal_mass_edges", "load_trace",
    "predict_output_tokens", "register", "simulate", "synthetic_trace",
]
