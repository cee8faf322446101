"""The API's interactive docs (/docs) and schema (/openapi.json), served with no CDN.

FastAPI's default /docs page loads Swagger UI from a CDN, so it is blank on a machine without
internet. The same Swagger UI comes from the ``swagger-ui-bundle`` package and is served here
under /docs/assets. With API_KEY set, the docs and the schema need the key too unless
DOCS_PUBLIC is true.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import swagger_ui_bundle
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

DOCS_PATH = "/docs"
OPENAPI_PATH = "/openapi.json"
ASSETS_PATH = f"{DOCS_PATH}/assets"


def add_local_docs(app: FastAPI, authorize: Callable[[str | None], None] | None) -> None:
    """Serve /docs from local assets and /openapi.json; ``authorize`` (the API-key check) guards
    both when given. Build the app with ``docs_url=None, redoc_url=None, openapi_url=None``."""
    app.mount(ASSETS_PATH, StaticFiles(directory=Path(swagger_ui_bundle.swagger_ui_path)), name="docs-assets")

    async def schema(request: Request) -> JSONResponse:
        if authorize is not None:
            authorize(request.headers.get("x-api-key"))
        return JSONResponse(app.openapi())

    async def docs(request: Request) -> HTMLResponse:
        if authorize is not None:
            authorize(request.headers.get("x-api-key"))
        return get_swagger_ui_html(
            openapi_url=OPENAPI_PATH,
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon-32x32.png",
        )

    app.add_route(OPENAPI_PATH, schema, include_in_schema=False)
    app.add_route(DOCS_PATH, docs, include_in_schema=False)
