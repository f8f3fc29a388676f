"""Attention kernels for Parrot (imported as ``parrot_kernels``).

Shared-prefix attention: requests that share a cached prefix attend to it together (one GEMM
over the whole group), to their own suffix separately, and the two parts are merged by their
log-sum-exp. The Triton (GPU) path lives in ``parrot_kernels.triton_shared_prefix`` and is not
imported here, so this package needs only torch.
"""

from .grouping import BatchPlan, PrefixGroup, PrefixRef, plan_shared_prefix
from .inputs import pad_ragged
from .merge import merge_attention, merge_partials
from .reference import reference_attention
from .shared_prefix import shared_prefix_decode, shared_prefix_prefill

__all__ = [
    "BatchPlan",
    "PrefixGroup",
    "PrefixRef",
    "merge_attention",
    "merge_partials",
    "pad_ragged",
    "plan_shared_prefix",
    "reference_attention",
    "shared_prefix_decode",
    "shared_prefix_prefill",
]
