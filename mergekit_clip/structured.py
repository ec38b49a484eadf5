"""JSON and YAML files read defensively: a damaged or hostile file is one ``ValueError`` naming it, never a crash.

Python's parsers recurse: a document nested a hundred thousand levels deep ends in ``RecursionError`` (a
traceback), and YAML aliases can make a small file expand into a huge tree when it is walked. Everything we read
(detector configs, recipes, study and training configs, family summaries, dataset JSONs) is shallow, so a depth
limit of :data:`MAX_DEPTH` and a node limit of :data:`MAX_NODES` cost nothing for real files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

MAX_DEPTH = 64  # the deepest file we write nests 8 levels (a DeepfakeBench JSON: 6)
MAX_NODES = 20_000_000  # a DeepfakeBench JSON of FF++ holds ~1.5 M nodes
YAML_MAX_NODES = 1_000_000  # recipes and configs hold hundreds; aliases may not multiply past this


class StructuredFileError(ValueError):
    """A JSON or YAML file that cannot be read; the message starts with the file's name."""


def check_nesting(data: Any, source: str, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES) -> Any:
    """Walk ``data`` without recursion; refuse a tree deeper than ``max_depth`` or larger than ``max_nodes``."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    nodes = 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            raise StructuredFileError(f"{source}: more than {max_nodes} values (YAML aliases expanding?)")
        if isinstance(node, dict):
            children = list(node.values())
        elif isinstance(node, (list, tuple)):
            children = list(node)
        else:
            continue
        if children and depth >= max_depth:
            raise StructuredFileError(f"{source}: nested deeper than {max_depth} levels")
        stack.extend((child, depth + 1) for child in children)
    return data


def _read(file: str | os.PathLike) -> str:
    try:
        return Path(file).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise StructuredFileError(f"{file}: not UTF-8 text ({e})") from e


def parse_json(text: str | bytes, source: str, walk: bool = True) -> Any:
    """``json.loads`` with every failure (syntax, encoding, nesting) as one :class:`StructuredFileError`;
    ``walk=False`` skips the depth walk (a large dataset JSON: its reader checks every node's type anyway)."""
    try:
        data = json.loads(text)
    except RecursionError as e:
        raise StructuredFileError(f"{source}: nested deeper than {MAX_DEPTH} levels") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StructuredFileError(f"{source}: not valid JSON ({e})") from e
    return check_nesting(data, source) if walk else data


def read_json(file: str | os.PathLike, walk: bool = True) -> Any:
    return parse_json(_read(file), str(file), walk)


def parse_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load`` with every failure (syntax, nesting, alias bombs) as one :class:`StructuredFileError`."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except RecursionError as e:
        raise StructuredFileError(f"{source}: nested deeper than {MAX_DEPTH} levels") from e
    except yaml.YAMLError as e:
        raise StructuredFileError(f"{source}: not valid YAML ({' '.join(str(e).split())})") from e
    return check_nesting(data, source, max_nodes=YAML_MAX_NODES)


def read_yaml(file: str | os.PathLike) -> Any:
    return parse_yaml(_read(file), str(file))
