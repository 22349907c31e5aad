"""The batch tab's files: reviews read from .csv, .xlsx, .txt or pasted lines; the same rows written back labelled."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline import Sentiment, UserInputError
from pipeline.messages import batch_note

SUFFIXES = (".csv", ".xlsx", ".txt")
# Encodings tried in order: Excel on a Chinese Windows saves "CSV" as GBK (GB18030 reads it), others UTF-8.
ENCODINGS = ("utf-8-sig", "gb18030")
# The columns appended to every row of the labelled file.
LABEL_COLUMNS = ("情感", "置信度", "拿不准", "备注")
_NUMBER = re.compile(r"^[\s+-]?[\d.,:/%-]*\d[\d.,:/%-]*\s*$")  # numbers, dates, times, ids

# -- bounds on reading an upload (issue 26; measured by bench/upload_bombs.py) --------------------------------
# Data rows read when the caller does not say: BATCH_MAX_TEXTS's default (batch_tab passes the setting).
MAX_ROWS = 5000
# Blank rows scanned past the last filled one before reading stops: a sheet whose rows run on empty to row
# 1,048,576 (an export, or a bomb) is not walked to its end. A file stopped there says so (ReviewsTable.notice).
MAX_BLANK_RUN = 10_000
# Columns read: a row's cells past this must be empty. A sheet claiming column XFD would otherwise make
# every row 16,384 cells long, in memory and in the download.
MAX_COLUMNS = 100
# Bytes of a .csv or .txt read (the page accepts 8 MB; decoding GB18030 can take 4x in memory).
MAX_TEXT_BYTES = 16 * 1024 * 1024
# Bytes an .xlsx may hold once unzipped, all its parts together, as its zip directory declares them (CPython's
# zipfile stops a part at its declared size, so a lying directory fails its CRC check instead). openpyxl holds
# the shared strings and styles whole in memory; 8 MB zipped can declare gigabytes.
MAX_XLSX_UNZIPPED_BYTES = 64 * 1024 * 1024

# Cells a spreadsheet would read as a formula (OWASP, CSV injection): these first characters, also after
# leading whitespace. Full-width and small forms too: an input method types them, and spreadsheets may fold them.
_FORMULA_START = frozenset("=+-@\t\r＝＋－＠﹦﹢﹣﹫")
# A plain number ("-5", "+1.5", "-1,234"): it cannot call anything, and a quote would make it text in a
# spreadsheet (a visible "'-5"), so it is written as it is (as defusedcsv does). Anything more ("+1+1",
# "+86 138 ...") is quoted.
_PLAIN_NUMBER = re.compile(r"[+-]?\d+(?:[.,]\d+)*", re.ASCII)


@dataclass(frozen=True)
class ReviewsTable:
    """Rows of cells as read, the header (None when the first row is data) and where they came from."""

    rows: list[list[str]]
    header: list[str] | None
    name: str
    notice: str = ""  # in Chinese, when the file was not read to its end (see MAX_BLANK_RUN)

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


def read_table(path: str | Path, header: bool = True, max_rows: int = MAX_ROWS) -> ReviewsTable:
    """A .csv, .xlsx or .txt (one review per line) file as a table; UserInputError (in Chinese too) if it cannot be read.

    At most max_rows rows besides the header: a filled row past them refuses the file (as a batch of too many
    texts is refused), and reading stops there, so a bigger file is never held whole.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    header = header and suffix != ".txt"
    keep = max_rows + (1 if header else 0)
    if suffix == ".xlsx":
        rows, notice = _xlsx_rows(path, keep, max_rows)
    elif suffix in (".csv", ".txt"):
        size = path.stat().st_size
        if size > MAX_TEXT_BYTES:
            raise _too_big(path.name, size, MAX_TEXT_BYTES)
        text = _decode(path.read_bytes())
        lines = _csv_lines(text) if suffix == ".csv" else ([line] for line in _line_iter(text))
        rows, notice = _bounded_rows(lines, keep, max_rows, path.name)
    else:
        raise UserInputError(f"cannot read {path.name}: use .csv, .xlsx or .txt",
                             f"读不了 {path.name}：请上传 .csv、.xlsx 或 .txt 文件")
    if header and rows:
        return ReviewsTable(rows[1:], rows[0], path.name, notice)
    return ReviewsTable(rows, None, path.name, notice)


def pasted_table(text: str, max_rows: int = MAX_ROWS) -> ReviewsTable:
    """Pasted text as a one-column table, one review per line (at most max_rows, as read_table)."""
    name = "粘贴的评论"
    rows, notice = _bounded_rows(([line] for line in _line_iter(text or "")), max_rows, max_rows, name)
    return ReviewsTable(rows, None, name, notice)


def labelled_csv(table: ReviewsTable, results: Sequence[Sentiment | UserInputError | None]) -> bytes:
    """The table with LABEL_COLUMNS appended to each row, as CSV in UTF-8 with a BOM (Excel reads it as Chinese)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    width = table.width
    names = table.header if table.header is not None else (["文本"] if width == 1 else table.column_names())
    writer.writerow([neutralised(c) for c in list(names) + [""] * (width - len(names)) + list(LABEL_COLUMNS)])
    for row, result in zip(table.rows, results):
        writer.writerow([neutralised(c) for c in list(row) + [""] * (width - len(row)) + label_cells(result)])
    return out.getvalue().encode("utf-8-sig")


def neutralised(cell: str) -> str:
    """The cell as written to a file: with a leading ' where a spreadsheet would run it as a formula."""
    if (cell[:1] in ("\t", "\r") or cell.lstrip()[:1] in _FORMULA_START) and not _PLAIN_NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


def label_cells(result: Sentiment | UserInputError | None) -> list[str]:
    """The appended cells of one row: label, confidence, uncertain, and why a row was not read."""
    if isinstance(result, Sentiment):
        return [result.label, f"{result.confidence:.4f}", "是" if result.uncertain else "否", ""]
    return ["", "", "", batch_note(result)]


def _decode(data: bytes) -> str:
    for encoding in ENCODINGS:
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise UserInputError("the file is neither UTF-8 nor GB18030 text", "文件编码无法识别：请另存为 UTF-8 编码")


def _line_iter(text: str) -> Iterable[str]:
    # One line at a time: text.splitlines() of 8 MB of newlines would be 8 million strings at once.
    for line in io.StringIO(text, newline=None):
        yield line.rstrip("\n")


def _csv_lines(text: str) -> Iterable[list[str]]:
    # The delimiter is the one the first line (the header, usually) uses most: reviews themselves are
    # full of commas and semicolons, which make csv.Sniffer guess wrong.
    first = text.split("\n", 1)[0]
    delimiter = max(",\t;", key=first.count) if any(d in first for d in ",\t;") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        yield from reader
    except csv.Error as exc:  # a field over csv's 128 KiB limit, a stray quote
        raise UserInputError(f"cannot read line {reader.line_num} as CSV: {exc}",
                             f"读不了第 {reader.line_num} 行：CSV 格式不对（或一格内容过长）") from None


def _xlsx_rows(path: Path, keep: int, limit: int) -> tuple[list[list[str]], str]:
    import openpyxl  # only the batch tab's .xlsx files need it

    try:
        with zipfile.ZipFile(path) as archive:
            unzipped = sum(info.file_size for info in archive.infolist())
        if unzipped > MAX_XLSX_UNZIPPED_BYTES:
            raise _too_big(path.name, unzipped, MAX_XLSX_UNZIPPED_BYTES, unzipped=True)
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except UserInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile and openpyxl raise many kinds for a file that is not a workbook
        raise UserInputError(f"cannot read {path.name} as an .xlsx workbook: {exc}",
                             f"读不了 {path.name}：不是有效的 .xlsx 文件") from None
    try:
        # max_row bounds the rows openpyxl makes (it fills a gap up to a far row with empty ones); max_col
        # the width of each, one past MAX_COLUMNS so that a filled cell there is seen and refused.
        cells = book.worksheets[0].iter_rows(max_row=keep + MAX_BLANK_RUN, max_col=MAX_COLUMNS + 1,
                                             values_only=True)
        return _bounded_rows((_xlsx_cells(row) for row in cells), keep, limit, path.name)
    finally:
        book.close()


def _xlsx_cells(row: tuple) -> list[str]:
    """A sheet row as text, without the empty cells at its end (iter_rows pads every row to max_col)."""
    end = len(row)
    while end and row[end - 1] is None:
        end -= 1
    return ["" if c is None else str(c) for c in row[:end]]


def _bounded_rows(rows: Iterable[list[str]], keep: int, limit: int, name: str) -> tuple[list[list[str]], str]:
    """At most keep rows (limit of them data), trailing blank ones dropped, and a notice if reading stopped early.

    A filled row after keep rows refuses the file; blank rows are counted, not held, until a filled one follows.
    """
    kept: list[list[str]] = []
    blank = 0  # blank rows since the last filled one
    for row in rows:
        if len(row) > MAX_COLUMNS:
            if any(c.strip() for c in row[MAX_COLUMNS:]):
                raise UserInputError(f"{name} has more than {MAX_COLUMNS} columns",
                                     f"列数太多：{name} 超过 {MAX_COLUMNS} 列，请只保留需要的列")
            row = row[:MAX_COLUMNS]
        if not any(c.strip() for c in row):
            blank += 1
            if blank >= MAX_BLANK_RUN:
                read = f"只读取了前 {len(kept)} 行：之后" if kept else "文件开头"
                return kept, (f"{read}连续 {blank} 行都是空行，没有再往下读。"
                              "如果后面还有评论，请删去中间的空行后重新上传")
            continue
        if len(kept) + blank >= keep:
            raise UserInputError(f"too many texts in {name}: more than {limit}; the limit is {limit} per batch",
                                 f"条数太多：{name} 超过 {limit} 条，每批最多 {limit} 条，请分成几批",
                                 "too_many_texts")
        kept.extend([] for _ in range(blank))
        blank = 0
        kept.append(row)
    return kept, ""


def _too_big(name: str, size: int, limit: int, unzipped: bool = False) -> UserInputError:
    mb, limit_mb = size / 2**20, limit / 2**20
    what = "解压后" if unzipped else ""
    return UserInputError(f"{name} is too large: {mb:.0f} MiB{' unzipped' if unzipped else ''}; "
                          f"the limit is {limit_mb:.0f} MiB",
                          f"文件过大：{name} {what}约 {mb:.0f} MB，上限 {limit_mb:.0f} MB；"
                          "请只保留需要分析的行和列，或分成几个文件")
