"""The API docs, /docs (Swagger UI) and /redoc (ReDoc), working without internet: their
scripts, styles and icon are the copies fastapi-offline ships, served under `ASSETS`, and a
Content-Security-Policy keeps each page to its own server (ReDoc's bundle would otherwise load
its logo from a CDN)."""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from maskwatch.web.headers import DOCS_POLICY, page_headers

ASSETS = "/static/docs"
PAGES = ("/docs", "/redoc")


def _page(response: HTMLResponse) -> HTMLResponse:
    response.headers.update(page_headers(DOCS_POLICY))
    return response


def add_docs(app: FastAPI) -> None:
    """/docs, /redoc and their assets, for an app made with docs_url=None, redoc_url=None."""
    files = resources.files("fastapi_offline") / "static"
    app.mount(ASSETS, StaticFiles(directory=str(files)), name="docs-assets")
    openapi = app.openapi_url or "/openapi.json"
    title = f"{app.title} - API"
    icon = f"{ASSETS}/favicon.png"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return _page(
            get_swagger_ui_html(
                openapi_url=openapi,
                title=title,
                swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
                swagger_css_url=f"{ASSETS}/swagger-ui.css",
                swagger_favicon_url=icon,
            )
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return _page(
            get_redoc_html(
                openapi_url=openapi,
                title=title,
                redoc_js_url=f"{ASSETS}/redoc.standalone.js",
                redoc_favicon_url=icon,
                with_google_fonts=False,
            )
        )
