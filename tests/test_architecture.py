"""The arrows point one way: weights -> engine -> tui, and inside tui session state -> views
-> widgets and screens -> app, with the command line on top. Every import counts, also
those inside functions and under TYPE_CHECKING."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("weights", "engine", "tui")

# Lower layers never import higher ones; the command line is imported by nothing.
LAYERS = (
    ("weights", ("gpt2scope.weights",)),
    ("engine", ("gpt2scope.engine",)),
    (
        "session state",
        (
            "gpt2scope.tui.session",
            "gpt2scope.tui.text",
            "gpt2scope.tui.models",
            "gpt2scope.tui.heap",
        ),
    ),
    ("views", ("gpt2scope.tui.views", "gpt2scope.tui.lessons")),
    ("report", ("gpt2scope.tui.report",)),
    (
        "widgets and screens",
        (
            "gpt2scope.tui.keys",
            "gpt2scope.tui.contrast",
            "gpt2scope.tui.messages",
            "gpt2scope.tui.widgets",
            "gpt2scope.tui.screens",
            "gpt2scope.tui.help",
            "gpt2scope.tui.download_screen",
            "gpt2scope.tui.patching_screen",
            "gpt2scope.tui.lesson_bar",
            "gpt2scope.tui.keep_tail",
        ),
    ),
    ("app", ("gpt2scope.tui.app",)),
    ("headless", ("gpt2scope.tui.inspect", "gpt2scope.tui.download", "gpt2scope.tui.serve")),
    ("command line", ("gpt2scope.tui.cli",)),
)
# No Textual and no argument parsing below the widgets; nothing of the UI in the engine.
FORBIDDEN = {
    "weights": ("textual", "rich", "argparse", "gpt2scope.engine", "gpt2scope.tui"),
    "engine": ("textual", "rich", "argparse", "gpt2scope.tui"),
    "session state": ("textual", "argparse"),
    "views": ("textual", "argparse"),
    "report": ("textual", "argparse"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("gpt2scope", *parts))


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imported(path: Path, known: dict[str, Path]) -> set[str]:
    """Every module `path` imports anywhere in it: a project module where the name is one,
    else the top-level name (textual, argparse, ...)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                names.add(full if full in known else node.module)
    return {n if n.startswith("gpt2scope") else n.split(".")[0] for n in names}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(path, known) for name, path in known.items()}


def layer_of(module: str) -> int:
    if module == "gpt2scope.tui":
        return 0  # the package's docstring, nothing else
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in edges:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            component.append(v)
            if len(component) > 1 or v in edges[v]:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_itself_round_a_circle():
    assert cycles(graph()) == []


def test_cycles_are_found():
    """The check above could not fail if the cycle finder found nothing."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]


def test_every_import_points_down_or_across():
    upward = [
        f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
        for a, targets in graph().items()
        for b in targets
        if b.startswith("gpt2scope") and layer_of(b) > layer_of(a)
    ]
    assert upward == []


def test_the_command_line_is_imported_by_nothing():
    importers = [a for a, targets in graph().items() if "gpt2scope.tui.cli" in targets]
    assert importers == []


@pytest.mark.parametrize("layer", FORBIDDEN)
def test_lower_layers_use_neither_the_ui_nor_argument_parsing(layer):
    rank = [name for name, _ in LAYERS].index(layer)
    bad = [
        f"{a} imports {b}"
        for a, targets in graph().items()
        if layer_of(a) == rank
        for b in targets
        if any(b == f or b.startswith(f + ".") for f in FORBIDDEN[layer])
    ]
    assert bad == []


def test_every_module_has_a_layer():
    for module in modules():
        layer_of(module)
