"""The page's second tab, 批量分析: many reviews from a file or pasted lines, labelled in slices, with a CSV back."""

from __future__ import annotations

import shutil
import tempfile
import threading
import uuid
import time
from pathlib import Path
from typing import Any, Sequence

import gradio as gr
import pandas as pd

from pipeline import LABELS, Sentiment, UserInputError
from pipeline.batch import BatchProgress

from ..client_key import session_key
from ..gate import Cancelled, Job
from ..service import ModelService
from .batch_files import MAX_ROWS, SUFFIXES, ReviewsTable, label_cells, labelled_csv, pasted_table, read_table
from .render import LABEL_COLORS, NOT_READ, NOT_READ_COLOR

TABLE_HEADERS = ["行", "文本", "情感", "置信度", "拿不准", "备注"]
# Confidence is the chosen label's probability, so it lies in [1 / number of labels, 1]: five equal bins.
_FLOOR = 1 / len(LABELS)
CONFIDENCE_BINS = [(_FLOOR + (1 - _FLOOR) * k / 5, _FLOOR + (1 - _FLOOR) * (k + 1) / 5) for k in range(5)]
BIN_NAMES = [f"{low * 100:.0f}–{high * 100:.0f}%" for low, high in CONFIDENCE_BINS]
CATEGORIES = [*LABELS, NOT_READ]
COLORS = {**LABEL_COLORS, NOT_READ: NOT_READ_COLOR}
EXCERPT_CHARS = 80
# How long a labelled CSV is kept for its download (ours here; Gradio's copies by the page's delete_cache).
KEEP_RESULTS_S = 3600
STARTING = "正在读取并分析…"


class BatchRun:
    """One tab's batch in progress (kept in gr.State): Stop cancels its job."""

    def __init__(self) -> None:
        self.client = session_key(uuid.uuid4().hex)  # the gate's client: each tab is one
        self.job: Job | None = None
        self._lock = threading.Lock()

    def __deepcopy__(self, memo) -> "BatchRun":
        return BatchRun()  # gr.State copies the empty initial value for each tab

    def start(self) -> Job:
        """A new job for the next batch (the previous one is cancelled)."""
        with self._lock:
            if self.job is not None:
                self.job.cancel()
            self.job = Job(self.client)
            return self.job

    def cancel(self) -> None:
        """Stop the batch running, if any (between two slices)."""
        with self._lock:
            job = self.job
        if job is not None:
            job.cancel()


def batch_limit(service: ModelService) -> int:
    """Most texts in one batch (BATCH_MAX_TEXTS), the default until the model is loaded."""
    return service.engine.settings.batch_max_texts if service.engine is not None else MAX_ROWS


def source_table(file: str | None, header: bool, pasted: str | None, max_rows: int = MAX_ROWS) -> ReviewsTable:
    """The table to label: the uploaded file if any, else the pasted lines; UserInputError if there is neither.

    Reading stops past max_rows rows (the batch's limit: the file is refused) or a long run of blank rows
    (kept: table.notice says so).
    """
    if file:
        return read_table(file, header=header, max_rows=max_rows)
    if pasted and pasted.strip():
        return pasted_table(pasted, max_rows=max_rows)
    raise UserInputError("no file and no pasted text", "请先上传文件，或粘贴评论（每行一条）")


def describe_source(file: str | None, header: bool, pasted: str | None, max_rows: int = MAX_ROWS):
    """On upload or paste: the column choices (the first text column picked) and what will be read."""
    try:
        table = source_table(file, header, pasted, max_rows)
    except UserInputError as exc:
        return gr.update(choices=[], value=None, interactive=False), (exc.chinese if file else "")
    if not file:  # pasted lines: one column, nothing to choose; the count says what Start will read
        return gr.update(choices=[], value=None, interactive=False), f"**{table.name}**：{len(table.rows)} 行"
    names = table.column_names()
    choices = [(name, i) for i, name in enumerate(names)]
    column = table.text_column()
    what = f"**{table.name}**：{len(table.rows)} 行"
    if len(names) > 1:
        what += f"，{len(names)} 列；分析「{names[column]}」列（可在上面改）"
    if table.notice:
        what += f"\n\n{table.notice}"
    return gr.update(choices=choices, value=column, interactive=len(names) > 1), what


def results_frame(texts: Sequence[str], results: Sequence[Sentiment | UserInputError | None]) -> pd.DataFrame:
    """The results table: row number, the text (cut to EXCERPT_CHARS), label, confidence, uncertain, note."""
    rows = []
    for i, (text, result) in enumerate(zip(texts, results), start=1):
        label, confidence, uncertain, note = label_cells(result)
        if isinstance(result, Sentiment):  # the page shows a percentage (one short line on a phone); the CSV keeps 4 decimals
            confidence = f"{result.confidence:.0%}"
        shown = text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "…"
        rows.append([i, shown, label, confidence, uncertain, note])
    return pd.DataFrame(rows, columns=TABLE_HEADERS)


def label_counts(results: Sequence[Any]) -> pd.DataFrame:
    """Rows per label, and rows not read (refused or stopped), for the bar chart."""
    labels = [r.label if isinstance(r, Sentiment) else NOT_READ for r in results]
    return pd.DataFrame({"类别": CATEGORIES, "条数": [labels.count(c) for c in CATEGORIES]})


def confidence_histogram(results: Sequence[Any]) -> pd.DataFrame:
    """Labelled rows per confidence bin and label, for the histogram (stacked by label)."""
    rows = []
    for name, (low, high) in zip(BIN_NAMES, CONFIDENCE_BINS):
        for label in LABELS:
            count = sum(isinstance(r, Sentiment) and r.label == label
                        and (low <= r.confidence < high or (high >= 1.0 and r.confidence >= 1.0)) for r in results)
            rows.append({"置信度": name, "情感": label, "条数": count})
    return pd.DataFrame(rows)


def summary_text(progress: BatchProgress, stopped: bool, seconds: float) -> str:
    """One line: how many were labelled, how many each way, how many refused, and the time taken."""
    labelled = [r for r in progress.results if isinstance(r, Sentiment)]
    parts = [f"{label} {sum(r.label == label for r in labelled)} 条" for label in LABELS]
    parts.append(f"其中拿不准 {sum(r.uncertain for r in labelled)} 条")
    line = f"已分析 {len(labelled)} / {progress.total} 条（{'，'.join(parts)}）"
    # Every row not labelled is counted, as the 各类条数 chart counts it: refused rows and, after Stop, the
    # rows the batch did not reach.
    not_read = progress.total - len(labelled)
    if not_read:
        why = [f"{n} 条{what}" for n, what in ((progress.refused, "空行或过长"),
                                               (not_read - progress.refused, "因停止未分析")) if n]
        line += f"；{not_read} 条未分析（{'，'.join(why)}，见“备注”列）"
    if stopped:
        line = "已停止。" + line
    rate = len(labelled) / seconds if seconds > 0 else 0
    return line + f"，用时 {seconds:.1f} 秒（每秒 {rate:.1f} 条）"


def write_download(table: ReviewsTable, results: Sequence[Any], root: Path | None = None) -> str:
    """The labelled CSV in a fresh folder under root (Gradio serves a copy from its cache); its path.

    Result folders older than KEEP_RESULTS_S are removed first, so a long-running app keeps a bounded number.
    """
    root = root or Path(tempfile.gettempdir()) / "qwen-allinone-results"
    root.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in root.iterdir():
        if old.is_dir() and now - old.stat().st_mtime > KEEP_RESULTS_S:
            shutil.rmtree(old, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(dir=root))
    path = folder / f"{Path(table.name).stem}-情感分析.csv"
    path.write_bytes(labelled_csv(table, results))
    return str(path)


def eta_text(done: int, total: int, started: float, first_done: int) -> str:
    """Progress words: done of total, and the time left at the rate so far."""
    elapsed = time.perf_counter() - started
    rate = (done - first_done) / elapsed if elapsed > 0 and done > first_done else 0
    left = f"，预计还需 {max(1, round((total - done) / rate))} 秒" if rate else ""
    return f"已完成 {done} / {total} 条{left}"


def run_batch(service: ModelService, run: BatchRun, file, header, column, pasted, progress=None):
    """Label the chosen column of every row; returns the page's outputs (summary, charts, table, download)."""
    try:
        table = source_table(file, header, pasted, batch_limit(service))
        column = int(column or 0) if table.width > 1 else 0
        texts = table.texts(column)
        steps = service.classify_many(texts, run.start())
    except UserInputError as exc:  # nothing to read, too many rows, or a full line
        return _outputs(notice=exc.chinese)
    started, state, stopped, first = time.perf_counter(), None, False, None
    try:
        for state in steps:
            first = state.done if first is None else first  # the refused rows, done before any slice
            if progress is not None:
                progress((state.done, state.total), desc=eta_text(state.done, state.total, started, first), unit="条")
    except Cancelled:
        stopped = True
    finally:
        steps.close()
    if state is None:
        return _outputs(notice="已停止")
    seconds = time.perf_counter() - started
    return _outputs(notice=table.notice, summary=summary_text(state, stopped, seconds), counts=label_counts(state.results),
                    histogram=confidence_histogram(state.results), frame=results_frame(texts, state.results),
                    download=write_download(table, state.results))


def _outputs(notice: str = "", summary: str = "", counts=None, histogram=None, frame=None, download=None):
    shown = download is not None
    return (notice, summary, gr.update(value=counts, visible=shown), gr.update(value=histogram, visible=shown),
            gr.update(value=frame, visible=shown), gr.update(value=download, visible=shown),
            gr.update(interactive=True), gr.update(interactive=False))


def build_batch_tab(service: ModelService) -> None:
    """The tab's components and events (call inside a gr.Tab of the page's Blocks)."""
    run = gr.State(BatchRun(), delete_callback=lambda r: r.cancel())
    limit = batch_limit(service)
    gr.Markdown(f"上传评论文件或粘贴评论，一次分析多条（每批最多 {limit} 条）" +
                "。结果可下载为 CSV：原来的每一行都在，后面加上情感、置信度等列。", elem_id="batch-intro")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            upload = gr.File(label="上传文件：.csv / .xlsx / .txt（每行一条）", file_types=list(SUFFIXES),
                             type="filepath", elem_id="batch-file", height=120)
            pasted = gr.Textbox(label="或者粘贴评论，每行一条", lines=5, max_lines=12, elem_id="batch-pasted")
        with gr.Column(scale=2, min_width=240):
            header = gr.Checkbox(True, label="文件首行是列名", elem_id="batch-header")
            column = gr.Dropdown(label="评论所在的列", choices=[], interactive=False, elem_id="batch-column")
            info = gr.Markdown(elem_id="batch-info")
            with gr.Row():
                start = gr.Button("开始分析", variant="primary", elem_id="batch-start")
                stop = gr.Button("停止", variant="stop", interactive=False, elem_id="batch-stop")
    notice = gr.Markdown(elem_id="batch-notice")
    summary = gr.Markdown(elem_id="batch-summary")
    with gr.Row():
        # Counts start at 0 (y_lim): Vega-Lite's scale otherwise starts at the smallest count, and a bar
        # as short as the smallest one is not drawn at all.
        counts = gr.BarPlot(x="类别", y="条数", color="类别", color_map=COLORS, title="各类条数", visible=False,
                            elem_id="batch-counts", sort=CATEGORIES, height=260, y_lim=[0, None])
        histogram = gr.BarPlot(x="置信度", y="条数", color="情感", color_map=COLORS, title="置信度分布",
                               visible=False, elem_id="batch-histogram", height=260,
                               sort=BIN_NAMES, y_lim=[0, None])
    download = gr.DownloadButton("下载结果 CSV", visible=False, elem_id="batch-download", variant="primary")
    frame = gr.Dataframe(headers=TABLE_HEADERS, visible=False, interactive=False, wrap=True, max_height=480,
                         column_widths=["44px", "45%", "56px", "72px", "64px", "22%"], elem_id="batch-table")

    # Pasting says how many rows it holds, as an upload does (on change: also typing, also emptying).
    for trigger in (upload.change, header.change, pasted.change):
        trigger(lambda file, header_row, text: describe_source(file, header_row, text, limit),
                inputs=[upload, header, pasted], outputs=[column, info], queue=False, api_visibility="private")

    def on_start(file, header_row, chosen, text, state, progress=gr.Progress()):  # noqa: B008 - Gradio's own way to ask for a bar
        return run_batch(service, state, file, header_row, chosen, text, progress)

    begun = start.click(lambda: (gr.update(interactive=False), gr.update(interactive=True), "", STARTING),
                        outputs=[start, stop, notice, summary], queue=False, api_visibility="private")
    # The progress bar goes on the summary line alone: it is the one output always in view (the charts
    # and the table are hidden until the end).
    begun.then(on_start, inputs=[upload, header, column, pasted, run],
               outputs=[notice, summary, counts, histogram, frame, download, start, stop],
               concurrency_limit=None, api_visibility="private", show_progress="full", show_progress_on=[summary])
    stop.click(lambda state: state.cancel(), inputs=[run], queue=False, api_visibility="private")
