"""What `batchmail check` prints for many bad rows: the real command on real campaigns."""

from __future__ import annotations

from pathlib import Path

from campaign_files import batchmail, write_campaign


def invoices(count: int) -> list[dict[str, str]]:
    return [
        {
            "email": f"person{i}@example.org",
            "name": f"Person {i}",
            "invoice_id": f"INV-{i:04d}",
            "amount": f"{i}.00",
        }
        for i in range(1, count + 1)
    ]


def problem_lines(stderr: str) -> list[str]:
    heading, *lines = stderr.splitlines()
    assert heading.startswith("batchmail: ") and heading.endswith(":"), stderr
    return [line.strip() for line in lines]


def test_one_typo_on_600_rows_is_one_line_with_a_suggestion(tmp_path: Path) -> None:
    campaign = write_campaign(
        tmp_path,
        invoices(600),
        smtp="embedded",
        message={"subject": "Invoice {{ invoice_id }} for {{ nme }}"},
        text="Dear {{ name }}, {{ amount }}\n",
        html=None,
    )

    result = batchmail("check", campaign)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[0] == "batchmail: 600 problems:"
    assert problem_lines(result.stderr) == [
        "people.csv, rows 1-600 (600 rows): template message.subject, line 1: 'nme' is "
        "undefined; did you mean 'name'? columns: email, name, invoice_id, amount"
    ]


def test_a_dry_run_tells_the_same_rows_in_one_line(tmp_path: Path) -> None:
    rows = invoices(40)
    for row in rows[10:20]:
        row["invoice_id"] = "../people.csv"
    campaign = write_campaign(
        tmp_path,
        rows,
        smtp="embedded",
        message={"attachments": ["files/{{ invoice_id }}"]},
        text="Hi {{ name }}\n",
        html=None,
    )
    (tmp_path / "files").mkdir()
    for row in rows[:10] + rows[20:]:
        (tmp_path / "files" / row["invoice_id"]).write_bytes(b"%PDF-1.4")

    result = batchmail("run", campaign, "--dry-run")

    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == "batchmail: 10 problems, nothing was sent:"
    assert problem_lines(result.stderr) == [
        "people.csv, rows 11-20 (10 rows), message.attachments[0]: "
        "files/{{ invoice_id }} (column invoice_id): 'files/../people.csv' leaves the "
        f"directory {tmp_path / 'files'}/"
    ]
    assert not list(tmp_path.rglob("*.eml"))


def test_a_file_in_another_encoding_is_one_line_naming_its_first_bad_byte(
    tmp_path: Path,
) -> None:
    rows = invoices(300)
    campaign = write_campaign(tmp_path, rows, smtp="embedded", text="Hi {{ name }}\n", html=None)
    lines = ["email,name,invoice_id,amount"]
    lines += [f"{r['email']},{r['name']} Müller,{r['invoice_id']},{r['amount']}" for r in rows]
    lines[5] = "person5@example.org,Person 5,INV-0005,5.00"  # plain ASCII: decodes
    (tmp_path / "people.csv").write_bytes("\n".join(lines).encode("cp1252") + b"\n")

    result = batchmail("check", campaign)

    assert result.returncode == 2
    assert problem_lines(result.stderr) == [
        "people.csv, rows 1-4, 6-300 (299 rows): bytes that are not valid utf-8; if the file "
        "was saved by a spreadsheet, set `recipients.encoding` (e.g. cp1252, latin-1, gbk) "
        "(first: row 1, byte 0xfc at offset 31)"
    ]


def test_different_problems_on_many_rows_print_a_screenful(tmp_path: Path) -> None:
    rows = invoices(150)
    rows += [dict(row) for row in rows]  # rows 151-300 repeat the keys of rows 1-150
    campaign = write_campaign(tmp_path, rows, smtp="embedded", text="Hi {{ name }}\n", html=None)

    result = batchmail("check", campaign)

    assert result.returncode == 2
    lines = problem_lines(result.stderr)
    assert result.stderr.splitlines()[0] == "batchmail: 150 problems:"
    assert len(lines) == 51
    assert lines[0] == (
        "people.csv, row 151 (line 152), column email: duplicate key 'person1@example.org' "
        "(first on row 1); every recipient needs its own email"
    )
    assert lines[-1] == (
        "... and 100 more problems on 100 rows, not shown: fix the ones above and check again"
    )


def test_a_missing_attachment_is_named_by_its_key_path_alone(tmp_path: Path) -> None:
    """One numbering: the 0-based index of message.attachments[1], no 1-based one beside."""
    rows = invoices(3)
    campaign = write_campaign(
        tmp_path,
        rows,
        smtp="embedded",
        message={"attachments": ["guide.txt", "files/{{ invoice_id }}"]},
        text="Hi {{ name }}\n",
        html=None,
    )
    (tmp_path / "guide.txt").write_text("the guide\n")
    (tmp_path / "files").mkdir()
    for row in rows[:2]:
        (tmp_path / "files" / row["invoice_id"]).write_bytes(b"%PDF-1.4")

    result = batchmail("check", campaign)

    assert result.returncode == 2
    assert problem_lines(result.stderr) == [
        "people.csv, row 3, message.attachments[1]: files/{{ invoice_id }} (column "
        f"invoice_id): file not found: {tmp_path / 'files' / 'INV-0003'}"
    ]
