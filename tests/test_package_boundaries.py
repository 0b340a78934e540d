"""The library never imports Airflow; DAG files import nothing heavy at module level."""

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import curation

ROOT = Path(__file__).resolve().parent.parent
HEAVY = {"torch", "open_clip", "fasttext", "great_expectations", "pyarrow", "pandas", "curation"}


def test_importing_every_curation_module_does_not_import_airflow():
    modules = sorted(m.name for m in pkgutil.walk_packages(curation.__path__, "curation."))
    assert "curation.pipeline" in modules and "curation.cli" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.'))\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dag_files_have_no_heavy_top_level_imports():
    for path in (ROOT / "dags").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only; imports inside tasks are the point
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                heavy = [n for n in names if n.split(".")[0] in HEAVY]
                assert not heavy, f"{path.name}:{node.lineno} imports {heavy} at top level"
