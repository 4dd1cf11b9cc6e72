"""The architecture of docs/architecture.md holds: each package imports only the packages below it."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "microturn"
ORDER = ["codecs", "stream", "model", "data", "train", "runtime", "bench", "serve"]


def _imports(path: Path) -> set[str]:
    """microturn packages a module imports (relative or absolute, at any depth, lazy imports included)."""
    pkg = path.relative_to(ROOT).parts[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                found.add(pkg)
            elif node.level >= 2 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 0 and node.module and node.module.startswith("microturn."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("microturn.")}
    return found & set(ORDER)


def test_each_package_imports_only_lower_layers():
    bad = []
    for pkg in ORDER:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for dep in _imports(path):
                if ORDER.index(dep) > ORDER.index(pkg):
                    bad.append(f"{path.relative_to(ROOT)} imports {dep}")
    assert not bad, "layering violated:\n" + "\n".join(bad)


def test_nothing_imports_serve():
    users = [p for p in ROOT.rglob("*.py") if p.parts[-2] != "serve" and p.name != "cli.py" and "serve" in _imports(p)]
    assert not users, users
