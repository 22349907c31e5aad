"""Issue 28: what a new user tripped on, in headless Chromium with the fake engine.

Each test here failed on the commit before its fix (the reason is in its docstring).
"""

from __future__ import annotations

import re
import shutil
import threading

import pytest
from gradio_client import Client

from tests.fakes import FakeEngine
from tests.served import wait_until
from tests.test_browser import (  # noqa: F401 - fixtures and helpers
    browser, chat_text, hold_a_long_reply, label, open_served, page, send, tab, wait_for_chat, wait_for_notice)

pytestmark = pytest.mark.browser

FIVE_LINES = "物流很快，五星好评！\n\n质量太差了，用了两天就坏了。\n=1+1\n一般般吧"


def test_the_count_chart_starts_at_zero_and_pasting_tells_the_row_count(page):  # noqa: F811 - the fixture
    """Item 1: the 各类条数 axis ran 1–3 for counts 3 / 1 / 1 (Vega-Lite's scale started at the least count),
    so the bars of 1 were not drawn. Item 4: pasting said nothing about how many rows it held."""
    with open_served(page, FakeEngine()):
        page.get_by_role("tab", name="批量分析").click()
        page.fill("#batch-pasted textarea", FIVE_LINES)
        page.wait_for_function("document.querySelector('#batch-info').innerText.includes('5 行')")
        page.click("#batch-start")
        page.wait_for_function("document.querySelector('#batch-summary').innerText.includes('已分析')")
        summary = page.inner_text("#batch-summary")
        assert "正面 3 条" in summary and "负面 1 条" in summary and "1 条未分析" in summary, summary
        page.wait_for_selector("#batch-counts svg .mark-rect path")
        # The y axis's tick labels (Vega renders the chart as SVG): 0 is among them.
        ticks = page.eval_on_selector_all(
            "#batch-counts svg .role-axis-label text", "els => els.map(e => e.textContent)")
        assert "0" in ticks, ticks
        # Every category with a count has a bar of some height, the 1s included.
        heights = page.eval_on_selector_all(
            "#batch-counts svg .mark-rect path", "els => els.map(e => e.getBBox().height)")
        assert len([h for h in heights if h > 1]) == 3, heights


def test_the_side_box_shows_one_message_label_and_timing(page):  # noqa: F811
    """Item 2: a reply that ended after a newer message was sent wrote its timing ("… · 回复 …") under
    the newer message's label."""
    gate = threading.Event()
    with open_served(page, FakeEngine(gate=gate, reply_pieces=["很长", "的回答。"])):
        send(page, "给我讲讲北京的历史")
        wait_for_chat(page, "很长 ▌")
        page.get_by_label("仅情感分析").check()
        send(page, "那成都呢？")
        wait_until(lambda: "那成都呢" in page.inner_text("#sentiment"), what="the second message's label")
        gate.set()
        wait_for_chat(page, "很长的回答。")
        # The first reply's last update (the one that carried its timing) also turns Stop off.
        page.wait_for_function("document.querySelector('#stop').disabled")
        assert "那成都呢" in page.inner_text("#sentiment")
        timing = page.inner_text("#timing")
        assert "情感" in timing and "回复" not in timing, timing  # the label's time only: no reply of its own


def test_a_red_counter_means_refused_and_both_state_one_limit(page):  # noqa: F811
    """Item 3: past the counter's limit (red) a message was still sent if its tokens fitted, and a much
    longer one was refused with a limit from its own characters per token, not the counter's."""
    engine = FakeEngine(max_input_chars=1000)
    engine.max_input_tokens = 1100  # like Chinese text: a little over the counter's number still fits
    with open_served(page, engine):
        for chars in (1050, 3000):
            page.fill("#msg textarea", "长" * chars)
            page.wait_for_function(
                f"document.querySelector('#char-count').innerText === '{chars} / 约 1000 字'")
            assert "over" in page.get_attribute("#char-count", "class")  # red
            page.press("#msg textarea", "Enter")
            wait_for_notice(page, f"内容过长：约 {chars} 字，上限约 1000 字")
        assert not engine.calls and "长长长" not in chat_text(page)
        page.fill("#msg textarea", "长" * 1000)  # at the limit: not red, and sent
        assert "over" not in page.get_attribute("#char-count", "class")
        page.press("#msg textarea", "Enter")
        wait_for_chat(page, "回复：长长长")


NOTICE_GONE = ("(() => { const n = document.querySelector('#notice');"
               " return getComputedStyle(n).display === 'none' || n.innerText.trim() === ''; })()")


def test_a_refusal_notice_goes_once_the_text_is_no_longer_refused(page):  # noqa: F811
    """Item 6: "请先输入内容再发送" stayed while a valid message was typed."""
    with open_served(page, FakeEngine(max_input_chars=100)):
        page.press("#msg textarea", "Enter")
        wait_for_notice(page, "请先输入内容再发送")
        page.keyboard.type("你好")
        page.wait_for_function(NOTICE_GONE)
        send(page, "长" * 150)
        wait_for_notice(page, "内容过长")
        page.fill("#msg textarea", "长" * 120)  # shorter, still too long: the notice stays
        page.wait_for_function("document.querySelector('#char-count').innerText.startsWith('120 ')")
        assert "内容过长" in page.inner_text("#notice") and page.locator("#notice").is_visible()
        page.fill("#msg textarea", "长" * 90)
        page.wait_for_function(NOTICE_GONE)


def test_the_place_in_line_never_counts_backwards(page, browser):  # noqa: F811
    """Item 5: a reply waiting behind another tab's showed "前面还有 1 条" (as "模型正在回复其他消息"), then
    "前面还有 2 条" when someone else's label went before it."""
    gate, hold = threading.Event(), threading.Event()
    engine = FakeEngine(gate=gate, classify_gate=hold, reply_pieces=["很长", "的回复", "。"])
    with open_served(page, engine) as app:
        hold_a_long_reply(page)
        with tab(browser, app) as other:
            other.get_by_label("仅对话").check()
            send(other, "在吗？")
            wait_for_chat(other, "模型正在回复其他消息")
            labelling = Client(app.local_url, verbose=False).submit("一", api_name="/sentiment")
            wait_until(engine.classifying.is_set, what="someone else's label on the model")
            # Now two turns are ahead of it (the reply and the label): the page must not say 2 after 1.
            other.wait_for_function(
                "/正在排队|前面还有 2 条/.test(document.querySelector('#chatbot').innerText)")
            assert "前面还有 2 条" not in chat_text(other)
            assert "正在排队" in chat_text(other)
            hold.set()
            labelling.result(timeout=30)
            gate.set()
            wait_for_chat(other, "很长的回复。")


def test_the_keyboard_reaches_the_mode_first_and_moves_it_with_arrows(page):  # noqa: F811
    """Item 7: three radios with three names (three Tab stops, arrows did nothing), after the examples in
    Tab order; a focused radio looked unfocused; the input was named "Textbox"."""
    with open_served(page, FakeEngine()):
        names = page.eval_on_selector_all("#mode input[type=radio]", "els => els.map(e => e.name)")
        assert len(names) == 3 and len(set(names)) == 1, names
        # Tab from the page's start: the checked mode radio comes before the input and the examples.
        page.get_by_role("tab", name="对话与情感").focus()  # the last stop before the tab's content
        order = []
        for _ in range(12):
            page.keyboard.press("Tab")
            order.append(page.evaluate(
                "(() => { const e = document.activeElement; return e.closest('#mode') ? 'mode' :"
                " e.closest('#msg') ? 'msg' : e.closest('.gallery, [class*=example]') ? 'example' : e.tagName })()"))
            if order[-1] == "msg":
                break
        assert "mode" in order and order.index("mode") < order.index("msg"), order
        assert order.count("mode") == 1, order  # one Tab stop for the three
        page.locator("#mode input[type=radio]:checked").focus()
        outline = page.evaluate(
            "getComputedStyle(document.querySelector('#mode input:checked').closest('label')).outlineStyle")
        page.keyboard.press("ArrowDown")
        assert page.evaluate("document.querySelector('#mode input:checked').value") == "emotion"
        assert outline != "none"  # the focused radio's label is outlined
        send(page, "质量太差了")
        wait_until(lambda: label(page) == "😞 负面 90%", what="the label")  # the arrow's mode took effect
        wait_for_chat(page, "质量太差了")
        assert "回复：" not in chat_text(page)
        assert page.get_by_role("textbox", name="输入消息").count() == 1


GRADIO_ENGLISH = re.compile(
    r"\b(Textbox|chatbot|conversation|More tabs|footer|navigation|Built with|Use via API|Settings|Copy|"
    r"Clear|Loading|Examples?|Submit|Stop|Share|Download|Upload|Drop|Click|Error)\b", re.IGNORECASE)


def test_no_english_from_gradio_is_shown_or_named_in_an_english_browser(browser):  # noqa: F811
    """Item 7: "chatbot conversation", "More tabs", "Gradio footer navigation" were accessible names,
    and the input's was "Textbox"."""
    with tab(browser, locale="en-US") as en_page, open_served(en_page, FakeEngine()):
        send(en_page, "你好")
        wait_for_chat(en_page, "回复：你好")
        en_page.wait_for_function("!document.querySelector('[aria-label=\"chatbot conversation\"]')")
        for tab_name in ("对话与情感", "批量分析"):
            en_page.get_by_role("tab", name=tab_name).click()
            visible = en_page.inner_text("body")
            named = en_page.eval_on_selector_all(
                "[aria-label], [title], [placeholder]",
                "els => els.filter(e => e.offsetParent !== null || e.tagName === 'FOOTER')"
                ".map(e => [e.getAttribute('aria-label'), e.title, e.getAttribute('placeholder')].join(' '))")
            # The page's own English is allowed: the model, the tags, the API paths.
            text = re.sub(r"Qwen All-in-One|#EMOTION#|#CHAT#|Gradio|API|JSON|POST|CSV|/\w+|\.\w+", "",
                          visible + " " + " ".join(named))
            assert not GRADIO_ENGLISH.findall(text), (tab_name, GRADIO_ENGLISH.findall(text))


LEAVING = "!window.dispatchEvent(new Event('beforeunload', {cancelable: true}))"  # true: the browser asks


def test_leaving_a_conversation_asks_first(page):  # noqa: F811
    """Item 10: a reload lost the conversation without a word. Now the page asks the browser to confirm
    leaving while its chat shows a message (a cancelled beforeunload), and not while the chat is empty.

    The event is dispatched by the test: headless Chromium closes a page without showing the dialog.
    """
    with open_served(page, FakeEngine()):
        assert page.evaluate(LEAVING) is False  # nothing said yet: leave freely
        send(page, "你好")
        wait_for_chat(page, "回复：你好")
        assert page.evaluate(LEAVING) is True
        page.click("#clear")
        page.wait_for_function("!document.querySelector('#chatbot').innerText.includes('回复：你好')")
        assert page.evaluate(LEAVING) is False  # cleared: nothing to lose


def test_the_api_page_is_chinese_and_its_curl_snippet_runs(page):  # noqa: F811
    """Item 8: the button opened Gradio's API page (English, an MCP tab, a cURL snippet that failed in
    bash). Now it opens the page's own, in Chinese, whose snippet names this server and answers."""
    import shlex
    import subprocess

    with open_served(page, FakeEngine()) as app:
        assert not page.locator("footer .show-api").is_visible()
        page.click("#api-help summary")
        snippet = page.locator("#api-help pre code").first.inner_text()
        assert app.local_url.rstrip("/") in snippet and "mcp" not in page.inner_text("#api-help").lower()
        curl = shutil.which("curl")
        if curl is None:
            pytest.skip("curl not installed")
        # The snippet as a user pastes it into bash (its line continuation included).
        out = subprocess.run(["bash", "-c", snippet], capture_output=True, text=True, check=True)
        assert '"emotion_label":"正面"' in out.stdout.replace(" ", ""), (shlex.quote(snippet), out.stdout, out.stderr)
