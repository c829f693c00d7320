"""Write openapi/openapi.json from the app (``make openapi``); a test keeps it current."""

import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "openapi" / "openapi.json"


def render() -> str:
    sys.path.insert(0, str(ROOT))
    # The spec does not depend on where data lives; a scratch folder keeps this side-effect free.
    os.environ.setdefault("K2E_DATA_DIR", tempfile.mkdtemp(prefix="k2e-openapi-"))
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:1/0")
    from k2e.settings import Settings
    from service.main import create_app

    app = create_app(Settings())
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    TARGET.write_text(render())
    print(f"wrote {TARGET.relative_to(ROOT)}")
