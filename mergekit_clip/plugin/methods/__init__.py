"""Merge methods beyond mergekit's own, registered through mergekit's public
``mergekit.merge_methods.registry.register()`` so stock ``mergekit-yaml`` (and ``--cuda``) can use them.

One module per method; adding one is one file (a kernel under :func:`._base.method`, the task-vector ones
through :func:`._base.task_arithmetic`) plus one :func:`register_method_module` line. Data-free:
``tsv_m``, ``iso_c``, ``iso_cts``, ``cart``, ``real_aware``; data-aware (statistics from ``mergekit-clip stats``):
``regmean``, ``fisher``. See docs/merge_methods.md.
"""

from __future__ import annotations

import importlib
import sys

from mergekit_clip.registry import add_entry

# method name -> "module:attribute" of its MergeMethod object (imported only when mergekit registers them)
METHOD_MODULES: dict[str, str] = {}


def register_method_module(name: str, target: str) -> str:
    """Add the plugin method ``name`` defined at ``target`` ("module:attribute"); :mod:`mergekit_clip.registry`'s
    rules. Register before the plugin registers its methods with mergekit (at ``import mergekit``)."""
    return add_entry(METHOD_MODULES, name, target, "plugin merge method")


register_method_module("tsv_m", "mergekit_clip.plugin.methods.tsv_m:tsv_m_merge")
register_method_module("iso_c", "mergekit_clip.plugin.methods.iso_c:iso_c_merge")
register_method_module("iso_cts", "mergekit_clip.plugin.methods.iso_cts:iso_cts_merge")
register_method_module("cart", "mergekit_clip.plugin.methods.cart:cart_merge")
register_method_module("real_aware", "mergekit_clip.plugin.methods.real_aware:real_aware_merge")
register_method_module("regmean", "mergekit_clip.plugin.methods.regmean:regmean_merge")
register_method_module("fisher", "mergekit_clip.plugin.methods.fisher:fisher_merge")

# data-aware methods -> the kind of `mergekit-clip stats` file each ingredient needs
STATS_KINDS = {"regmean": "gram", "fisher": "fisher"}


# methods whose module was still being imported when the plugin registered the others (a user's
# ``import mergekit_clip.plugin.methods.tsv_m`` imports mergekit, whose start-up hook registers methods):
# each registers itself the moment its kernel is defined (``_base.method``)
_PENDING: set[str] = set()


def _initializing(module: str) -> bool:
    spec = getattr(sys.modules.get(module), "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


def method_objects(*, skip_initializing: bool = False) -> dict:
    """``name -> MergeMethod`` of every method this package defines (``skip_initializing``: leave out those whose
    module is being imported right now, in this very call stack)."""
    out = {}
    for name, target in METHOD_MODULES.items():
        module, attr = target.split(":")
        if skip_initializing and _initializing(module):
            _PENDING.add(name)
            continue
        out[name] = getattr(importlib.import_module(module), attr)
    return out


def register_pending(method) -> None:
    """Register a method whose module was mid-import when the others were registered (no-op otherwise)."""
    name = method.spec.name
    if name in _PENDING:
        from mergekit.merge_methods import registry

        from mergekit_clip.plugin.seams import note_added_method

        _PENDING.discard(name)
        registry.register(method)
        note_added_method(name)


def needs_base(name: str) -> bool:
    """Whether method ``name`` merges task vectors against a ``base_model`` (else it refuses one), per its contract."""
    from mergekit.merge_methods.base import BasePolicy

    return method_objects()[name].spec.contract.base is BasePolicy.REQUIRED


def default_parameters(name: str) -> dict:
    """The shared (not per-model) parameters of method ``name`` at their defaults, as its kernel declares them."""
    from mergekit.merge_methods.base import ParameterScope

    return {p.name: p.default for p in method_objects()[name].spec.parameters if p.scope is ParameterScope.SHARED}


def register_methods() -> list[str]:
    """Register every method with mergekit (idempotent); returns the names registered by this call.

    The same object already registered is a no-op; a different method under one of our names raises, naming both.
    """
    from mergekit.merge_methods import registry

    added = []
    for name, method in method_objects(skip_initializing=True).items():
        try:
            existing = registry.get(name)
        except RuntimeError:  # mergekit's "Unimplemented merge method"
            existing = None
        if existing is method:
            continue
        if existing is not None:
            raise RuntimeError(
                f"mergekit already has a merge method {name!r} ({type(existing).__module__}."
                f"{type(existing).__qualname__}: {existing.spec.pretty_name or name}); mergekit-clip's "
                f"{METHOD_MODULES[name]} would conflict"
            )
        registry.register(method)
        added.append(name)
    return added
