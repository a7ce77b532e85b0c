"""The interactive API reference: Swagger UI served from ``static/`` (no CDN), under the app's CSP.

Litestar's render plugins load their scripts from a CDN and start them with an inline script, which
``script-src 'self'`` refuses. This plugin's page references only local files: the vendored Swagger UI
(``static/vendor/``, see ``static/VENDORED.md``) and ``static/js/api-docs.js``, which reads the
document's URL from a ``data-`` attribute and starts the UI.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from litestar import Request
from litestar.openapi.plugins import OpenAPIRenderPlugin
from litestar.router import Router

SWAGGER_UI_VERSION = "5.35.0"
SWAGGER_UI_DIR = f"/static/vendor/swagger-ui-{SWAGGER_UI_VERSION}"


class LocalSwaggerRenderPlugin(OpenAPIRenderPlugin):
    """Swagger UI from the vendored files, started by a static script; no inline code, no CDN."""

    def __init__(self, *, path: str | Sequence[str] = ("/", "/swagger"), **kwargs: Any) -> None:
        super().__init__(path=path, favicon="", style="", **kwargs)

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        title = escape(f"{openapi_schema['info']['title']} reference")
        spec_url = escape(self.get_openapi_json_route(request))
        return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <meta name="referrer" content="same-origin">
  <title>{title}</title>
  <link rel="icon" href="/static/img/favicon.svg" type="image/svg+xml">
  <link rel="stylesheet" href="{SWAGGER_UI_DIR}/swagger-ui.css">
  <link rel="stylesheet" href="/static/css/api-docs.css">
  <script src="{SWAGGER_UI_DIR}/swagger-ui-bundle.js" defer></script>
  <script src="/static/js/api-docs.js" defer></script>
</head>
<body>
  <header class="api-docs-header">
    <a href="/">← Voluble</a>
    <a href="{spec_url}">OpenAPI document (JSON)</a>
  </header>
  <noscript><p class="api-docs-noscript">The interactive reference needs JavaScript; the
    <a href="{spec_url}">OpenAPI document</a> describes the same API.</p></noscript>
  <div id="swagger-ui" data-spec-url="{spec_url}"></div>
</body>
</html>
""".encode()

    def receive_router(self, router: Router) -> None:
        """No ``oauth2-redirect.html``: the API takes bearer tokens, Swagger UI runs no OAuth flow."""
