"""A small built-in web page (/ui): pick a user, see the history and the recommendations with
titles and scores, record a purchase and watch the list change.

One static HTML file with its own script and style, calling the public API from the browser
(no CDN, no build step); the API key, when the API needs one, is typed into the page.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

UI_PATH = "/ui"
PAGE = Path(__file__).with_name("index.html")


def add_ui(app: FastAPI) -> None:
    page = PAGE.read_text(encoding="utf-8")

    async def ui() -> HTMLResponse:
        return HTMLResponse(page)

    app.add_api_route(UI_PATH, ui, methods=["GET"], include_in_schema=False)
