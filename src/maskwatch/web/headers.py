"""The headers every HTML page `maskwatch serve` sends: its type is never guessed, no other
site may frame it (clickjacking), its address (which may carry ?token=) is never sent on as a
referrer, and a Content-Security-Policy keeps it to its own server and bars scripts and styles
written into the page."""

from __future__ import annotations

# The camera page and the dashboard: their scripts and styles are files the package ships;
# they set styles only through the DOM (`element.style`), which the policy allows.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# /docs and /redoc: FastAPI writes their start-up script and styles into the page.
DOCS_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)


def page_headers(policy: str = PAGE_POLICY) -> dict[str, str]:
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
        "Referrer-Policy": "no-referrer",
    }
