"""What the plugin's methods share: their two input contracts and the task-arithmetic wiring of those with a base.

Each method stays a plain ``@merge_method`` kernel (mergekit reads its parameters from the kernel's signature);
:func:`method` fills in the contract, and :func:`task_arithmetic` is the tensor-by-tensor body of every method
that works on task vectors ``D_i = W_i - W0``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from mergekit.merge_methods.base import BasePolicy, InputContract, OptionalTensorPolicy, TensorGroup
from mergekit.merge_methods.easy_define import merge_method

from mergekit_clip.plugin.methods.linalg import MatrixPolicy, back_to, is_head, stacked, treat_as_matrix

# with_base: a base and at least one other input; a tensor only the base has passes through.
# without_base: the ingredients alone (a base is refused); a tensor only one input has passes through.
_CONTRACTS = {
    True: (
        InputContract(base=BasePolicy.REQUIRED, min_inputs=2, min_non_base=1),
        OptionalTensorPolicy.PASSTHROUGH_BASE_SINGLETON,
    ),
    False: (InputContract(base=BasePolicy.FORBIDDEN, min_inputs=2), OptionalTensorPolicy.PASSTHROUGH_SINGLETON),
}


def method(name: str, pretty_name: str, reference_url: str, *, with_base: bool):
    """``@merge_method`` with the contract of a method that needs a base (``with_base``) or refuses one."""
    contract, optional = _CONTRACTS[with_base]
    decorate = merge_method(
        name=name,
        pretty_name=pretty_name,
        reference_url=reference_url,
        contract=contract,
        optional_tensor_policy=optional,
    )

    def define(kernel: Callable):
        from mergekit_clip.plugin.methods import register_pending

        defined = decorate(kernel)
        register_pending(defined)  # registered now if the plugin met this module mid-import
        return defined

    return define


def task_arithmetic(
    group: TensorGroup,
    alpha: float,
    matrix_update: Callable[[torch.Tensor], torch.Tensor],
    *,
    rank_per_task: bool = False,
    average_heads: bool = False,
    matrix_policy: MatrixPolicy = "layers",
) -> torch.Tensor:
    """``W0 + alpha * update``: ``matrix_update(task vectors (T, m, n))`` for a matrix tensor, the mean task
    vector for every other one.

    ``rank_per_task``: a matrix needs rank >= T to count as one (TSV-M gives each task its own directions);
    ``average_heads``: heads and adapters become the plain average of the ingredients (``alpha`` not applied);
    ``matrix_policy``: which 2-D tensors count as matrices (see :data:`.linalg.MatrixPolicy`).
    """
    base, tasks = stacked(group)
    name = group.metadata.name
    if treat_as_matrix(name, base, tasks.shape[0] if rank_per_task else 1, matrix_policy):
        update = matrix_update(tasks)
    else:
        update = tasks.mean(dim=0)
    scale = 1.0 if average_heads and is_head(name) else alpha
    return back_to(base + scale * update, group)


def ingredients(group: TensorGroup) -> list[torch.Tensor]:
    """Every input's tensor in float32 (the methods without a base merge the weights themselves)."""
    return [entry.tensor.to(torch.float32) for entry in group.entries]
