"""GET /docs: Swagger UI, its script and stylesheet served by k2e from a pinned package
(``fastapi-offline``, which ships Swagger UI's release files), never from a CDN: the page
shares its origin with the signed-in dashboard, so it runs only k2e's own files, under the
dashboard's Content-Security-Policy, and it works offline.

ReDoc is not served (its styles are inline, which that policy refuses).
"""

import importlib.util
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse

from k2e.errors import NotFound
from service.ui.dashboard import PAGE_HEADERS


def _vendor_folder() -> Path:
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the fastapi-offline package (Swagger UI's files) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


VENDOR = _vendor_folder()
OWN = Path(__file__).parent / "static"
# What /docs/static/ serves: these files and nothing else.
FILES = {
    "swagger-ui-bundle.js": (VENDOR / "swagger-ui-bundle.js", "text/javascript"),
    "swagger-ui.css": (VENDOR / "swagger-ui.css", "text/css"),
    "init.js": (OWN / "init.js", "text/javascript"),
}
PAGE = b"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>k2e API reference</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/docs/static/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script src="/docs/static/init.js"></script>
</body>
</html>
"""


async def docs_page(_: Request) -> HTMLResponse:
    return HTMLResponse(PAGE, headers=PAGE_HEADERS)


async def docs_file(request: Request) -> FileResponse:
    name = request.path_params["name"]
    if name not in FILES:
        raise NotFound(f"no documentation file {name!r}")
    path, media_type = FILES[name]
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    return FileResponse(path, media_type=media_type, headers=headers)


def add_docs(app: FastAPI) -> None:
    """GET /docs and its files: public pages, like FastAPI's own docs route, outside the
    OpenAPI spec."""
    app.add_route("/docs", docs_page, methods=["GET"], include_in_schema=False)
    app.add_route("/docs/static/{name}", docs_file, methods=["GET"], include_in_schema=False)
