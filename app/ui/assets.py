"""What the page loads besides its layout: the theme with local fonts, its CSS and JavaScript, Gradio's words in Chinese."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

STATIC = Path(__file__).parent / "static"
CSS = (STATIC / "page.css").read_text(encoding="utf-8")
PAGE_JS = (STATIC / "page.js").read_text(encoding="utf-8")
# The page's own short API page (a <details> under the chat): Chinese, with snippets that run as pasted.
API_HELP = (STATIC / "api-help.html").read_text(encoding="utf-8")

# System font stacks with CJK faces: nothing is fetched from Google Fonts or any other CDN.
FONT = ["-apple-system", "BlinkMacSystemFont", "Segoe UI", "PingFang SC", "Hiragino Sans GB",
        "Microsoft YaHei", "Noto Sans CJK SC", "Source Han Sans SC", "WenQuanYi Micro Hei", "sans-serif"]
FONT_MONO = ["SFMono-Regular", "Menlo", "Consolas", "Noto Sans Mono CJK SC", "DejaVu Sans Mono", "monospace"]

# Gradio's own words (buttons, footer) follow the browser's language, and its zh-CN lacks some
# ("Copy message"): the page is Chinese whatever the browser says.
GRADIO_WORDS = {
    "chatbot.copy_message": "复制消息", "chatbot.copied_message": "已复制", "chatbot.clear": "清空对话",
    "errors.use_via_api": "通过 API 使用", "errors.use_via_api_or_mcp": "通过 API 使用",
    "common.built_with_gradio": "使用 Gradio 构建", "common.settings": "设置", "common.clear": "清除",
    "common.or": "或", "upload_text.click_to_upload": "点击上传", "upload_text.drop_file": "把文件拖到这里",
}
GRADIO_LOCALES = ["ar", "ca", "ckb", "de", "en", "es", "et", "eu", "fa", "fi", "fr", "he", "hi", "id", "ja", "ko",
                  "lt", "nb", "nl", "pl", "pt", "pt-BR", "ro", "ru", "sv", "ta", "th", "tr", "uk", "ur", "uz",
                  "zh-CN", "zh-TW"]


def gradio_words() -> gr.I18n:
    """Gradio's own words in Chinese for every language a browser may ask for."""
    return gr.I18n(**{locale: GRADIO_WORDS for locale in GRADIO_LOCALES})


def theme() -> gr.themes.Base:
    """The default theme with local system fonts."""
    return gr.themes.Default(font=FONT, font_mono=FONT_MONO)
