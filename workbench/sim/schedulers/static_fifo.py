from workbench.sim.schedulers import BATCH_UP_TO, EngineSpec, Scheduler, register


@register("static_fifo")
class StaticFifo(Scheduler):
    """One FIFO queue; an idle GPU takes up to ``batch_size`` waiting requests."""

    def engine_spec(self, cfg) -> EngineSpec:
        return EngineSpec(uses_bins=False, batch_rule=BATCH_UP_TO, bin_policy=0)
