"""Imports flow one way: service -> k2e <- worker; TensorFlow only in worker."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"K2E_DATA_DIR": "/tmp/k2e-boundary-test", "PATH": "/usr/bin:/bin"},
    )
    return set(out.stdout.split())


def test_the_api_never_imports_tensorflow_or_the_worker() -> None:
    loaded = _modules_after(
        "from k2e.settings import Settings\n"
        "from service.main import create_app\n"
        "app = create_app(Settings(redis_url='redis://127.0.0.1:1/0'))\n"
        "app.openapi()"
    )
    assert "service.main" in loaded
    assert not {m for m in loaded if m == "tensorflow" or m.startswith("tensorflow.")}
    assert not {m for m in loaded if m == "worker" or m.startswith("worker.")}


def test_the_core_imports_neither_side_nor_fastapi_nor_tensorflow() -> None:
    core = sorted(p.stem for p in (ROOT / "k2e").glob("*.py") if p.stem != "__init__")
    loaded = _modules_after("\n".join(f"import k2e.{name}" for name in core))
    assert {f"k2e.{name}" for name in core} <= loaded
    forbidden = ("service", "worker", "fastapi", "starlette", "tensorflow")
    leaked = {m for m in loaded if m.split(".")[0] in forbidden}
    assert not leaked
