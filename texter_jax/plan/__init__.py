"""Planning accelerator runs: compile ``explain``'s programs for a target (a TPU topology,
through libtpu on any machine, or the running backend) and read memory per device, the
compiler's cost model and a roofline estimate from published peaks."""

from texter_jax.plan.auto import BatchChoice, BatchTooLarge, auto_batch
from texter_jax.plan.chips import CHIPS, Chip, chip_of_kind
from texter_jax.plan.estimate import (
                                      Cost,
                                      DoesNotFit,
                                      ExplainPlan,
                                      largest_batch,
                                      memory_facts,
                                      plan_explain,
)
from texter_jax.plan.programs import PROGRAMS, CompiledFacts, ExplainSpec, facts, lower_explain
from texter_jax.plan.targets import (
                                      Target,
                                      TargetError,
                                      local_target,
                                      quiet_libtpu,
                                      target,
                                      tpu_target,
)

__all__ = [
    "BatchChoice", "BatchTooLarge", "CHIPS", "auto_batch", "PROGRAMS", "Chip", "CompiledFacts",
    "Cost", "DoesNotFit", "ExplainPlan", "ExplainSpec", "Target", "TargetError", "chip_of_kind",
    "facts", "largest_batch", "local_target", "lower_explain", "memory_facts", "plan_explain",
    "quiet_libtpu", "target", "tpu_target",
]
