"""The batch tab's files: reviews read from .csv, .xlsx, .txt or pasted lines; the same rows written back labelled."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from pipeline import Sentiment, UserInputError

SUFFIXES = (".csv", ".xlsx", ".txt")
# Encodings tried in order: Excel on a Chinese Windows saves "CSV" as GBK (GB18030 reads it), others UTF-8.
ENCODINGS = ("utf-8-sig", "gb18030")
# The columns appended to every row of the labelled file.
LABEL_COLUMNS = ("情感", "置信度", "拿不准", "备注")
_NUMBER = re.compile(r"^[\s+-]?[\d.,:/%-]*\d[\d.,:/%-]*\s*$")  # numbers, dates, times, ids


@dataclass(frozen=True)
class ReviewsTable:
    """Rows of cells as read, the header (None when the first row is data) and where they came from."""

    rows: list[list[str]]
    header: list[str] | None
    name: str

    @property
    def width(self) -> int:
        """Number of columns (the widest row)."""
        return max([len(self.header or [])] + [len(r) for r in self.rows] or [0])

    def column_names(self) -> list[str]:
        """A name per column: its header cell, or "第 N 列" where there is none."""
        header = self.header or []
        return [(header[i].strip() if i < len(header) and header[i].strip() else f"第 {i + 1} 列")
                for i in range(self.width)]

    def texts(self, column: int) -> list[str]:
        """Every row's cell in column ("" where a row is short), in order."""
        return [row[column] if column < len(row) else "" for row in self.rows]

    def text_column(self) -> int:
        """The first column that holds text: most of its filled cells are not numbers, dates or ids."""
        for i in range(self.width):
            cells = [c for c in self.texts(i) if c.strip()]
            if cells and sum(not _NUMBER.match(c) for c in cells) * 2 > len(cells):
                return i
        return 0


def read_table(path: str | Path, header: bool = True) -> ReviewsTable:
    """A .csv, .xlsx or .txt (one review per line) file as a table; UserInputError (in Chinese too) if it cannot be read."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".xlsx":
        rows = _xlsx_rows(path)
    elif suffix in (".csv", ".txt"):
        text = _decode(path.read_bytes())
        rows = _csv_rows(text) if suffix == ".csv" else [[line] for line in _lines(text)]
        header = header and suffix == ".csv"
    else:
        raise UserInputError(f"cannot read {path.name}: use .csv, .xlsx or .txt",
                             f"读不了 {path.name}：请上传 .csv、.xlsx 或 .txt 文件")
    if header and rows:
        return ReviewsTable(rows[1:], rows[0], path.name)
    return ReviewsTable(rows, None, path.name)


def pasted_table(text: str) -> ReviewsTable:
    """Pasted text as a one-column table, one review per line."""
    return ReviewsTable([[line] for line in _lines(text or "")], None, "粘贴的评论")


def labelled_csv(table: ReviewsTable, results: Sequence[Sentiment | UserInputError | None]) -> bytes:
    """The table with LABEL_COLUMNS appended to each row, as CSV in UTF-8 with a BOM (Excel reads it as Chinese)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    width = table.width
    names = table.header if table.header is not None else (["文本"] if width == 1 else table.column_names())
    writer.writerow(list(names) + [""] * (width - len(names)) + list(LABEL_COLUMNS))
    for row, result in zip(table.rows, results):
        writer.writerow(list(row) + [""] * (width - len(row)) + label_cells(result))
    return out.getvalue().encode("utf-8-sig")


def label_cells(result: Sentiment | UserInputError | None) -> list[str]:
    """The appended cells of one row: label, confidence, uncertain, and why a row was not read."""
    if isinstance(result, Sentiment):
        return [result.label, f"{result.confidence:.4f}", "是" if result.uncertain else "否", ""]
    if isinstance(result, UserInputError):
        return ["", "", "", result.chinese]
    return ["", "", "", "未分析（已停止）"]


def _decode(data: bytes) -> str:
    for encoding in ENCODINGS:
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise UserInputError("the file is neither UTF-8 nor GB18030 text", "文件编码无法识别：请另存为 UTF-8 编码")


def _lines(text: str) -> list[str]:
    """Lines of text; blank lines inside are kept (marked empty later), trailing ones dropped."""
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _csv_rows(text: str) -> list[list[str]]:
    # The delimiter is the one the first line (the header, usually) uses most: reviews themselves are
    # full of commas and semicolons, which make csv.Sniffer guess wrong.
    first = text.split("\n", 1)[0]
    delimiter = max(",\t;", key=first.count) if any(d in first for d in ",\t;") else ","
    return _without_trailing_blank_rows(list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)))


def _xlsx_rows(path: Path) -> list[list[str]]:
    import openpyxl  # only the batch tab's .xlsx files need it

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001 - openpyxl raises many kinds for a file that is not a workbook
        raise UserInputError(f"cannot read {path.name} as an .xlsx workbook: {exc}",
                             f"读不了 {path.name}：不是有效的 .xlsx 文件") from None
    try:
        rows = [["" if cell is None else str(cell) for cell in row] for row in book.worksheets[0].iter_rows(values_only=True)]
    finally:
        book.close()
    return _without_trailing_blank_rows(rows)


def _without_trailing_blank_rows(rows: list[list[str]]) -> list[list[str]]:
    """rows without the blank ones at the end (an export's trailing newlines); blank rows inside stay."""
    while rows and not any(cell.strip() for cell in rows[-1]):
        rows.pop()
    return rows
