"""The CSV reader: encodings, BOM, key column, duplicates, bad rows located."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchmail.campaign import RecipientsConfig
from batchmail.errors import CampaignError
from batchmail.recipients import read_recipients, read_rows


def config(tmp_path: Path, data: bytes, **kwargs: str) -> RecipientsConfig:
    path = tmp_path / "people.csv"
    path.write_bytes(data)
    return RecipientsConfig(path, **kwargs)


def test_rows_stream_with_numbers_and_fields(tmp_path: Path) -> None:
    rows = list(read_recipients(config(tmp_path, b"email,name\na@x.org,Ann\nb@x.org,Bo\n")))
    assert [(r.row_number, r.key, dict(r.fields)) for r in rows] == [
        (1, "a@x.org", {"email": "a@x.org", "name": "Ann"}),
        (2, "b@x.org", {"email": "b@x.org", "name": "Bo"}),
    ]


def test_bom_is_tolerated_and_non_ascii_kept(tmp_path: Path) -> None:
    data = "\ufeffemail,name\nw@x.org,王伟\n".encode()
    (row,) = read_recipients(config(tmp_path, data))
    assert row.fields == {"email": "w@x.org", "name": "王伟"}


@pytest.mark.parametrize("encoding", ["cp1252", "gbk", "utf-16"])
def test_declared_encodings(tmp_path: Path, encoding: str) -> None:
    name = "José" if encoding == "cp1252" else "王伟"
    data = f"email,name\nj@x.org,{name}\n".encode(encoding)
    (row,) = read_recipients(config(tmp_path, data, encoding=encoding))
    assert row.fields["name"] == name


def test_undecodable_row_is_named_with_a_hint(tmp_path: Path) -> None:
    rows = list(read_rows(config(tmp_path, b"email,name\na@x.org,Ann\nb@x.org,B\xe9a\n")))
    assert rows[0].recipient is not None
    assert rows[1].recipient is None
    message = str(rows[1].problems[0])
    assert "people.csv, row 2 (line 3)" in message
    assert "not valid utf-8" in message and "recipients.encoding" in message


def test_duplicate_and_empty_keys_name_both_rows(tmp_path: Path) -> None:
    rows = list(read_rows(config(tmp_path, b"email,n\na@x.org,1\n,2\na@x.org,3\n")))
    assert "row 2 (line 3), column email: empty key" in str(rows[1].problems[0])
    assert "duplicate key 'a@x.org' (first on row 1)" in str(rows[2].problems[0])


def test_missing_key_column(tmp_path: Path) -> None:
    with pytest.raises(CampaignError) as caught:
        list(read_rows(config(tmp_path, b"mail,name\na@x.org,A\n")))
    assert "no column 'email'" in str(caught.value) and "recipients.key" in str(caught.value)


def test_wrong_field_count_and_multiline_values(tmp_path: Path) -> None:
    data = b'email,note\na@x.org,"two\nlines"\nb@x.org,x,extra\n'
    rows = list(read_rows(config(tmp_path, data)))
    assert rows[0].recipient is not None and rows[0].recipient.fields["note"] == "two\nlines"
    assert "row 2 (line 4): has 3 fields, the header has 2" in str(rows[1].problems[0])


def test_blank_lines_are_skipped_and_empty_file_refused(tmp_path: Path) -> None:
    rows = list(read_recipients(config(tmp_path, b"email\n\na@x.org\n\n")))
    assert [r.key for r in rows] == ["a@x.org"]
    with pytest.raises(CampaignError, match="empty file"):
        list(read_rows(config(tmp_path, b"")))
