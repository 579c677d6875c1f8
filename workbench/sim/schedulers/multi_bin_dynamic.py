from workbench.sim.schedulers import BATCH_DYNAMIC, BIN_POLICIES, EngineSpec, Scheduler, register


@register("multi_bin_dynamic")
class MultiBinDynamic(Scheduler):
    """K equal-mass bins by predicted output length, FIFO inside a bin, one bin per
    batch, each bin with its own b_mem and b_sla controllers; ``bin_policy`` picks
    the bin an idle GPU serves (oldest head request, round robin, longest queue)."""

    def engine_spec(self, cfg) -> EngineSpec:
        return EngineSpec(uses_bins=True, batch_rule=BATCH_DYNAMIC, bin_policy=BIN_POLICIES[cfg.bin_policy])
