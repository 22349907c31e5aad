"""The page in headless Chromium (Debian's chromium, driven by Playwright): what a user sees and does."""

from __future__ import annotations

import contextlib
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest
from gradio_client import Client

from tests.fakes import FakeEngine
from tests.served import RecordingEngine, serve, wait_until

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
LABEL = re.compile(r"^(😄 正面|😞 负面|😐 偏正面|😐 偏负面) \d{1,3}%$")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("chromium not found: `apt-get install -y chromium` (Debian) to run the browser tests")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield browser
        browser.close()


@contextlib.contextmanager
def tab(browser, app=None, **options):
    """A page in a browser context of its own (desktop size, zh-CN, unless options say otherwise), closed after;
    with app, the app open in it."""
    context = browser.new_context(**{"viewport": {"width": 1280, "height": 900}, "locale": "zh-CN", **options})
    try:
        page = context.new_page()
        if app is not None:
            open_app(page, app)
        yield page
    finally:
        context.close()


@pytest.fixture
def page(browser):
    with tab(browser) as page:
        page.set_default_timeout(30_000)
        page.requested = []
        page.on("request", lambda request: page.requested.append(request.url))
        yield page


def open_app(page, app) -> None:
    page.goto(app.local_url)
    page.wait_for_selector("#msg textarea")


@contextlib.contextmanager
def open_served(page, engine, **settings):
    """The app on engine (tests/served.py serve, with these settings), open in page."""
    with serve(engine, **settings) as app:
        open_app(page, app)
        yield app


def label(page) -> str:
    """The sentiment box's headline: the label, or what it waits for."""
    return page.inner_text("#sentiment .verdict").strip()


def chat_text(page) -> str:
    return page.inner_text("#chatbot")


def send(page, text: str) -> None:
    """Type a message into the input and send it with Enter."""
    page.fill("#msg textarea", text)
    page.press("#msg textarea", "Enter")


def wait_for_chat(page, text: str) -> None:
    """Until the chat shows text."""
    page.wait_for_function("text => document.querySelector('#chatbot').innerText.includes(text)", arg=text)


def wait_for_notice(page, text: str) -> None:
    """Until the notice under the input says text."""
    page.wait_for_function("text => document.querySelector('#notice').innerText.includes(text)", arg=text)


def hold_a_long_reply(page) -> None:
    """Switch the open page to chat-only and send a message whose reply streams until the engine's gate opens."""
    page.get_by_label("仅对话").check()
    send(page, "讲个长故事")
    wait_for_chat(page, "很长 ▌")


def test_a_message_gets_its_label_then_a_streamed_reply(page, tiny_engine):
    """The real engine (tiny model) end to end; the screenshot goes to test-artifacts/."""
    with open_served(page, tiny_engine) as app:
        send(page, "今天的实验终于成功了，太开心了！")
        wait_until(lambda: LABEL.match(label(page)), what="the sentiment label")
        page.wait_for_function("document.querySelector('#timing').innerText.includes('回复')")
        assert page.input_value("#msg textarea") == ""
        assert "今天的实验终于成功了，太开心了！" in chat_text(page)
        assert "⏱" in chat_text(page)  # each answer shows its inference time
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-chat.png"), full_page=True)
        own = urlparse(app.local_url).netloc
    hosts = {urlparse(url).netloc for url in page.requested if not url.startswith(("data:", "blob:"))}
    assert hosts == {own}, f"the page asked other hosts: {hosts - {own}}"


class SlowLabels(RecordingEngine):
    """The real engine with a label that takes about what the real model's does (a few hundred ms)."""

    def classify(self, text):
        threading.Event().wait(0.3)
        return super().classify(text)


def test_sentiment_only_messages_stay_in_the_chat(page, tiny_engine):
    """The real engine (tiny model): sentiment-only turns, then a full one; every message stays shown.

    Before the fix, the reply event of a sentiment-only message yielded nothing and Gradio blanked the chat.
    """
    with open_served(page, SlowLabels(tiny_engine)):
        page.get_by_label("仅情感分析").check()
        for text in ("第一条：物流很快。", "第二条：包装破了。"):
            send(page, text)
            wait_until(lambda: text in chat_text(page) and LABEL.match(label(page)), what=f"{text} and its label")  # noqa: B023 - waited on in this iteration
        page.get_by_label("情感 + 对话").check()
        send(page, "第三条：你好")
        page.wait_for_function("document.querySelector('#timing').innerText.includes('回复')")
        shown = chat_text(page)
        assert all(t in shown for t in ("第一条：物流很快。", "第二条：包装破了。", "第三条：你好")), shown
        assert len(re.findall(r"(😄 正面|😞 负面|😐 偏正面|😐 偏负面) \d{1,3}%", shown)) == 3, shown


def test_a_message_sent_while_a_reply_streams_is_answered_and_nothing_is_lost(page):
    """Issue 13's lost conversation: a sentiment-only message sent mid-reply. Gradio's default dropped a
    Send while the previous one ran, so it never arrived; before that, the chat emptied when the reply ended."""
    gate = threading.Event()
    engine = FakeEngine(gate=gate, reply_pieces=["天气", "好", "就出去走走吧。"])
    with open_served(page, engine):
        send(page, "今天天气真好，心情也不错。")
        wait_for_chat(page, "天气 ▌")
        page.get_by_label("仅情感分析").check()
        send(page, "物流很快，五星好评！")
        wait_for_chat(page, "物流很快，五星好评！")
        assert page.input_value("#msg textarea") == ""
        gate.set()
        wait_for_chat(page, "天气好就出去走走吧。")
        wait_until(lambda: chat_text(page).count("正面 90%") == 2, what="both labels in the chat")
        shown = chat_text(page)
        assert all(t in shown for t in ("今天天气真好，心情也不错。", "物流很快，五星好评！", "天气好就出去走走吧。")), shown
        assert "▌" not in shown and "…" not in shown


def test_a_mixed_review_is_shown_as_leaning_not_as_a_verdict(page):
    """An uncertain label reads "😐 偏负面 58%" in the side box and in the chat."""
    with open_served(page, FakeEngine()):
        page.get_by_label("仅情感分析").check()
        send(page, "还行吧，就是物流有点差")
        wait_until(lambda: label(page) == "😐 偏负面 58%", what="the uncertain label")
        wait_until(lambda: "😐 偏负面 58%" in chat_text(page), what="the label in the chat")


def test_the_reply_streams_and_stop_frees_the_engine(page):
    """A held-open fake reply: the first piece shows before the rest exists; Stop cancels it in the engine."""
    gate = threading.Event()
    engine = FakeEngine(reply_pieces=["第一段，", "第二段。"], gate=gate)
    with open_served(page, engine):
        page.fill("#msg textarea", "<b>不是粗体</b> 今天很开心")
        page.click("#send")
        wait_until(lambda: label(page) == "😄 正面 90%", what="the label")
        wait_for_chat(page, "第一段，")
        assert "▌" in chat_text(page) and "第二段" not in chat_text(page)  # mid-stream
        assert "<b>不是粗体</b>" in chat_text(page)  # the user's HTML is shown as text
        assert page.locator("#chatbot b", has_text="不是粗体").count() == 0

        assert page.locator("#stop").is_enabled()  # something runs: Stop works
        page.click("#stop")
        wait_until(lambda: engine.generations_cancelled == 1, what="the engine to cancel")
        page.wait_for_function("document.querySelector('#stop').disabled")  # nothing runs: Stop is off
        assert engine.active_generations == 0
        wait_for_chat(page, "（已停止）")
        assert "第二段" not in chat_text(page)

        gate.set()  # the model is free again: the next message is answered in full
        send(page, "再来一次")
        wait_for_chat(page, "第二段。")
        page.click("#clear")
        page.wait_for_function("!document.querySelector('#chatbot').innerText.includes('再来一次')")
        assert label(page) == "发送消息后，这里显示它的情感"


def test_the_enter_that_confirms_an_ime_composition_does_not_send(page):
    """Also: an empty message is refused with the reason in Chinese."""
    engine = FakeEngine()
    with open_served(page, engine):
        page.press("#msg textarea", "Enter")  # nothing typed: the reason shows under the input
        wait_for_notice(page, "请先输入内容再发送")
        page.click("#msg textarea")
        page.keyboard.type("今天")
        cdp = page.context.new_cdp_session(page)
        cdp.send("Input.imeSetComposition", {"text": "hao", "selectionStart": 3, "selectionEnd": 3})
        # Enter while the candidate window is open, as Chromium reports it: isComposing is true.
        cdp.send("Input.dispatchKeyEvent", {"type": "keyDown", "key": "Enter", "code": "Enter",
                                            "windowsVirtualKeyCode": 13, "text": "\r"})
        cdp.send("Input.dispatchKeyEvent", {"type": "keyUp", "key": "Enter", "code": "Enter",
                                            "windowsVirtualKeyCode": 13})
        cdp.send("Input.insertText", {"text": "好"})
        assert page.input_value("#msg textarea") == "今天好"
        page.press("#msg textarea", "Enter")  # a plain Enter sends
        wait_until(lambda: label(page) == "😄 正面 90%", what="the label")
        classified = [text for name, text in engine.calls if name == "classify"]
        assert classified == ["今天好"]  # the whole message: the composing Enter sent nothing


def test_a_full_queue_tells_the_user_to_try_again(page):
    hold = threading.Event()
    engine = FakeEngine(classify_gate=hold)
    with open_served(page, engine, queue_max_size=1) as app:
        client = Client(app.local_url, verbose=False)
        running = client.submit("一", api_name="/sentiment")  # holds the model
        wait_until(engine.classifying.is_set, what="the model to be busy")
        waiting = client.submit("二", api_name="/sentiment")  # fills the line
        wait_until(lambda: app.service.gate.waiting == 1, what="the line to fill")

        send(page, "在吗？")
        wait_for_notice(page, "模型正忙，请稍后再试")
        assert page.input_value("#msg textarea") == "在吗？"  # nothing lost: Enter again later

        hold.set()
        running.result(timeout=30)
        waiting.result(timeout=30)
        page.press("#msg textarea", "Enter")
        wait_until(lambda: label(page) == "😄 正面 90%", what="the label once the model is free")


def test_a_refused_message_leaves_the_chat_and_the_text_and_says_why_in_chinese(page):
    """Issue 13: an over-long or empty message turned the chat white under a red badge, in English and tokens."""
    with open_served(page, FakeEngine(max_input_chars=1000)):
        send(page, "第一句：你好")
        wait_for_chat(page, "回复：第一句：你好")
        too_long = "长" * 3000
        page.fill("#msg textarea", too_long)
        page.wait_for_function("document.querySelector('#char-count').innerText === '3000 / 约 1000 字'")
        page.press("#msg textarea", "Enter")
        wait_for_notice(page, "内容过长：约 3000 字，上限约 1000 字")
        assert page.input_value("#msg textarea") == too_long  # the text stays, to be shortened
        for refused in (too_long, ""):
            page.fill("#msg textarea", refused)
            page.click("#send")
            page.wait_for_timeout(300)  # what the page would do next, if it did anything
            assert "第一句：你好" in chat_text(page) and "回复：第一句：你好" in chat_text(page)
            assert page.locator("#chatbot").is_visible() and "错误" not in page.inner_text("body")
        wait_for_notice(page, "请先输入内容再发送")
        send(page, "第二句")
        wait_for_chat(page, "回复：第二句")
        assert page.inner_text("#notice").strip() == ""  # a good message clears the notice


def test_a_second_tab_sees_the_chinese_waiting_notice_then_its_reply(page, browser):
    """Issue 13: a message waiting behind another tab's long reply showed only "…" and "queue: 1/1"."""
    gate = threading.Event()
    engine = FakeEngine(gate=gate, reply_pieces=["很长", "的回复", "。"])
    with open_served(page, engine) as app:
        hold_a_long_reply(page)
        with tab(browser, app) as other:
            send(other, "在吗？")
            wait_for_chat(other, "模型正在回复其他消息")
            assert label(other) == "😄 正面 90%"  # its label did not wait for the other tab's reply
            gate.set()
            wait_for_chat(other, "很长的回复。")
            assert "模型正在回复其他消息" not in chat_text(other)


def test_full_width_tags_typed_with_a_chinese_ime_route(page):
    engine = FakeEngine()
    with open_served(page, engine):
        send(page, " ＃ＥＭＯＴＩＯＮ＃ 质量很差，用了两天就坏了")
        wait_until(lambda: label(page) == "😞 负面 90%", what="the label")
        send(page, "＃CHAT＃你好")
        wait_for_chat(page, "回复：你好")
        assert [name for name, _ in engine.calls] == ["classify", "chat"]
        assert "ＥＭＯＴＩＯＮ" not in chat_text(page) and "＃CHAT＃" not in chat_text(page)


def test_on_a_phone_the_mode_and_the_label_show_without_scrolling(browser):
    with tab(browser, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
             device_scale_factor=2) as page, open_served(page, FakeEngine()):
        page.fill("#msg textarea", "物流很快，五星好评！")
        page.click("#send")
        wait_until(lambda: label(page) == "😄 正面 90%", what="the label")
        page.evaluate("window.scrollTo(0, 0)")
        for element in ("#mode", "#sentiment", "#msg textarea", "#send"):
            box = page.locator(element).bounding_box()
            assert box and box["y"] >= 0 and box["y"] + box["height"] <= 844, (element, box)
        assert page.locator("#api-docs").is_visible()  # the page's own API page, on phones too
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-phone.png"))


def test_the_label_names_its_message_and_is_announced(page):
    with open_served(page, FakeEngine()):
        page.wait_for_function("document.querySelector('#sentiment').getAttribute('aria-live') === 'polite'")
        assert page.get_attribute("#sentiment", "tabindex") == "0"  # the keyboard reaches it
        assert page.get_attribute("#notice", "role") == "alert"
        send(page, "还行吧，就是物流有点差")
        wait_until(lambda: label(page) == "😐 偏负面 58%", what="the uncertain label")
        assert "「还行吧，就是物流有点差」" in page.inner_text("#sentiment")
        assert "褒贬参半" in page.inner_text("#sentiment")


def test_gradio_s_own_words_are_chinese_whatever_the_browser_language(browser):
    with tab(browser, locale="en-US") as page, open_served(page, FakeEngine()):
        send(page, "你好")
        wait_for_chat(page, "回复：你好")
        labels = page.eval_on_selector_all(
            "#chatbot button", "els => els.map(e => e.getAttribute('aria-label') || e.title || '')")
        assert "复制消息" in labels and not [text for text in labels if "Copy" in text], labels
        assert "API" not in page.inner_text("footer")  # Gradio's English API page is not linked (issue 28)


class PacedSlices(RecordingEngine):
    """The tiny model, each batch slice paced so the progress bar can be seen."""

    def classify_batch(self, reviews_ids):
        threading.Event().wait(0.03)
        return self._engine.classify_batch(reviews_ids)


def test_a_2000_row_csv_goes_through_the_batch_tab(page, tiny_engine, tmp_path):
    """Upload, progress, table and charts, then a download with every row and its label."""
    import csv
    import io

    rows = [[str(i), ("质量很好，物流也快" if i % 3 else "太差了，再也不买") + f"（第 {i} 条）", str(i % 5 + 1)]
            for i in range(2000)]
    rows[7][1] = ""  # an empty review and one too long for the tiny model: marked, not dropped
    rows[11][1] = "很长" * 200
    upload = tmp_path / "店铺评论导出.csv"
    with upload.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([["编号", "评论", "评分"], *rows])
    with open_served(page, PacedSlices(tiny_engine)):
        page.get_by_role("tab", name="批量分析").click()
        page.set_input_files("#batch-file input[type=file]", str(upload))
        page.wait_for_function("document.querySelector('#batch-info').innerText.includes('2000 行')")
        assert "分析「评论」列" in page.inner_text("#batch-info")
        page.click("#batch-start")
        # The progress bar and its words sit on the summary line, in view while the batch runs.
        progress = page.wait_for_selector("#batch-summary >> text=/已完成 \\d+ \\/ 2000 条/")
        box = progress.bounding_box()
        assert box is not None and box["height"] >= 10 and box["width"] >= 100, box
        page.wait_for_function("document.querySelector('#batch-summary').innerText.includes('已分析')",
                               timeout=300_000)
        summary = page.inner_text("#batch-summary")
        assert "已分析 1998 / 2000 条" in summary and "2 条未分析" in summary, summary
        page.wait_for_selector("#batch-table table")
        assert page.locator("#batch-counts").is_visible() and page.locator("#batch-histogram").is_visible()
        page.wait_for_selector("#batch-counts canvas, #batch-counts svg")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-batch.png"), full_page=True)
        with page.expect_download() as download_info:
            page.click("#batch-download")
        data = Path(download_info.value.path()).read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    back = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert back[0] == ["编号", "评论", "评分", "情感", "置信度", "拿不准", "备注"]
    assert [r[:3] for r in back[1:]] == rows
    labels = [r[3] for r in back[1:]]
    assert labels.count("") == 2 and set(labels) - {""} <= {"正面", "负面"}
    assert back[8][6] == "空行，未分析" and re.fullmatch(r"过长（约 \d+ 字，上限约 \d+ 字），未分析", back[12][6])
