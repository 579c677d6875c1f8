"""LLM Serving Workbench: batching schedulers under BurstGPT-like traffic.

The public API::

    import workbench as wb
    trace = wb.load_trace()                        # synthetic BurstGPT-like default
    res = wb.simulate(trace, wb.SimConfig(scheduler="multi_bin_dynamic", num_gpus=4))
    res.summary, res.requests
"""

from workbench import hardware
from workbench.study.fidelity.calibration import FitReport, calibrate, compare_to_measured
from workbench.study.runs.capacity import CapacityError, CapacityResult, capacity
from workbench.study.runs.fleet import FleetPlan, plan_fleet
from workbench.study.runs.placement import best_placement
from workbench.sim.bins import BinningWarning, equal_mass_edges
from workbench.sim.config import SimConfig
from workbench.sim.latency import LatencyModel
from workbench.sim.predictors import PREDICTORS, predict_output_tokens
from workbench.sim.schedulers import SCHEDULERS, register
from workbench.sim.simulate import SimResult, SimulationError, SlaScaleWarning, simulate
from workbench.sim.steptime import StepTimeModel
from workbench.traces.serving_log import ServingLog, load_serving_log
from workbench.traces.rate_profile import RateProfile, replay_over_profile
from workbench.traces.synthetic import synthetic_trace
from workbench.traces.trace import PrefixHashes, Trace, TraceFormatError, TraceSizeWarning, TraceUnitWarning, load_trace

__all__ = [
    "BinningWarning", "CapacityError", "CapacityResult", "capacity", "LatencyModel", "PREDICTORS", "SCHEDULERS", "SimConfig", "SimResult",
    "SimulationError", "SlaScaleWarning", "StepTimeModel", "PrefixHashes", "Trace", "TraceFormatError", "TraceSizeWarning", "TraceUnitWarning", "equal_mass_edges", "load_trace",
    "predict_output_tokens", "register", "simulate", "synthetic_trace",
    "FitReport", "ServingLog", "calibrate", "compare_to_measured", "load_serving_log",
    "best_placement", "hardware", "FleetPlan", "plan_fleet", "RateProfile", "replay_over_profile",
]
