"""Import hygiene: `import mk_keras` works without scikit-learn and matplotlib, `mk_keras.analysis` is a leaf
that only the mk-filters binary imports, and the package's parts import each other without cycles."""

import ast
import os
import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.backend_agnostic

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "mk_keras"
ANALYSIS_ONLY = ("sklearn", "matplotlib")

_BLOCKED_IMPORT = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {ANALYSIS_ONLY!r}:
            raise ImportError(name + " is blocked")
sys.meta_path.insert(0, Block())
import mk_keras
from mk_keras.master_keys import assign_master_keys
import mk_keras.training, mk_keras.experiments, mk_keras.sources
print(sorted(m for m in sys.modules if m.split(".")[0] in {ANALYSIS_ONLY!r} or m.startswith("mk_keras.analysis")))
try:
    import mk_keras.analysis
except ImportError as e:
    print("analysis:", e)
"""


def test_mk_keras_imports_without_scikit_learn_and_matplotlib():
    """Keras itself imports both when they are installed, so they are made unimportable here."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", _BLOCKED_IMPORT], capture_output=True, text=True, env=env,
                         cwd=PACKAGE.parent, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert lines[-2] == "[]", lines
    assert lines[-1].startswith("analysis:") and "is blocked" in lines[-1]  # the block works


def _unit(module):
    """The part of the package a dotted module belongs to: a subpackage or a top-level module."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _edges():
    """{(importing unit, imported unit)} over every `import mk_keras...` statement (function-level included)."""
    units = {p.stem for p in PACKAGE.glob("*.py")} | {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    edges = set()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        source = _unit(".".join(rel.parts))
        if source in (None, "__init__"):
            continue  # mk_keras/__init__.py imports the public API from everywhere
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == "mk_keras":
                    targets = [f"mk_keras.{alias.name}" for alias in node.names if alias.name in units]
                else:
                    targets = [node.module]
            else:
                continue
            for target in targets:
                if target.startswith("mk_keras.") and _unit(target) != source:
                    edges.add((source, _unit(target)))
    return edges


def test_only_the_cli_imports_analysis():
    importers = {a for a, b in _edges() if b == "analysis"}
    assert importers == {"cli"}, importers


def test_no_import_cycles_between_parts_of_the_package():
    graph = {}
    for a, b in _edges():
        graph.setdefault(a, set()).add(b)
    assert graph.get("models", set()) <= {"models"}  # the builders depend on Keras only
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            assert state.get(nxt) != "open", f"import cycle: {' -> '.join(path + [nxt])}"
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
