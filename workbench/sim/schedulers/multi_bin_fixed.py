from workbench.sim.schedulers import BATCH_EXACT, FIRST_FORMED, EngineSpec, Scheduler, register


@register("multi_bin_fixed")
class MultiBinFixed(Scheduler):
    """The Multi-Bin Batching paper's model (arXiv 2412.04504, Assumptions 3.1-3.2).

    K bins; a batch is exactly ``batch_size`` requests of one bin; full batches are
    served first formed, first served (ordered by the arrival of the request that
    completed them); a partial batch is served only once every request of its bin
    has arrived, i.e. when no later arrival could fill it.  Adaptation: a batch is
    also cut short if it would exceed the KV-cache capacity.
    """

    def engine_spec(self, cfg) -> EngineSpec:
        return EngineSpec(uses_bins=True, batch_rule=BATCH_EXACT, bin_policy=FIRST_FORMED)
