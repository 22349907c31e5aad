"""Upload bombs against the batch tab's reader: peak memory, time and outcome of read_table on each.

python -m bench.upload_bombs  ->  bench/results/upload-bombs.json. Each file is read in a fresh child process, so
its peak RSS (ru_maxrss of the child) is the reader's alone, the interpreter and openpyxl included.
"""

from __future__ import annotations

import io
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "upload-bombs.json"
UPLOAD_LIMIT = 8 * 1000 * 1000  # the page's max_file_size, "8mb"
_NS = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_CT = "application/vnd.openxmlformats-officedocument.spreadsheetml"


def xlsx_bytes(rows_xml: str | bytes | None = None, dimension: str = "A1", shared: list[str] | None = None,
               chunks: object = None) -> bytes:
    """A minimal .xlsx, built by hand so a bomb costs seconds: sheet rows (or chunks, an iterable of bytes), shared strings."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        strings = f'<Override PartName="/xl/sharedStrings.xml" ContentType="{_CT}.sharedStrings+xml"/>'
        z.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/'
                   'package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats'
                   '-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override '
                   f'PartName="/xl/workbook.xml" ContentType="{_CT}.sheet.main+xml"/><Override PartName="/xl/'
                   f'worksheets/sheet1.xml" ContentType="{_CT}.worksheet+xml"/>{strings if shared else ""}</Types>')
        z.writestr("_rels/.rels", '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/'
                   f'package/2006/relationships"><Relationship Id="rId1" Type="{_REL}/officeDocument" '
                   'Target="xl/workbook.xml"/></Relationships>')
        z.writestr("xl/workbook.xml", f'<?xml version="1.0"?><workbook {_NS} xmlns:r="{_REL}"><sheets><sheet '
                   'name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>')
        rel = f'<Relationship Id="rId%d" Type="{_REL}/%s" Target="%s"/>'
        z.writestr("xl/_rels/workbook.xml.rels", '<?xml version="1.0"?><Relationships xmlns="http://schemas.'
                   'openxmlformats.org/package/2006/relationships">' + rel % (1, "worksheet", "worksheets/sheet1.xml")
                   + (rel % (2, "sharedStrings", "sharedStrings.xml") if shared else "") + "</Relationships>")
        if shared:
            with z.open("xl/sharedStrings.xml", "w", force_zip64=True) as f:
                f.write(f'<?xml version="1.0"?><sst {_NS}>'.encode())
                for s in shared:
                    f.write(b"<si><t>" + s.encode() + b"</t></si>")
                f.write(b"</sst>")
        with z.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as f:
            f.write(f'<?xml version="1.0"?><worksheet {_NS}><dimension ref="{dimension}"/><sheetData>'.encode())
            for chunk in chunks if chunks is not None else [rows_xml or ""]:
                f.write(chunk.encode() if isinstance(chunk, str) else chunk)
            f.write(b"</sheetData></worksheet>")
    return out.getvalue()


def _rows(n: int, text: str = "好评", start: int = 1, step: int = 100_000):
    """n rows of one inline-string cell, in chunks (a million rows are never one string here)."""
    for first in range(start, start + n, step):
        yield "".join(f'<row r="{i}"><c r="A{i}" t="inlineStr"><is><t>{text}{i}</t></is></c></row>'
                      for i in range(first, min(start + n, first + step)))


_FIRST_SHARED = '<row r="1"><c r="A1" t="s"><v>0</v></c></row>'


def bombs() -> dict[str, tuple[str, bytes]]:
    """Name -> (suffix, bytes) of each file tried."""
    return {
        "million-rows": (".xlsx", xlsx_bytes(dimension="A1:A1000000", chunks=_rows(1_000_000))),
        # 64 strings of 4 MiB each: 256 MiB of shared strings, all of which openpyxl would hold at once.
        "huge-shared-strings": (".xlsx", xlsx_bytes(_FIRST_SHARED, shared=["a" * (4 << 20)] * 64)),
        # Just under MAX_XLSX_UNZIPPED_BYTES: what the bound still lets openpyxl hold.
        "shared-strings-at-bound": (".xlsx", xlsx_bytes(_FIRST_SHARED, shared=["a" * (1 << 20)] * 62)),
        # One inline cell of 60 MiB in the sheet itself (not shared strings): parsed whole by the row parser.
        "inline-cell-at-bound": (".xlsx", xlsx_bytes(chunks=[next(_rows(1, "评论")), '<row r="2"><c r="A2" '
                                                     't="inlineStr"><is><t>', b"a" * (60 << 20), "</t></is></c></row>"])),
        # A million rows in the fewest bytes (no r attributes): under the bytes bound, so the rows bound stops it.
        "million-rows-compact": (".xlsx", xlsx_bytes(chunks=(f"<row><c><v>{i}</v></c></row>"
                                                             for i in range(1_000_000)))),
        # Rows that exist but hold nothing, to row 1,048,576 (formatted rows in a real export).
        "million-empty-rows": (".xlsx", xlsx_bytes(dimension="A1:A1048576", chunks=[next(_rows(10))] + [
            "".join(f'<row r="{i}" s="1" customFormat="1"/>' for i in range(k, min(k + 100_000, 1_048_577)))
            for k in range(11, 1_048_577, 100_000)])),
        # One cell at the last row: openpyxl fills the gap with a million empty rows.
        "last-row-gap": (".xlsx", xlsx_bytes(next(_rows(10)) + '<row r="1048576"><c r="A1048576" t="inlineStr">'
                                             '<is><t>x</t></is></c></row>', dimension="A1:XFD1048576")),
        # For scale: an ordinary full batch, 5,000 reviews of 100 characters with a header.
        "xlsx-5000-reviews": (".xlsx", xlsx_bytes(next(_rows(1, "评论")) + next(_rows(5000, "好" * 100, start=2)))),
        "csv-8mb-lines": (".csv", ("评论\n" + "".join(f"好评{i}\n" for i in range(1_000_000))).encode()[:UPLOAD_LIMIT]),
        "txt-8mb-newlines": (".txt", b"\n" * UPLOAD_LIMIT),
    }


def _child(path: str) -> None:
    from app.ui import batch_files

    started = time.perf_counter()
    try:
        table = batch_files.read_table(path)
        outcome = {"outcome": "read", "rows": len(table.rows), "notice": table.notice}
    except batch_files.UserInputError as exc:
        outcome = {"outcome": "refused", "notice": exc.chinese}
    outcome["read_s"] = round(time.perf_counter() - started, 3)
    outcome["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(outcome, ensure_ascii=False))


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    root = Path(__file__).resolve().parent.parent
    imports = "import resource, openpyxl, app.ui.batch_files; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    baseline = subprocess.run([sys.executable, "-c", imports],
                              cwd=root, capture_output=True, text=True, check=True)
    report = {"cpu": _cpu(), "python": platform.python_version(),
              "baseline_rss_mib": round(float(baseline.stdout), 1), "files": {}}
    with tempfile.TemporaryDirectory() as folder:
        for name, (suffix, data) in bombs().items():
            path = Path(folder) / f"{name}{suffix}"
            path.write_bytes(data)
            with zipfile.ZipFile(path) if suffix == ".xlsx" else open(path) as f:
                unzipped = sum(i.file_size for i in f.infolist()) if suffix == ".xlsx" else len(data)
            started = time.perf_counter()
            child = subprocess.run([sys.executable, "-m", "bench.upload_bombs", "--child", str(path)], cwd=root,
                                   capture_output=True, text=True, check=True)
            row = {"file_bytes": len(data), "unzipped_bytes": unzipped, **json.loads(child.stdout),
                   "wall_s_with_start": round(time.perf_counter() - started, 2)}
            report["files"][name] = row
            print(name, json.dumps(row, ensure_ascii=False))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    _child(sys.argv[2]) if sys.argv[1:2] == ["--child"] else main()
