"""The same problem on many rows, told in one line.

A typo in a template fails every row alike; 600 identical lines hide the one thing to fix.
Row problems (``Problem.row`` set) whose text is the same but for the row number -- the
same place (file, field, column) and the same message -- become one group:

    people.csv, rows 1-600 (600 rows): template message.subject, line 1: 'nme' is undefined

A problem that names its own value (an invalid address) differs from row to row and stays
on a line of its own. ``Problem.detail`` (a byte offset) is left out of the comparison and
shown for the group's first row. Row lists and the number of lines are capped, so that
200,000 bad rows print a screenful. Pure: nothing here prints or reads a file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from batchmail.errors import Problem

MAX_RANGES = 5  # row ranges shown in a group's line before "and N more"
MAX_LINES = 50  # groups shown in all; the rest are counted in one last line


@dataclass
class ProblemGroup:
    """Problems identical but for their row; ``first`` stands for them all."""

    first: Problem
    head: str = ""  # ``where`` before the row ("people.csv")
    tail: str = ""  # ``where`` after the row (", column email")
    rows: list[int] = field(default_factory=list)
    problems: int = 1  # how many problems the group stands for

    def describe(self, max_ranges: int = MAX_RANGES) -> str:
        """The group as one line; a group of one is the problem as it is."""
        if self.problems == 1:
            return str(self.first)
        rows = format_rows(self.rows, max_ranges)
        where = f"{self.head}, {rows}" if self.head else rows
        detail = f" (first: row {self.rows[0]}, {self.first.detail})" if self.first.detail else ""
        return f"{where}{self.tail}: {self.first.message}{detail}"


def group_problems(problems: Iterable[Problem]) -> list[ProblemGroup]:
    """The problems in groups, in the order each group's first problem came."""
    groups: list[ProblemGroup] = []
    by_text: dict[tuple[str, str, str], ProblemGroup] = {}
    for problem in problems:
        split = _split_where(problem)
        if split is None:
            groups.append(ProblemGroup(problem))
            continue
        head, tail = split
        key = (head, tail, problem.message)
        group = by_text.get(key)
        if group is None:
            group = by_text[key] = ProblemGroup(problem, head, tail, [])
            groups.append(group)
        else:
            group.problems += 1
        assert problem.row is not None  # _split_where found it
        group.rows.append(problem.row)
    return groups


def problem_lines(problems: Sequence[Problem], max_lines: int = MAX_LINES) -> list[str]:
    """What to print for ``problems``: one line per group, at most ``max_lines`` of them
    and then one line counting the rest."""
    groups = group_problems(problems)
    lines = [group.describe() for group in groups[:max_lines]]
    hidden = groups[max_lines:]
    if hidden:
        count = sum(group.problems for group in hidden)
        rows = len({row for group in hidden for row in group.rows})
        on_rows = f" on {rows:,} row{'s' * (rows != 1)}" if rows else ""
        lines.append(
            f"... and {count:,} more problem{'s' * (count != 1)}{on_rows}, not shown: "
            "fix the ones above and check again"
        )
    return lines


def format_rows(rows: Iterable[int], max_ranges: int = MAX_RANGES) -> str:
    """``rows 3, 7-9, 12 (5 rows)``; past ``max_ranges`` ranges, ``and N more``."""
    ranges = row_ranges(rows)
    count = sum(last - first + 1 for first, last in ranges)
    if count == 1:
        return f"row {ranges[0][0]}"
    shown = [f"{first}" if first == last else f"{first}-{last}" for first, last in ranges]
    if len(shown) > max_ranges:
        rest = sum(last - first + 1 for first, last in ranges[max_ranges:])
        shown = [*shown[:max_ranges], f"and {rest:,} more"]
    return f"rows {', '.join(shown)} ({count:,} rows)"


def row_ranges(rows: Iterable[int]) -> list[tuple[int, int]]:
    """Distinct row numbers as ascending (first, last) runs of consecutive numbers."""
    ranges: list[tuple[int, int]] = []
    for row in sorted(set(rows)):
        if ranges and row == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], row)
        else:
            ranges.append((row, row))
    return ranges


# A row in a ``where``: "people.csv, row 5 (line 6), column email".
_ROW = re.compile(r"(?:^|, )row (\d+)(?: \(line \d+\))?(?=,|$)")


def _split_where(problem: Problem) -> tuple[str, str] | None:
    """``where`` without its row: the part before it and the part after it (a CSV row's
    line is left out too: it differs with the row). None for a problem of no row."""
    if problem.row is None:
        return None
    for match in _ROW.finditer(problem.where):
        if int(match[1]) == problem.row:
            head = problem.where[: match.start()]
            return head, problem.where[match.end() :]
    return None
