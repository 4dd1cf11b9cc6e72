"""The architecture of docs/architecture.md holds: each package imports only the packages below it, nothing but the
CLI imports serve, and no modules import each other in a circle."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "microturn"
ORDER = ["codecs", "stream", "model", "data", "train", "runtime", "bench", "serve"]


def _name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in ROOT.rglob("*.py")}


def _imports(path: Path) -> set[str]:
    """microturn modules a module imports (relative or absolute, lazy imports included); ``from pkg import x``
    counts as importing ``pkg.x`` when that is a module, else ``pkg``."""
    here = _name(path).split(".")
    if path.name != "__init__.py":
        here = here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = ".".join(here[:len(here) - node.level + 1] + [node.module or ""]) if node.level else node.module
            base = base.rstrip(".")
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m in MODULES and m != _name(path)}


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ORDER else None


def test_each_package_imports_only_lower_layers():
    bad = []
    for pkg in ORDER:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for dep in filter(None, map(_package, _imports(path))):
                if ORDER.index(dep) > ORDER.index(pkg):
                    bad.append(f"{path.relative_to(ROOT)} imports {dep}")
    assert not bad, "layering violated:\n" + "\n".join(bad)


def test_nothing_imports_serve():
    users = [p for p in ROOT.rglob("*.py")
             if p.parts[-2] != "serve" and p.name != "cli.py" and "serve" in map(_package, _imports(p))]
    assert not users, users


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of the graph (its modules in order), or None."""
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done

    def walk(v: str, path: list[str]) -> list[str] | None:
        state[v] = 1
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return path[path.index(w):] + [v, w] if w in path else [v, w]
            if w not in state and (found := walk(w, path + [v])):
                return found
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (found := walk(v, [])):
            return found
    return None


def test_cycle_finder():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"b2", "c"}, "b2": set(), "c": {"b"}}) == ["b", "c", "b"]


def test_no_circular_imports():
    """Module by module, lazy imports too (a cycle a lazy import hides is still one the reader has to untangle)."""
    graph = {m: _imports(p) for m, p in MODULES.items()}
    assert set().union(*graph.values()) <= set(graph)
    assert "microturn.bench.agents" in graph["microturn.bench.run"]  # the graph sees relative imports
    found = _cycle(graph)
    assert found is None, "modules import each other: " + " -> ".join(found)
