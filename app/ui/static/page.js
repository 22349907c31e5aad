() => {
  // Runs once when the page loads: Gradio calls this function (Blocks.launch(js=...)).
  // Gradio's Textbox sends on an Enter keypress without checking for IME composition, so the Enter
  // that confirms a Chinese IME candidate would send a half-typed message. Such key events are
  // stopped before they reach it (and kept from inserting a newline).
  const guard = (event) => {
    if (event.key !== "Enter" || !(event.target instanceof Element) || !event.target.closest("#msg")) return;
    if (!event.isComposing && event.keyCode !== 229) return;
    event.stopImmediatePropagation();
    if (event.type === "keypress") event.preventDefault();
  };
  window.addEventListener("keydown", guard, true);
  window.addEventListener("keypress", guard, true);

  // The sentiment box and the notice are live regions (a screen reader reads their news), and the
  // keyboard can reach the box.
  const mark = () => {
    const box = document.querySelector("#sentiment"), notice = document.querySelector("#notice");
    if (!box || !notice) return false;
    Object.entries({role: "status", "aria-live": "polite", tabindex: "0", "aria-label": "情感分析结果"})
      .forEach(([k, v]) => box.setAttribute(k, v));
    notice.setAttribute("role", "alert");
    return true;
  };
  // A live count of the characters typed, from half the (approximate) limit on.
  const count = () => {
    const input = document.querySelector("#msg textarea"), out = document.querySelector("#char-count");
    if (!input || !out) return;
    const limit = Number(out.dataset.limit || 0), n = [...input.value].length;
    const text = limit && n >= limit / 2 ? out.dataset.template.replace("{chars}", n).replace("{limit_chars}", limit) : "";
    if (out.textContent !== text) out.textContent = text;
    out.classList.toggle("over", limit > 0 && n > limit);
    // A refusal about the text (empty, too long) goes once the text is no longer refused, and comes
    // back if it is again; other notices (a full line) stay until the next Send.
    const notice = document.querySelector("#notice");
    if (!notice) return;
    const said = notice.textContent;
    const stale = (said.includes(out.dataset.empty) && input.value.trim() !== "") ||
                  (said.includes(out.dataset.long) && !(limit > 0 && n > limit));
    notice.classList.toggle("stale", stale);
  };
  // Keyboard and screen readers. The three mode radios share one name, so they are one Tab stop and
  // the arrow keys move between them (Gradio gives each its own). Gradio's fixed English accessible
  // names are said in Chinese; Gradio may re-render these parts, so this is applied again on changes.
  const NAMES = {"chatbot conversation": "对话记录", "More tabs": "更多标签页",
                 "Gradio footer navigation": "页脚导航", "Click to upload or drop files": "点击上传，或把文件拖到这里"};
  const phone = window.matchMedia("(max-width: 640px)"), PHONE_PLACEHOLDER = "输入内容，点“发送”";
  const fix = () => {
    document.querySelectorAll("#mode input[type=radio]").forEach((r) => {
      if (r.name !== "mode") r.name = "mode";
    });
    // A phone's keyboard has no Shift+Enter: its placeholder leaves that out.
    const input = document.querySelector("#msg textarea");
    if (input && phone.matches && input.placeholder !== PHONE_PLACEHOLDER) input.placeholder = PHONE_PLACEHOLDER;
    // The API page's snippets name this page's own address.
    document.querySelectorAll("#api-help .origin").forEach((e) => {
      if (e.textContent !== location.origin) e.textContent = location.origin;
    });
    document.querySelectorAll("[aria-label]").forEach((el) => {
      const name = NAMES[el.getAttribute("aria-label")];
      if (name) el.setAttribute("aria-label", name);
    });
  };
  fix();
  new MutationObserver(fix).observe(document.body, {subtree: true, childList: true, attributes: true,
                                                    attributeFilter: ["aria-label", "name", "placeholder"]});

  // Reloading or closing the tab would lose the conversation (it lives in the server's memory for this
  // tab alone): while the chat shows any message, the browser asks first.
  window.addEventListener("beforeunload", (event) => {
    if (!document.querySelector("#chatbot .message-row, #chatbot [data-testid=user]")) return;
    event.preventDefault();
    event.returnValue = "";
  });

  const start = setInterval(() => { if (mark()) clearInterval(start); }, 200);
  document.addEventListener("input", count, true);
  setInterval(count, 500);  // also after the page empties the box on Send
}
