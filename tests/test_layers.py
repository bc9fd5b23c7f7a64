"""The house's layers point down: utils <- data <- models (and toy) <- generate <- the scripts, the
pipeline and the benchmarks. A module imports only from its own package or a lower layer, in any
import statement, deferred ones included."""
import ast
import glob
import os

from tests.conftest import ROOT

LAYERS = {"utils": 0, "data": 1, "models": 2, "toy": 2, "generate": 3, "pipeline": 4}
TOP = 5  # run_*.py and benchmarks/: they may import anything


def project_imports(path: str) -> list[tuple[int, str]]:
    """(line, top-level package) of every import of a project package in the file."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, n.split(".")[0]) for n in names if n.split(".")[0] in LAYERS or n.startswith("run_")]
    return found


def layer_of(rel: str) -> tuple[str, int]:
    package = rel.split(os.sep)[0]
    return (package, LAYERS[package]) if package in LAYERS else (package, TOP)


def test_every_import_points_down():
    files = [f for f in glob.glob(os.path.join(ROOT, "**", "*.py"), recursive=True)
             if os.path.relpath(f, ROOT).split(os.sep)[0] in (*LAYERS, "benchmarks") or
             os.path.basename(f).startswith("run_") and os.path.dirname(f) == ROOT]
    assert len(files) > 40
    upward = []
    for path in files:
        rel = os.path.relpath(path, ROOT)
        package, rank = layer_of(rel)
        if rank == TOP:
            continue
        for line, target in project_imports(path):
            target_rank = TOP if target.startswith("run_") else LAYERS[target]
            if target_rank > rank or (target_rank == rank and target != package):
                upward.append(f"{rel}:{line} imports {target}")
    assert not upward, "\n".join(upward)  # (utils/, the lowest layer, so imports no project layer)
