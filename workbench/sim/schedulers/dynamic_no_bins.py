from workbench.sim.schedulers import BATCH_DYNAMIC, EngineSpec, Scheduler, register


@register("dynamic_no_bins")
class DynamicNoBins(Scheduler):
    """One FIFO queue; batch size min(b_mem, b_sla) from the memory and SLA controllers
    (see :mod:`workbench.sim.static_engine`); with ``spread_idle``, simultaneous arrivals are shared
    out over the idle GPUs."""

    def engine_spec(self, cfg) -> EngineSpec:
        return EngineSpec(uses_bins=False, batch_rule=BATCH_DYNAMIC, bin_policy=0)
