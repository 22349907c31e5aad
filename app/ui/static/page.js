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
  };
  const start = setInterval(() => { if (mark()) clearInterval(start); }, 200);
  document.addEventListener("input", count, true);
  setInterval(count, 500);  // also after the page empties the box on Send
}
