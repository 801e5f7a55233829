"""Grouping row problems whose text is the same but for the row (a pure function)."""

from __future__ import annotations

from batchmail.errors import Problem
from batchmail.problem_groups import format_rows, group_problems, problem_lines, row_ranges
from batchmail.render import undefined_hint

TYPO = "template message.subject, line 1: 'nme' is undefined"


def row_problem(row: int, message: str = TYPO, where: str = "", detail: str = "") -> Problem:
    return Problem(where or f"people.csv, row {row}", message, row=row, detail=detail)


def test_the_same_problem_on_600_rows_is_one_line() -> None:
    lines = problem_lines([row_problem(row) for row in range(1, 601)])
    assert lines == [f"people.csv, rows 1-600 (600 rows): {TYPO}"]


def test_a_problem_on_one_row_reads_as_it_is() -> None:
    problem = row_problem(7, "bad", where="people.csv, row 7 (line 9), column email")
    assert problem_lines([problem]) == ["people.csv, row 7 (line 9), column email: bad"]


def test_row_lists_are_ranges_and_capped() -> None:
    assert format_rows([12, 3, 7, 8, 9, 8]) == "rows 3, 7-9, 12 (5 rows)"
    assert format_rows([4]) == "row 4"
    rows = [1, 2, 4, 6, 8, 10, 12, 14, 15]
    assert format_rows(rows, max_ranges=3) == "rows 1-2, 4, 6, and 5 more (9 rows)"
    assert row_ranges([5, 1, 2, 3]) == [(1, 3), (5, 5)]


def test_the_place_around_the_row_is_kept_and_the_csv_line_left_out() -> None:
    problems = [
        row_problem(row, "empty key", where=f"people.csv, row {row} (line {row + 1}), column email")
        for row in (2, 3, 9)
    ]
    assert problem_lines(problems) == ["people.csv, rows 2-3, 9 (3 rows), column email: empty key"]


def test_problems_naming_their_own_value_stay_apart_and_in_order() -> None:
    problems = [
        row_problem(1, '"a@" is not an email address', where="people.csv, row 1, message.to"),
        row_problem(2, TYPO),
        row_problem(3, '"b@" is not an email address', where="people.csv, row 3, message.to"),
        row_problem(4, TYPO),
        row_problem(5, '"a@" is not an email address', where="people.csv, row 5, message.to"),
    ]
    assert problem_lines(problems) == [
        'people.csv, rows 1, 5 (2 rows), message.to: "a@" is not an email address',
        f"people.csv, rows 2, 4 (2 rows): {TYPO}",
        'people.csv, row 3, message.to: "b@" is not an email address',
    ]


def test_a_detail_is_left_out_of_the_comparison_and_shown_for_the_first_row() -> None:
    message = "bytes that are not valid utf-8; set `recipients.encoding`"
    problems = [
        row_problem(row, message, f"people.csv, row {row} (line {row + 1})", f"byte 0xe9 at {row}")
        for row in (4, 5, 6)
    ]
    assert problem_lines(problems) == [
        f"people.csv, rows 4-6 (3 rows): {message} (first: row 4, byte 0xe9 at 4)"
    ]
    assert problem_lines(problems[:1]) == [f"people.csv, row 4 (line 5), byte 0xe9 at 4: {message}"]


def test_problems_of_no_row_are_never_grouped() -> None:
    problems = [Problem("campaign.yaml, smtp.port, line 3", "expected an integer")] * 2
    assert problem_lines(problems) == ["campaign.yaml, smtp.port, line 3: expected an integer"] * 2


def test_200000_different_problems_print_a_screenful() -> None:
    problems = [row_problem(row, f"duplicate key 'k{row}'") for row in range(1, 200_001)]
    lines = problem_lines(problems, max_lines=50)
    assert len(lines) == 51
    assert lines[-1] == (
        "... and 199,950 more problems on 199,950 rows, not shown: "
        "fix the ones above and check again"
    )


def test_groups_keep_the_order_of_their_first_row() -> None:
    groups = group_problems([row_problem(3, "b"), row_problem(1, "a"), row_problem(2, "b")])
    assert [(g.first.message, g.rows) for g in groups] == [("b", [3, 2]), ("a", [1])]


def test_an_undefined_name_suggests_close_columns_and_lists_them() -> None:
    columns = ("email", "name", "invoice_id", "amount")
    variables = ("row", "row_number")
    hint = undefined_hint("'nme' is undefined", columns, variables)
    assert hint == "; did you mean 'name'? columns: email, name, invoice_id, amount"
    assert undefined_hint("'row_numbr' is undefined", columns, variables).startswith(
        "; did you mean 'row_number'?"
    )
    assert undefined_hint("'EMAIL' is undefined", columns, variables).startswith(
        "; did you mean 'email'?"
    )
    # {{ row.nme }} and {{ row["nme"] }}: a missing key of the row
    missing_key = undefined_hint("'dict object' has no attribute 'amont'", columns, variables)
    assert missing_key.startswith("; did you mean 'amount'?")
    assert undefined_hint("'zzz' is undefined", columns, variables) == (
        "; columns: email, name, invoice_id, amount"
    )
    assert undefined_hint("'str object' has no attribute 'x'", columns, variables) == ""


def test_a_long_column_list_is_cut() -> None:
    columns = tuple(f"c{i}" for i in range(30))
    assert undefined_hint("'zzz' is undefined", columns, ()).endswith("c19, and 10 more")
