"""The house's layers point down: utils <- data <- models (and toy) <- generate <- the stage scripts
(run_*.py) and the benchmarks <- the pipeline <- run_pipeline.py. A module imports only from its own
package or a lower layer, in any import statement, deferred ones included; the pipeline's stage
table counts as an import of every script it names."""
import ast
import glob
import os

from tests.conftest import ROOT

LAYERS = {"utils": 0, "data": 1, "models": 2, "toy": 2, "generate": 3, "benchmarks": 4, "pipeline": 5}
SCRIPTS = 4  # run_*.py: each a room of its own, so no script imports another
TOP = 6  # run_pipeline.py: it may import anything


def rank_of(name: str) -> tuple[str, int]:
    """(room, layer) of a top-level package or script module name."""
    if name == "run_pipeline":
        return name, TOP
    if name.startswith("run_"):
        return name, SCRIPTS
    return name, LAYERS[name]


def project_imports(path: str) -> list[tuple[int, str]]:
    """(line, top-level package or script) of every import of the project in the file."""
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


def stage_table_imports() -> list[tuple[int, str]]:
    """The scripts the pipeline's stage table runs (it imports them by name when a stage runs)."""
    from pipeline.stages import STAGES

    return [(0, module.split(".")[0]) for stage in STAGES.values() for module in stage.scripts]


def upward_imports(rel: str, imports: list[tuple[int, str]]) -> list[str]:
    room, rank = rank_of(rel.split(os.sep)[0].removesuffix(".py"))
    wrong = []
    for line, target in imports:
        target_room, target_rank = rank_of(target)
        if target_rank > rank or (target_rank == rank and target_room != room):
            wrong.append(f"{rel}:{line} imports {target}")
    return wrong


def test_every_import_points_down():
    files = [f for f in glob.glob(os.path.join(ROOT, "**", "*.py"), recursive=True)
             if os.path.relpath(f, ROOT).split(os.sep)[0] in LAYERS or
             os.path.basename(f).startswith("run_") and os.path.dirname(f) == ROOT]
    assert len(files) > 40
    upward = []
    for path in files:
        rel = os.path.relpath(path, ROOT)
        upward += upward_imports(rel, project_imports(path))
    upward += upward_imports(os.path.join("pipeline", "stages.py"), stage_table_imports())
    assert not upward, "\n".join(upward)  # (utils/, the lowest layer, so imports no project layer)


def test_the_stage_table_is_seen_and_a_wrong_import_is_caught():
    scripts = {name for _, name in stage_table_imports()}
    assert {"run_sft", "run_preference_refinement", "run_m_dpo", "run_eval", "toy", "generate"} <= scripts
    assert upward_imports(os.path.join("benchmarks", "bench_x.py"), [(3, "run_preference_refinement")]) == \
        [os.path.join("benchmarks", "bench_x.py") + ":3 imports run_preference_refinement"]
    assert upward_imports("run_sft.py", [(1, "run_eval")])  # scripts do not import each other
    assert upward_imports("run_sft.py", [(1, "pipeline")])
    assert not upward_imports("run_pipeline.py", [(1, "pipeline"), (2, "run_sft")])
