from workbench.sim.continuous_engine import POLICY_SLA
from workbench.sim.schedulers import ContinuousSpec, Scheduler, register


@register("continuous_sla")
class ContinuousSla(Scheduler):
    """Pang, Li & Wang (arXiv 2503.05248) on continuous batching: vLLM's FCFS admission, with the
    running batch capped at ``min(b_mem, b_sla)`` from Algorithm 1 (memory) and Algorithm 2 (SLA on
    the decode time per output token, target ``sla_budget_fraction * tpot_sla_s``), both clamped to
    ``[N_decode, max_num_seqs]``; Algorithm 2 updates after every decode step (rule 11 in
    :mod:`workbench.sim.continuous_engine`)."""

    engine = "continuous"

    def continuous_spec(self, cfg) -> ContinuousSpec:
        return ContinuousSpec(uses_bins=False, policy=POLICY_SLA)
