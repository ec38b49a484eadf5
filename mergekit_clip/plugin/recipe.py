"""Recipe checks mergekit does not make: unknown keys and parameters, and an output folder that is an input.

mergekit's config models ignore unknown keys (``modles:`` vanishes) and its parameter resolver reads only the
names a method declares, so a misspelt ``densty`` silently leaves TIES untrimmed. For CLIP merges the
``run_merge`` hook calls :func:`check_recipe` before mergekit plans: every key of the raw YAML is checked
against mergekit's own config models, and every parameter against the chosen method's declared parameters
(``method.spec.parameters`` in mergekit 0.1.5, ``parameters()``/``tensor_parameters()`` in older releases),
with a did-you-mean. :func:`install_recipe_errors` (the ``recipe_errors`` seam) makes ``mergekit-yaml`` report
a recipe that mergekit's own validation rejects as one ``Error:`` line, for every recipe (CLIP or not).
"""

from __future__ import annotations

import difflib
import functools
import typing
from pathlib import Path

import click
import yaml

from mergekit_clip.plugin.heads import MergeInputError

_RECIPE_FILE: list[str] = []  # the recipe mergekit-yaml is running, so errors can name it


def current_recipe_file() -> str:
    return _RECIPE_FILE[-1] if _RECIPE_FILE else "recipe"


def _did_you_mean(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=2, cutoff=0.6)
    return f"did you mean {' or '.join(map(repr, close))}? " if close else ""


def _scalars(setting) -> list:
    """The scalar values inside a mergekit ParameterSetting (scalar, gradient list, conditional filters)."""
    if isinstance(setting, (bool, int, float, str)):
        return [setting]
    if isinstance(setting, list):
        return [v for item in setting for v in _scalars(item)]
    value = getattr(setting, "value", None)  # ConditionalParameter
    return _scalars(value) if value is not None else []


def _check_values(where: str, key: str, setting, specs: dict, source_name: str) -> None:
    spec = specs.get(key)
    if spec is None or not hasattr(spec, "validate"):
        return
    for value in _scalars(setting):
        try:
            spec.validate(value)
        except Exception as e:
            msg = e.errors()[0]["msg"] if hasattr(e, "errors") else str(e)
            raise MergeInputError(f"{source_name}: {where}: parameter {key}={value!r}: {msg}") from e


def _container(annotation) -> tuple[str, type | None]:
    """(``"list"``/``"dict"``/``"one"``, the pydantic model class inside) of a field annotation."""
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "one", annotation
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (list, tuple) and args:
        return "list", _container(args[0])[1]
    if origin is dict and len(args) == 2:
        return "dict", _container(args[1])[1]
    for arg in args:  # Optional / Union: the first alternative that holds a model
        kind, cls = _container(arg)
        if cls is not None:
            return kind, cls
    return "one", None


def unknown_keys(raw, model: type, where: str = "") -> list[tuple[str, str, list[str]]]:
    """``(location, key, allowed)`` for each key of ``raw`` that ``model`` (recursively) does not declare.

    ``parameters`` dicts are left to :func:`check_recipe` (their keys depend on the method).
    """
    if not isinstance(raw, dict):
        return []
    fields = model.model_fields
    allowed = list(fields) + [f.alias for f in fields.values() if f.alias]
    found = [(where or "top level", key, allowed) for key in raw if key not in allowed]
    for key, value in raw.items():
        if key not in fields or key == "parameters":
            continue
        kind, cls = _container(fields[key].annotation)
        if cls is None:
            continue
        prefix = f"{where}.{key}" if where else key
        if kind == "list" and isinstance(value, list):
            items = [(f"{prefix}[{i}]", v) for i, v in enumerate(value)]
        elif kind == "dict" and isinstance(value, dict):
            items = [(f"{prefix}.{k}", v) for k, v in value.items()]
        else:
            items = [(prefix, value)]
        for loc, item in items:
            found += unknown_keys(item, cls, loc)
    return found


def method_parameter_names(method) -> tuple[list[str], list[str]]:
    """``(per-model names, global-only names)`` a mergekit method declares, for both registry APIs."""
    spec = getattr(method, "spec", None)
    if spec is not None and hasattr(spec, "parameters"):
        per_model = [p.name for p in spec.parameters if getattr(p.scope, "value", p.scope) != "shared"]
        shared = [p.name for p in spec.parameters if getattr(p.scope, "value", p.scope) == "shared"]
        return per_model, shared
    return [p.name for p in method.tensor_parameters()], [p.name for p in method.parameters()]  # mergekit < 0.1.5


def _parameter_blocks(merge_config):
    """``(location, parameters dict, per_model)`` for every parameters block of a recipe."""
    yield "parameters", merge_config.parameters, False
    for i, m in enumerate(merge_config.models or []):
        yield f"models[{i}] ({m.model})", m.parameters, True
    for i, s in enumerate(merge_config.slices or []):
        yield f"slices[{i}].parameters", s.parameters, False
        for j, src in enumerate(s.sources):
            yield f"slices[{i}].sources[{j}] ({src.model})", src.parameters, True
    for name, module in (merge_config.modules or {}).items():
        yield f"modules.{name}.parameters", module.parameters, False
        for i, m in enumerate(module.models or []):
            yield f"modules.{name}.models[{i}] ({m.model})", m.parameters, True


def check_recipe(merge_config, config_source: str | None, source_name: str = "recipe") -> None:
    """Refuse unknown keys, an unknown method and unknown or misplaced parameters (one line each)."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge_methods.registry import get, registered_methods

    if config_source:
        try:
            raw = yaml.safe_load(config_source)
        except yaml.YAMLError:
            raw = None  # mergekit parsed it already; nothing more to learn from a second parse
        for where, key, allowed in unknown_keys(raw, MergeConfiguration):
            raise MergeInputError(
                f"{source_name}: unknown key {key!r} at {where}: {_did_you_mean(key, allowed)}"
                f"allowed keys: {', '.join(allowed)}"
            )
    method_name = merge_config.merge_method
    names = sorted(m.spec.name for m in registered_methods())
    try:
        method = get(method_name)
    except (RuntimeError, KeyError) as e:
        raise MergeInputError(
            f"{source_name}: unknown merge_method {method_name!r}: {_did_you_mean(method_name, names)}"
            f"registered methods: {', '.join(names)}"
        ) from e
    per_model, shared = method_parameter_names(method)
    takes = (
        f"{method_name} takes {', '.join(per_model) or 'nothing'} per model"
        f"{' and ' + ', '.join(shared) + ' globally' if shared else ''}"
    )
    specs = {p.name: p for p in getattr(getattr(method, "spec", None), "parameters", ())}
    for where, params, is_per_model in _parameter_blocks(merge_config):
        for key, setting in (params or {}).items():
            if key in per_model or (key in shared and not is_per_model):
                _check_values(where, key, setting, specs, source_name)
                continue
            if key in shared:
                raise MergeInputError(
                    f"{source_name}: {where}: parameter {key!r} of {method_name} is global (mergekit ignores it per "
                    f"model): set it under the top-level parameters"
                )
            raise MergeInputError(
                f"{source_name}: {where}: unknown parameter {key!r} for {method_name}: "
                f"{_did_you_mean(key, per_model + shared)}{takes}"
            )


def check_output_location(out: Path, inputs: list[Path]) -> None:
    """The output may be neither an input, inside one, nor a folder holding one (it is replaced whole)."""
    out = out.resolve()
    for path in inputs:
        src = path.resolve()
        if out == src or src in out.parents:
            raise MergeInputError(f"output {out} is input {path} or inside it; write the merge to a new folder")
        if out in src.parents:
            raise MergeInputError(f"output {out} contains input {path}; it would be replaced by the merge")


def _one_line(e: Exception) -> str:
    errors = getattr(e, "errors", None)
    if callable(errors):
        try:
            return "; ".join(f"{'.'.join(map(str, err['loc'])) or 'recipe'}: {err['msg']}" for err in errors())
        except Exception:
            pass
    return " ".join(str(e).split())


def validate_recipe_file(config_file: str) -> None:
    """What ``mergekit-yaml`` does before merging, with each failure as a :class:`click.ClickException`."""
    from mergekit.config import MergeConfiguration
    from pydantic import ValidationError

    try:
        with open(config_file, encoding="utf-8") as f:
            source = f.read()
    except OSError as e:
        raise click.ClickException(f"{config_file}: cannot read the recipe ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise click.ClickException(f"{config_file}: not UTF-8 text ({e})") from e
    from mergekit_clip.structured import StructuredFileError, parse_yaml

    try:
        data = parse_yaml(source, str(config_file))  # also refuses nesting that would crash mergekit's own parse
    except StructuredFileError as e:
        raise click.ClickException(_one_line(e)) from e
    try:
        config = MergeConfiguration.model_validate(data)
    except (ValidationError, RuntimeError, ValueError, TypeError) as e:  # mergekit validators raise RuntimeError
        raise click.ClickException(f"{config_file}: invalid mergekit recipe: {_one_line(e)}") from e
    _refuse_missing_models(config, config_file)
    _refuse_without_run_merge(config, config_file)


def _refuse_missing_models(config, config_file: str) -> None:
    """A model that is a local folder without config.json, or a path (absolute or ./, ../) that does not exist:
    named here, before mergekit asks transformers about it (a traceback). Hub ids are left to mergekit."""
    for ref in config.referenced_models():
        path = str(ref.model.path)
        local = Path(path)
        if local.is_dir() and not (local / "config.json").is_file() and not list(local.glob("*.safetensors")):
            raise click.ClickException(f"{config_file}: model {path!r} is a folder without config.json or weights")
        if not local.exists() and (local.is_absolute() or path.startswith(("./", "../"))):
            raise click.ClickException(f"{config_file}: model {path!r} does not exist")


def _refuse_without_run_merge(config, config_file: str) -> None:
    """Without the run_merge seam a CLIP merge would get the base's config.json: refuse it by name."""
    from mergekit_clip.plugin.preflight import looks_like_ours
    from mergekit_clip.plugin.seams import states

    state = states().get("run_merge")
    if state is not None and state.active:
        return
    ours = [str(r.model.path) for r in config.referenced_models() if looks_like_ours(str(r.model.path))]
    if ours:
        reason = state.reason if state is not None else "not installed"
        raise click.ClickException(
            f"{config_file}: {ours[0]} is a CLIP detector, but the plugin's run_merge seam is inactive ({reason}); "
            "refusing rather than writing a merge with the wrong config.json (see `mergekit-clip plugin status`)"
        )


def install_recipe_errors() -> None:
    """Wrap ``mergekit-yaml``'s click callback so its own recipe validation errors are one ``Error:`` line."""
    from mergekit.scripts import run_yaml

    command = run_yaml.main
    original = command.callback
    if getattr(original, "_mergekit_clip", False):
        return

    @functools.wraps(original)
    def callback(*args, **kwargs):
        config_file = kwargs.get("config_file", args[0] if args else None)
        if config_file is None:
            return original(*args, **kwargs)
        validate_recipe_file(config_file)
        _RECIPE_FILE.append(str(config_file))
        try:
            return original(*args, **kwargs)
        finally:
            _RECIPE_FILE.pop()

    callback._mergekit_clip = True
    command.callback = callback
