"""How the modules of ``utils`` import each other: no module reaches itself again through its imports,
counting the imports inside functions (a lazy import is still a dependency)."""

import ast

from utils.paths import ROOT


def import_graph() -> dict[str, set[str]]:
    """{module: the modules of utils it imports}, by their dotted names."""
    files = {}
    for path in (ROOT / "utils").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {name: set() for name in files}
    for name, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name in files}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in files:
                for (
                    a
                ) in node.names:  # `from utils import x` imports the module utils.x; `from utils.x import f`, utils.x
                    graph[name].add(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module)
        graph[name].discard(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every group of modules that import one another, directly or not (strongly connected, size > 1)."""
    order, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        order[v] = low[v] = len(order)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in order:
            visit(v)
    return found


def test_the_finder_finds_a_circle_of_imports():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_of_utils_imports_itself_again_through_others():
    graph = import_graph()
    assert {
        "utils.model_zoo.train",
        "utils.model_zoo.saes",
        "utils.cards.model_cards",
        "utils.model_zoo.packing",
    } <= set(graph)
    assert "utils.model_zoo.packing" in graph["utils.model_zoo.saes"]  # the walk sees imports
    assert cycles(graph) == [], "modules importing one another (break the circle by moving what they share down)"


# The layers of utils, from the bottom up: what each package may import besides itself. The base
# modules (paths, seeds) import nothing of utils; the front door (utils/__init__) may import anything.
BASE = {"utils.paths", "utils.seeds"}
MAY_IMPORT = {
    "base": set(),
    "corpora": {"base"},
    "pictures": {"base"},
    "model_zoo": {"base", "corpora"},
    "interventions": {"base", "corpora"},
    "metrics": {"base", "corpora", "model_zoo", "interventions"},
    "checks": {"base", "corpora", "model_zoo", "interventions", "metrics", "pictures"},
    "cards": {"base", "corpora", "model_zoo", "interventions", "metrics"},
    "course": {"base", "corpora", "pictures", "model_zoo", "interventions", "metrics", "checks", "cards"},
}


def layer(module: str) -> str:
    """The package a module of utils belongs to ("base" for paths and seeds, "front door" for utils)."""
    if module == "utils":
        return "front door"
    if module in BASE:
        return "base"
    return module.split(".")[1]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import that goes up or sideways across the layers above, as 'a imports b (layer x may not import y)'."""
    found = []
    for module, imported in sorted(graph.items()):
        here = layer(module)
        if here == "front door":
            continue
        for other in sorted(imported):
            there = layer(other)
            if there != here and there not in MAY_IMPORT[here]:
                found.append(f"{module} imports {other} ({here} may not import {there})")
    return found


def test_the_layer_check_finds_an_upward_import():
    graph = {"utils.model_zoo.models": {"utils.metrics.loss", "utils.corpora.storyworld"}, "utils.metrics.loss": set()}
    assert upward_imports(graph) == [
        "utils.model_zoo.models imports utils.metrics.loss (model_zoo may not import metrics)"
    ]
    assert upward_imports({"utils.metrics.loss": {"utils.model_zoo.models"}, "utils.model_zoo.models": set()}) == []


def test_every_module_of_utils_lives_in_a_known_layer():
    unknown = sorted(m for m in import_graph() if layer(m) not in MAY_IMPORT and layer(m) != "front door")
    assert unknown == [], "a module outside the packages: put it in one (see utils/__init__.py) or add a layer here"


def test_imports_run_down_the_layers_only():
    graph = import_graph()
    assert "utils.model_zoo.models" in graph["utils.metrics.common"]  # the walk sees the packages' modules
    assert upward_imports(graph) == [], "move what the lower module needs down, or the module up"
