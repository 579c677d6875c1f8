from workbench.sim.continuous_engine import POLICY_FCFS
from workbench.sim.schedulers import ContinuousSpec, Scheduler, register


@register("continuous_fcfs")
class ContinuousFcfs(Scheduler):
    """vLLM's policy: FCFS admission into the running batch under ``max_num_seqs``,
    ``max_num_batched_tokens`` and the free KV blocks; preemption of the most recently
    admitted request when a decode needs a block (rules in :mod:`workbench.sim.continuous_engine`)."""

    engine = "continuous"

    def continuous_spec(self, cfg) -> ContinuousSpec:
        return ContinuousSpec(uses_bins=False, policy=POLICY_FCFS)
