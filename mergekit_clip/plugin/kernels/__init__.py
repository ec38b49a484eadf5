"""Merge-speed kernels the plugin installs into mergekit: bit-identical to stock, faster on CPU.

`fast_sparsify` (O(n) TIES/DARE/breadcrumbs/DELLA selections), `introselect` (exact replay of torch's CPU
introsort along the boundary partitions), `inplace_merge` (task-arithmetic ``merge_group`` with one N-sized stack).
"""
