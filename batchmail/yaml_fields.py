"""Typed reads from the YAML of a campaign file: strings, integers, numbers, booleans,
files and sections, each problem reported with its key path and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from batchmail.errors import Problem

MISSING = object()


class FieldReader:
    """Typed reads from a YAML mapping, collecting every problem with its key path and line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[Problem] = []
        self.lines: dict[str, int] = {}

    # -- reporting

    def problem(self, key_path: str, message: str, line: int | None = None) -> None:
        line = line or self.lines.get(key_path)
        suffix = f", line {line}" if line else ""
        label = f"{key_path}: " if key_path else ""
        self.problems.append(Problem(self.path.name, f"{label}{message}{suffix}"))

    def section(self, parent: Any, key_path: str, keys: frozenset[str]) -> dict[str, Any] | None:
        """A mapping's known keys; unknown keys are reported. None if it is not a mapping."""
        if not isinstance(parent, dict):
            self.problem(key_path, f"expected a mapping, got {describe(parent)}")
            return None
        line = getattr(parent, "line", None)
        if key_path:
            self.lines.setdefault(key_path, line or 0)
        key_lines = getattr(parent, "key_lines", {})
        values: dict[str, Any] = {}
        for key, value in parent.items():
            child = f"{key_path}.{key}" if key_path else str(key)
            self.lines[child] = key_lines.get(key, 0)
            if key not in keys:
                hint = _closest(str(key), keys)
                known = (
                    f"did you mean {hint!r}?" if hint else f"known keys: {', '.join(sorted(keys))}"
                )
                self.problem(child, f"unknown key ({known})")
            else:
                values[key] = value
        return values

    # -- typed values

    def string(self, values: dict[str, Any], key_path: str, default: Any = MISSING) -> Any:
        key = key_path.rsplit(".", 1)[-1]
        value = values.get(key)
        if value is None:
            if default is MISSING:
                self.problem(key_path, "missing", self.lines.get(key_path.rsplit(".", 1)[0]))
            return default
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.problem(key_path, f"expected a string, got {describe(value)}")
            return default if default is not MISSING else ""
        return str(value)

    def integer(
        self,
        values: dict[str, Any],
        key_path: str,
        default: int,
        minimum: int = 0,
        maximum: int | None = None,
    ) -> int:
        key = key_path.rsplit(".", 1)[-1]
        value = values.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(key_path, "expected an integer")
            return default
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" and {maximum}" if maximum is not None else ""
            self.problem(
                key_path,
                f"expected an integer between {minimum}{upper}, got {value}"
                if upper
                else f"expected an integer of at least {minimum}, got {value}",
            )
            return default
        return value

    def number(
        self, values: dict[str, Any], key_path: str, default: float, positive: bool = False
    ) -> float:
        key = key_path.rsplit(".", 1)[-1]
        value = values.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            self.problem(key_path, "expected a number")
            return default
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            number = float("inf") if value > 0 else float("-inf")
            value = "a number too large"
        if number < 0 or (positive and number == 0) or number == float("inf"):
            self.problem(
                key_path,
                f"expected a {'positive' if positive else 'non-negative'} "
                f"finite number, got {value}",
            )
            return default
        return number

    def boolean(self, values: dict[str, Any], key_path: str, default: bool) -> bool:
        value = values.get(key_path.rsplit(".", 1)[-1])
        if value is None:
            return default
        if not isinstance(value, bool):
            self.problem(key_path, "expected true or false")
            return default
        return value

    def file(self, values: dict[str, Any], key_path: str, required: bool) -> Path | None:
        text = self.string(values, key_path, default=MISSING if required else None)
        if text is None or text is MISSING or text == "":
            if required and text == "":
                self.problem(key_path, "must name a file")
            return None
        try:
            resolved: Path = (self.path.parent / text).resolve()
            is_file = resolved.is_file()
        except ValueError:  # a NUL or a lone surrogate: no file system has such a name
            self.problem(key_path, f"{text!r} is not a usable file name")
            return None
        if not is_file:
            state = "is not a file" if resolved.exists() else "not found"
            self.problem(key_path, f"{text} {state} (looked for {resolved})")
            return None
        return resolved


def describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}"


def _closest(word: str, choices: frozenset[str]) -> str | None:
    import difflib

    matches = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.7)
    return matches[0] if matches else None
