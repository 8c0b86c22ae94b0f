"""The package's shape: its wings, the dependency rules between them, and no import cycle.

Every import counts here, those inside functions and under ``TYPE_CHECKING`` included: a cycle held
together by a deferred import is still a cycle for a reader.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = {"wa_middleware": ROOT / "wa_middleware", "wa_middleware.adapters": ROOT / "adapters"}

#: Module -> wing. The bottom holds small objects; the facade composes; the top uses it all.
BOTTOM = {"_version", "errors", "settings", "keys", "logs", "metrics", "memory", "_loader", "redis_url"}

#: What each wing may import (itself always).
ALLOWED = {
    "bottom": {"bottom"},
    "events": {"bottom"},
    "web": {"bottom", "events"},
    "worker": {"bottom", "events"},
    "ops": {"bottom", "events", "worker"},
    "messaging": {"bottom", "events"},
    "facade": {"bottom", "events", "web", "worker", "ops", "messaging"},
    "top": {"bottom", "events", "web", "worker", "ops", "messaging", "facade", "top"},
}


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


MODULES = modules()


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def wing(name: str) -> str:
    parts = name.split(".")
    if name == "wa_middleware" or parts[1] in ("testing", "cli", "adapters"):
        return "top"
    if parts[1] == "webhook":
        return "facade"
    if parts[1] in BOTTOM:
        return "bottom"
    return parts[1]


def imports_of(name: str) -> set[str]:
    """Every package module ``name`` imports, at any depth of its code."""
    tree = ast.parse(MODULES[name].read_text())
    package = name if is_package(name) else name.rpartition(".")[0]
    if name.startswith("wa_middleware.adapters"):
        package = "wa_middleware.adapters"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from pkg import sub` imports the submodule when there is one.
            targets = [f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in MODULES else stem for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


GRAPH = {name: imports_of(name) for name in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_wings_are_subpackages() -> None:
    listing = {p.name for p in (ROOT / "wa_middleware").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert {"events", "web", "worker", "ops", "messaging", "cli"} <= listing


def test_no_import_cycle_between_modules() -> None:
    assert cycles(GRAPH) == []


def test_no_import_cycle_between_subpackages() -> None:
    def unit(name: str) -> str:
        return ".".join(name.split(".")[:2])

    graph: dict[str, set[str]] = {}
    for name, targets in GRAPH.items():
        graph.setdefault(unit(name), set()).update(unit(t) for t in targets if unit(t) != unit(name))
    graph.pop("wa_middleware", None)  # the package's own __init__ re-exports the facade: it is the top
    for targets in graph.values():
        targets.discard("wa_middleware")
    assert cycles(graph) == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_dependency_rules(name: str) -> None:
    mine = wing(name)
    bad = sorted(t for t in GRAPH[name] if wing(t) != mine and wing(t) not in ALLOWED[mine])
    assert bad == [], f"{name} ({mine}) may not import {bad}"


def _imports_dramatiq_at_run_time(name: str) -> bool:
    tree = ast.parse(MODULES[name].read_text())
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only.update(id(child) for child in ast.walk(node))
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "dramatiq" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == "dramatiq":
            return True
    return False


def test_only_the_worker_side_imports_dramatiq() -> None:
    # The command line hands `wa-middleware worker` over to dramatiq's own CLI: that is its only use.
    outside = sorted(
        name
        for name in MODULES
        if _imports_dramatiq_at_run_time(name) and wing(name) != "worker" and not name.startswith("wa_middleware.cli")
    )
    assert outside == []


def test_a_web_process_does_not_load_the_worker_side(redis_url: str) -> None:
    """Mount the middleware and store a delivery through it: neither dramatiq nor the worker wing loads."""
    code = textwrap.dedent(
        f"""
        import sys
        from starlette.testclient import TestClient
        from starlette.applications import Starlette
        from wa_middleware import BasicAuth, Webhook, testing
        from wa_middleware.adapters.asgi import WebhookMiddleware

        wa = Webhook(auth=BasicAuth("u", "p"), broker_url={redis_url!r}, namespace="layout-test")
        app = WebhookMiddleware(Starlette(), webhook=wa)
        with TestClient(app) as client:
            answer = client.post("/webhook", content=testing.text().to_bytes(), auth=("u", "p"))
        assert answer.status_code == 200, answer.text
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "dramatiq" or m.startswith("wa_middleware.worker"))
        print(loaded)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_lua_scripts_ship_with_the_package() -> None:
    lua = sorted(p.name for p in (ROOT / "wa_middleware" / "worker" / "lua").glob("*.lua"))
    assert lua == ["_marks.lua", "finish.lua", "peek.lua", "plan.lua", "recover.lua", "requeue.lua"]


def test_the_checks_see_what_they_must() -> None:
    """The graph holds deferred and type-only imports, and the cycle finder finds cycles."""
    assert "wa_middleware.worker.broker" in GRAPH["wa_middleware.webhook"]  # imported inside a method
    assert "wa_middleware.events.callbacks" in GRAPH["wa_middleware.ops.replay"]  # under TYPE_CHECKING
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert wing("wa_middleware.web.core") == "web" and wing("wa_middleware.keys") == "bottom"
