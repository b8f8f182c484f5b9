"""The layers of the package, read from the source with ``ast`` (nothing is imported).

Floors, lowest first; a module may import only from its own floor or below, and packages that
share a floor (data and rewards; runs, report and serve) never import each other:

    errors, logs, io, types, registry, overrides, sysinfo, seeding  <  models  <  data | rewards
    <  decoding  <  metrics  <  runs | report | serve  <  cli

Also: no import cycle between modules, ``typer`` and rich tables only in ``cli/``, and an import
inside a function only for a heavy optional dependency, with a comment saying why. Imports
under ``if TYPE_CHECKING:`` (annotations only) are not run, so they count for none of this,
except that they may not go up a floor either (checked by ruff's type-checking rules at most).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "persalign"

GROUND = ("errors", "logs", "io", "types", "registry", "overrides", "sysinfo", "seeding")
FLOORS = [GROUND, ("models",), ("data", "rewards"), ("decoding",), ("metrics",)]
FLOORS += [("runs", "report", "serve"), ("cli",)]
# packages on one floor that are siblings, not a stack: neither imports the other
SIBLINGS = [("data", "rewards"), ("runs", "report", "serve")]
# Imported inside functions only: heavy and needed by few commands (each import carries a comment).
TYPE_CHECKING = ("TYPE_CHECKING", "typing.TYPE_CHECKING")
LAZY_ALLOWED = {
    "ray",
    "matplotlib",
    "sentence_transformers",
    "bert_score",
    "datasets",
    "rouge_score",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def floor_of(module: str) -> int:
    """The floor index of a persalign module (the package root itself is the ground floor)."""
    parts = module.split(".")
    if len(parts) == 1:
        return 0
    for index, names in enumerate(FLOORS):
        if parts[1] in names:
            return index
    raise AssertionError(f"{module}: not on any floor; add it to FLOORS in this test")


def resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path, module: str | None = None) -> list[tuple[str, int, bool, str]]:
    """(imported module, line, inside a function, source line) for every import in ``path``."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    tree = ast.parse(source)
    module = module or module_name(path)
    inside: set[int] = set()
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            inside.update(id(sub) for sub in ast.walk(node))
        if isinstance(node, ast.If) and ast.unparse(node.test) in TYPE_CHECKING:
            typing_only.update(id(sub) for sub in ast.walk(node))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = resolve(node, module, path.name == "__init__.py")
            targets = [target]
            if target == "persalign":
                targets = [f"persalign.{a.name}" for a in node.names]
            elif target.startswith("persalign"):
                # ``from persalign.x import y`` may name a submodule y: count it as such
                targets = [
                    f"{target}.{a.name}"
                    if (SRC / target.replace(".", "/") / a.name).exists()
                    or (SRC / target.replace(".", "/") / f"{a.name}.py").exists()
                    else target
                    for a in node.names
                ]
        else:
            continue
        if id(node) in typing_only:
            continue  # annotations only: never imported at run time
        text = lines[node.lineno - 1]
        for target in targets:
            out.append((target, node.lineno, id(node) in inside, text))
    return out


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def known(target: str, modules: dict[str, Path]) -> str | None:
    """The persalign module an import names (a module, or the package holding a name)."""
    while target:
        if target in modules:
            return target
        target = target.rpartition(".")[0]
    return None


def test_no_import_goes_up_a_floor():
    modules = all_modules()
    wrong = []
    for module, path in modules.items():
        for target, line, _, _ in imports_of(path):
            if not target.startswith("persalign"):
                continue
            found = known(target, modules)
            assert found is not None, f"{path}:{line}: imports unknown module {target}"
            if floor_of(found) > floor_of(module):
                wrong.append(f"{path.relative_to(SRC)}:{line}: {module} imports {found}")
    assert not wrong, "imports that go up a floor:\n" + "\n".join(wrong)


def test_siblings_on_one_floor_never_import_each_other():
    """data and rewards, and runs, report and serve, share a floor: none imports another."""
    modules = all_modules()
    wrong = []
    for module, path in modules.items():
        parts = module.split(".")
        if len(parts) < 2:
            continue
        for group in SIBLINGS:
            if parts[1] not in group:
                continue
            for target, line, _, _ in imports_of(path):
                found = known(target, modules) if target.startswith("persalign") else None
                other = found.split(".")[1] if found and "." in found else None
                if other in group and other != parts[1]:
                    wrong.append(f"{path.relative_to(SRC)}:{line}: {module} imports {found}")
    assert not wrong, "siblings importing each other:\n" + "\n".join(wrong)


def test_no_import_cycle():
    modules = all_modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        for target, _, _, _ in imports_of(path):
            found = known(target, modules) if target.startswith("persalign") else None
            if found and found != module and not module.startswith(found + "."):
                graph[module].add(found)
    # a package's __init__ re-exporting its own modules is not a cycle of modules
    for module in modules:
        graph[module] = {t for t in graph[module] if not t.startswith(module + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(modules):
        if module not in state:
            visit(module)


def test_typer_and_rich_tables_only_in_cli():
    wrong = []
    for module, path in all_modules().items():
        if module.startswith("persalign.cli"):
            continue
        for target, line, _, _ in imports_of(path):
            if target.split(".")[0] == "typer" or target.startswith("rich.table"):
                wrong.append(f"{path.relative_to(SRC)}:{line}: {target}")
    assert not wrong, "typer / rich tables outside cli/:\n" + "\n".join(wrong)


def test_web_server_libraries_only_in_serve():
    """fastapi, starlette, uvicorn and prometheus_client belong to serve/ (and cli/serve.py)."""
    web = {"fastapi", "starlette", "uvicorn", "prometheus_client"}
    wrong = []
    for module, path in all_modules().items():
        if module.startswith("persalign.serve") or module == "persalign.cli.serve":
            continue
        for target, line, _, _ in imports_of(path):
            if target.split(".")[0] in web:
                wrong.append(f"{path.relative_to(SRC)}:{line}: {target}")
    assert not wrong, "web server libraries outside serve/:\n" + "\n".join(wrong)


def test_imports_inside_functions_only_for_heavy_optional_dependencies():
    wrong = []
    for _, path in all_modules().items():
        for target, line, inside, text in imports_of(path):
            if not inside:
                continue
            top = target.split(".")[0]
            if top not in LAZY_ALLOWED or "#" not in text:
                wrong.append(f"{path.relative_to(SRC)}:{line}: {text.strip()}")
    assert not wrong, "imports inside functions:\n" + "\n".join(wrong)


def test_the_floors_are_checked_on_a_known_bad_graph(tmp_path):
    """The checker itself: an upward import is found (a test that cannot pass vacuously)."""
    assert floor_of("persalign.models.loading") < floor_of("persalign.runs.cells")
    assert floor_of("persalign.io") == 0 and floor_of("persalign.cli") == len(FLOORS) - 1
    assert floor_of("persalign.seeding") == 0
    assert floor_of("persalign.serve.app") > floor_of("persalign.decoding.args")
    assert floor_of("persalign.serve.app") > floor_of("persalign.rewards.engine.training")
    assert floor_of("persalign.serve.app") == floor_of("persalign.report.writer")
    bad = tmp_path / "probe.py"
    bad.write_text("from persalign.runs import cells\n\ndef f():\n    import torch\n")
    found = imports_of(bad, "persalign.models.probe")
    assert [(t, inside) for t, _, inside, _ in found] == [
        ("persalign.runs.cells", False),
        ("torch", True),
    ]
    target = known(found[0][0], all_modules())
    assert floor_of(target) > floor_of("persalign.models.probe")
