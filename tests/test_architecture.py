"""The house dependency rules (STYLE.md §2), enforced by parsing every module's imports with ``ast``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "metantk_zoo"
MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Top-level names of every module imported by ``path`` (relative imports as ``.name``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                names.add("." + (node.module or "").split(".")[0])
            else:
                names.add(node.module.split(".")[0])
    return names


def _rel(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


STDLIB_ONLY = {"errors.py", "genotype.py", "zoo.py"}
OWNERS = {  # third-party package -> the only place that may import it
    "datasets": "data/",
    "typer": "cli/",
    "rich": "cli/",
}


def test_package_has_modules():
    assert {"genotype.py", "ops.py", "network.py", "models.py", "cli/__init__.py"} <= {_rel(p) for p in MODULES}


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_module_respects_dependency_rules(path):
    rel = _rel(path)
    imports = _imports(path)
    if rel in STDLIB_ONLY:
        third_party = {n for n in imports if not n.startswith(".") and n not in sys.stdlib_module_names}
        assert not third_party, f"{rel} must use the standard library only, imports {third_party}"
    for package, owner in OWNERS.items():
        if package in imports:
            assert rel.startswith(owner), f"only {owner} may import {package}; {rel} does"
    if "huggingface_hub" in imports:
        assert rel in ("hub.py", "cli/hub.py") or rel.startswith("data/"), f"{rel} imports huggingface_hub"
    if rel in ("kernels.py", "regions.py"):
        assert not imports & {"numpy", "scipy"}, f"{rel} must be pure torch"
        text = path.read_text()
        assert ".cuda(" not in text, f"{rel} must run on its inputs' device"
    if rel in ("train.py", "evaluate.py"):
        assert ".genotype" not in imports, f"{rel} must not see genotypes"
    if rel != "__main__.py":  # ``python -m metantk_zoo`` is the CLI's second entry point
        assert "cli" not in {n.lstrip(".") for n in imports} or rel.startswith("cli/"), f"{rel} imports the CLI"


def test_source_never_evals_or_unpickles_untrusted_input():
    for path in MODULES:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in ("eval", "exec"), f"{_rel(path)} calls {node.func.id}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load":
                base = node.func.value
                if isinstance(base, ast.Name) and base.id == "pickle":
                    raise AssertionError(f"{_rel(path)} calls pickle.load; use the restricted unpickler")
                if isinstance(base, ast.Name) and base.id == "torch":
                    kw = {k.arg: k.value for k in node.keywords}
                    ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                    assert ok, f"{_rel(path)} calls torch.load without weights_only=True"


def test_import_is_light():
    """``import metantk_zoo`` pulls in torch and timm, nothing heavier (no datasets, CLI, opacus, scipy)."""
    code = (
        "import sys, metantk_zoo; "
        "print(','.join(m for m in ('datasets', 'typer', 'opacus', 'scipy', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent)
    assert out.stdout.strip() == ""
