from workbench.sim.continuous_engine import POLICY_MULTI_BIN
from workbench.sim.schedulers import ContinuousSpec, Scheduler, register


@register("continuous_multi_bin")
class ContinuousMultiBin(Scheduler):
    """Multi-Bin batching applied to continuous batching: the waiting queue is split into ``k_bins``
    bins by predicted output length (same predictor and equal-mass edges as ``multi_bin_dynamic``);
    admission runs in rounds, each taking the bin whose head request joined first and covering the
    requests waiting in it when the round starts, so the running batch fills with similar-length
    requests and no bin waits more than one round per other bin (rule 12 in
    :mod:`workbench.sim.continuous_engine`)."""

    engine = "continuous"

    def continuous_spec(self, cfg) -> ContinuousSpec:
        return ContinuousSpec(uses_bins=True, policy=POLICY_MULTI_BIN)
