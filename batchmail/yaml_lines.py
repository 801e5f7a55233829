"""YAML with line numbers: every mapping remembers the line of each key, so errors can say
``smtp.port, line 6``. Safe loading only; duplicate keys are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from batchmail.errors import CampaignError, Problem


class _Mapping(dict[Any, Any]):
    """A YAML mapping that remembers the line of each key and of itself."""

    line: int = 0
    key_lines: dict[Any, int]


class _LineLoader(yaml.SafeLoader):
    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # PyYAML's own constructors raise plain Python errors on some well-formed scalars
        # (`2020-99-99` as a date, `!!float x`, `!!bool x`): report them at their line.
        try:
            value = super().construct_object(node, deep)
        except (ArithmeticError, LookupError, TypeError, ValueError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this value ({exc})", node.start_mark
            ) from exc
        if isinstance(value, int) and not _printable_int(value):
            raise yaml.constructor.ConstructorError(None, None, "number too large", node.start_mark)
        return value


def _printable_int(value: int) -> bool:
    """Whether str() works on it: past sys.get_int_max_str_digits() it raises ValueError,
    and every message about the value would."""
    try:
        str(value)
    except ValueError:
        return False
    return True


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _Mapping:
    loader.flatten_mapping(node)
    mapping = _Mapping()
    mapping.line = node.start_mark.line + 1
    mapping.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str | int | float | bool) or key is None:
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be a plain word", key_node.start_mark
            )
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.key_lines[key] = line
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: Path) -> Any:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise CampaignError([Problem(str(path), "campaign file not found")]) from None
    except IsADirectoryError:
        raise CampaignError([Problem(str(path), "is a directory, not a campaign file")]) from None
    except OSError as exc:
        raise CampaignError([Problem(str(path), f"cannot read: {exc.strerror}")]) from exc
    except UnicodeDecodeError as exc:
        raise CampaignError(
            [
                Problem(
                    path.name, f"not UTF-8 text (byte {exc.start}); save the campaign file as UTF-8"
                )
            ]
        ) from exc
    try:
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 - _LineLoader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = (
            f"{path.name}, line {mark.line + 1}, column {mark.column + 1}" if mark else path.name
        )
        what = exc.problem or exc.context or "invalid YAML"
        raise CampaignError([Problem(where, f"YAML syntax: {what}")]) from exc
    except yaml.YAMLError as exc:
        raise CampaignError([Problem(path.name, f"YAML syntax: {exc}")]) from exc
    except RecursionError as exc:
        raise CampaignError([Problem(path.name, "YAML nested too deeply")]) from exc
