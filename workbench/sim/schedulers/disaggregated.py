from workbench.sim.schedulers import Scheduler, register


@register("disaggregated")
class Disaggregated(Scheduler):
    """DistServe-style disaggregated serving: prompts are prefilled on prefill instances (FCFS batches under a
    token budget; the first token comes from there), their KV cache moves over a link to a decode instance,
    which decodes with continuous batching (pipeline-parallel when ``decode_pp > 1``).  Rules R1-R12 in
    :mod:`workbench.sim.disagg_engine`; the deployment is the ``prefill_*``, ``decode_*`` and ``kv_link_*``
    fields of the SimConfig."""

    engine = "disaggregated"
