"""Many reviews at once: the same labels as one by one, slices, bad rows, the line, /api/classify, files."""

from __future__ import annotations

import csv
import io
import json
import threading

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.gate import Busy, Cancelled, Job
from app.service import ModelService
from app.ui import batch_files
from pipeline import Mode, Sentiment, UserInputError
from pipeline.batch import SLICE_TOKENS, classify_many, plan_slices
from pipeline.messages import refusal
from tests.fakes import FakeEngine
from app.http_api import api_router

# Reviews of very different lengths (1 to about 100 tokens; the tiny model takes 128), so one slice pads short ones a lot.
REVIEWS = [
    "好", "太差了", "物流很快，包装也很好，下次还会再来买。", "一般般吧",
    "这家店的服务态度非常恶劣，等了一个多小时才上菜，菜还是凉的，再也不来了。" * 2,
    "东西收到了，和描述的一样，性价比很高，推荐！" * 3, "质量不行", "😀👍", "a", "Great product, works well.",
]


def test_classify_many_gives_the_labels_and_confidences_of_one_by_one(tiny_engine):
    alone = [tiny_engine.classify(text) for text in REVIEWS]
    for batch_size in (1, 3, 16):
        together = tiny_engine.classify_many(REVIEWS, batch_size=batch_size)
        assert [r.label for r in together] == [r.label for r in alone], batch_size
        for a, b in zip(alone, together):
            assert b.confidence == pytest.approx(a.confidence, abs=1e-4)
            assert b.scores[b.label] == pytest.approx(a.scores[b.label], abs=1e-4)


def test_batch_log_odds_match_one_by_one_to_float_rounding(tiny_engine):
    """Row by row, the padded batch computes what each review computes alone (mask and positions right)."""
    scorer = tiny_engine.sentiment
    ids = [tiny_engine.review_ids(text) for text in REVIEWS]
    together = scorer.batch_log_odds(ids)
    for row, one in zip(together, ids):
        assert row.tolist() == pytest.approx(scorer.question_log_odds(one).tolist(), abs=1e-4)


@pytest.mark.parametrize("lengths, batch_size, tokens, expected", [
    ([5, 1, 3], 8, 1024, [[1, 2, 0]]),                      # sorted by length, one slice
    ([5, 1, 3, 2], 2, 1024, [[1, 3], [2, 0]]),             # at most batch_size rows
    ([10, 10, 10, 10], 8, 25, [[0, 1], [2, 3]]),           # at most `tokens` padded tokens: 2 x 10 <= 25 < 3 x 10
    ([100, 1, 1], 8, 50, [[1, 2], [0]]),                   # a long text goes alone, past the cap
    ([], 8, 1024, []),
])
def test_plan_slices(lengths, batch_size, tokens, expected):
    assert plan_slices(lengths, batch_size, tokens) == expected


def test_plan_slices_covers_every_index_once():
    lengths = [(i * 37) % 101 + 1 for i in range(500)]
    slices = plan_slices(lengths, 16)
    assert sorted(i for s in slices for i in s) == list(range(500))
    assert all(len(s) <= 16 and len(s) * max(lengths[i] for i in s) <= max(SLICE_TOKENS, max(lengths)) for s in slices)


def test_bad_rows_are_marked_in_place_and_the_rest_labelled(tiny_engine):
    long_text = "很好" * 2000
    texts = ["很好", "", "   ", long_text, 42, None, "太差了"]
    results = tiny_engine.classify_many(texts)
    assert [type(r) for r in results] == [Sentiment, UserInputError, UserInputError, UserInputError,
                                          UserInputError, UserInputError, Sentiment]
    assert "empty" in str(results[1]) and "too long" in str(results[3]) and "must be a string" in str(results[4])
    assert results[3].chinese.startswith("内容过长")
    assert results[0].label == tiny_engine.classify("很好").label


def test_too_many_or_no_texts_are_refused_before_any_work():
    engine = FakeEngine(batch_max_texts=3)
    with pytest.raises(UserInputError, match="too many texts: 4; the limit is 3") as refused:
        classify_many(engine, ["a"] * 4)
    assert refused.value.key == "too_many_texts"
    with pytest.raises(UserInputError, match="empty"):
        classify_many(engine, [])
    assert engine.calls == []


def test_progress_counts_refused_rows_first_then_each_slice():
    engine = FakeEngine(batch_size=2)
    steps = list(step.done for step in classify_many(engine, ["好", "", "差", "好", "还行"]))
    assert steps == [1, 3, 5]
    assert [call[0] for call in engine.calls] == ["classify_batch", "classify_batch"]


def _paced_service(**kwargs):
    slice_gate = threading.Event()
    engine = FakeEngine(slice_gate=slice_gate, **kwargs)
    return ModelService(engine, max_waiting=4), engine, slice_gate


def _run_in_thread(fn):
    out = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def _next_slice(engine, slice_gate):
    assert engine.slicing.wait(5)
    engine.slicing.clear()
    slice_gate.set()


def test_cancel_stops_the_batch_between_two_slices():
    service, engine, slice_gate = _paced_service(batch_size=1)
    job = Job()
    steps = service.classify_many(["好", "差", "好", "差"], job)
    thread, out = _run_in_thread(lambda: [step.done for step in steps])
    _next_slice(engine, slice_gate)  # slice 1 runs
    assert engine.slicing.wait(5)  # slice 2 started; cancel while it runs
    job.cancel()
    slice_gate.set()
    thread.join(5)
    assert isinstance(out.get("error"), Cancelled)
    assert len([c for c in engine.calls if c[0] == "classify_batch"]) == 2
    assert service.gate.waiting == 0 and not service.gate.busy


def test_a_reply_asked_during_a_batch_goes_before_its_next_slice():
    service, engine, slice_gate = _paced_service(batch_size=1)
    batch_job = Job()
    steps = service.classify_many(["好", "差", "好"], batch_job)
    thread, out = _run_in_thread(lambda: [step.done for step in steps])
    assert engine.slicing.wait(5)  # slice 1 holds the model
    engine.slicing.clear()
    reply = service.run(service.prepare("你好", mode=Mode.CHAT), Job())
    waiting = next(reply)  # the reply asks for its turn while slice 1 runs
    assert (waiting.waiting_for, waiting.ahead) == ("reply", 1)
    slice_gate.set()  # slice 1 ends: the reply goes next, before slice 2
    *_, answer = reply
    assert answer.stream.text == "回复：你好"
    assert [call[0] for call in engine.calls][:2] == ["classify_batch", "chat"]
    for _ in range(2):
        _next_slice(engine, slice_gate)
    thread.join(5)
    assert out["value"] == [0, 1, 2, 3]


def test_a_batch_counts_as_one_in_the_line():
    service, engine, slice_gate = _paced_service()
    service.gate.max_waiting = 1
    job = Job()
    service.classify_many(["好"], job)
    with pytest.raises(Busy):
        service.classify_many(["好"], Job())
    job.cancel()  # a batch never started leaves the line when its job is cancelled
    assert service.gate.waiting == 0


# -- POST /api/classify --------------------------------------------------------------------------------------

@pytest.fixture
def client():
    app = FastAPI()
    app.include_router(api_router(ModelService(FakeEngine(batch_max_texts=5), 4), max_batch_body_bytes=4096))
    return TestClient(app)


def test_api_classify_answers_each_text_in_order(client):
    response = client.post("/api/classify", json={"texts": ["质量很好", "", "太差了", 3]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["emotion_label"] for r in body["results"]] == ["正面", None, "负面", None]
    assert body["results"][0] == {"emotion_label": "正面", "confidence": 0.9, "uncertain": False, "error": None}
    assert "empty" in body["results"][1]["error"] and "must be a string" in body["results"][3]["error"]
    assert (body["labelled"], body["refused"]) == (2, 2)
    assert body["inference_time_ms"] >= 0


@pytest.mark.parametrize("body, status, message", [
    (json.dumps({"texts": ["好"] * 6}), 413, "too many texts: 6; the limit is 5"),
    (json.dumps({"texts": ["好" * 2000]}), 413, "the body is too large; the limit is 4096 bytes"),
    (json.dumps({"texts": "好"}), 400, '"texts" must be a list of strings, not a string'),
    (json.dumps({"texts": []}), 400, '"texts" is empty'),
    (json.dumps({"text": "好"}), 400, "unknown fields text"),
    (json.dumps({}), 400, '"texts" is required'),
    ("{", 400, "not valid JSON"),
])
def test_api_classify_refuses_bad_bodies(client, body, status, message):
    response = client.post("/api/classify", content=body.encode(), headers={"content-type": "application/json"})
    assert response.status_code == status
    assert message in response.json()["error"]


def test_api_classify_wants_post(client):
    response = client.get("/api/classify")
    assert response.status_code == 405 and "texts" in response.json()["error"]


# -- files --------------------------------------------------------------------------------------------------

def test_csv_in_gbk_with_a_header_finds_the_review_column(tmp_path):
    path = tmp_path / "export.csv"
    path.write_bytes("编号,评论,评分\n1,\"好吃，但是贵, 很贵\",5\n2,太差了,1\n3,,2\n\n".encode("gb18030"))
    table = batch_files.read_table(path)
    assert table.header == ["编号", "评论", "评分"]
    assert table.text_column() == 1
    assert table.texts(1) == ["好吃，但是贵, 很贵", "太差了", ""]


def test_tab_separated_and_headerless_files(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("id\ttext\n7\t很好，推荐\n", encoding="utf-8")
    assert batch_files.read_table(path).texts(1) == ["很好，推荐"]
    assert batch_files.read_table(path, header=False).column_names() == ["第 1 列", "第 2 列"]


def test_txt_keeps_blank_lines_inside_and_drops_trailing_ones(tmp_path):
    path = tmp_path / "r.txt"
    path.write_text("很好\n\n太差\n\n\n", encoding="utf-8")
    assert batch_files.read_table(path).texts(0) == ["很好", "", "太差"]


def test_xlsx_is_read(tmp_path):
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    for row in (["日期", "内容"], ["2026-01-01", "物流很快"], ["2026-01-02", None]):
        sheet.append(row)
    book.save(tmp_path / "r.xlsx")
    table = batch_files.read_table(tmp_path / "r.xlsx")
    assert table.header == ["日期", "内容"] and table.text_column() == 1
    assert table.texts(1) == ["物流很快", ""]


def test_unreadable_files_are_refused_in_both_languages(tmp_path):
    bad = tmp_path / "x.xlsx"
    bad.write_bytes(b"not a workbook")
    with pytest.raises(UserInputError) as refused:
        batch_files.read_table(bad)
    assert "不是有效的 .xlsx" in refused.value.chinese
    with pytest.raises(UserInputError, match="use .csv, .xlsx or .txt"):
        batch_files.read_table(tmp_path / "x.pdf")


def test_labelled_csv_keeps_every_row_and_appends_the_labels():
    table = batch_files.ReviewsTable([["1", "很好"], ["2", ""], ["3"]], ["id", "评论"], "t.csv")
    results = [Sentiment("正面", 0.91234, 1.0, {}), refusal("empty", what="text"), None]
    data = batch_files.labelled_csv(table, results)
    assert data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert rows[0] == ["id", "评论", *batch_files.LABEL_COLUMNS]
    assert rows[1] == ["1", "很好", "正面", "0.9123", "否", ""]
    assert rows[2] == ["2", "", "", "", "", "空行，未分析"]  # what happened to the row, not chat advice
    assert rows[3] == ["3", "", "", "", "", "未分析（已停止）"]


def test_labelled_files_older_than_an_hour_are_removed_when_a_new_one_is_written(tmp_path):
    import os
    import time

    from app.ui import batch_tab

    table = batch_files.ReviewsTable([["很好"]], None, "r.txt")
    old = batch_tab.write_download(table, [None], root=tmp_path)
    recent = batch_tab.write_download(table, [None], root=tmp_path)
    hour_ago = time.time() - batch_tab.KEEP_RESULTS_S - 60
    os.utime(os.path.dirname(old), (hour_ago, hour_ago))
    new = batch_tab.write_download(table, [None], root=tmp_path)
    assert not os.path.exists(old) and os.path.exists(recent) and os.path.exists(new)
    assert new.endswith("r-情感分析.csv")


def test_texts_that_are_not_a_list_are_refused_before_any_work():
    """A string would otherwise be labelled character by character (the gradio_client endpoint takes any JSON)."""
    engine = FakeEngine()
    with pytest.raises(UserInputError, match='"texts" must be a list of strings, not a string') as refused:
        classify_many(engine, "很好")
    assert refused.value.key == "texts_not_list" and engine.calls == []
