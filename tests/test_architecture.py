"""The house layout and dependency rules (STYLE.md §1-2, README "Layout"), checked by parsing every import with ``ast``.

Layers, lowest first; a module may import its own subpackage, anything in a lower layer, and nothing above:

    0  errors, version; then genotype, utils/   value types and helpers everyone uses
    1  models/, data/                           (models may read data/constants.py, a leaf of numbers, as timm does)
    2  nas/, train/, meta/, fewshot/, hub/      (meta may use train's loop)
    3  pipeline                                 the stages as functions
    4  cli/                                     Typer commands only

Lazy imports (inside functions) count like top-level ones.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "metantk_zoo"
MODULES = sorted(p for p in PACKAGE.rglob("*.py"))

LAYERS = {
    "errors": 0, "version": 0, "genotype": 0.5, "utils": 0.5,
    "models": 1, "data": 1,
    "nas": 2, "train": 2, "meta": 2, "fewshot": 2, "hub": 2,
    "pipeline": 3,
    "cli": 4,
}
# same- or lower-layer imports between different parts that the rules allow explicitly
ALLOWED_SIDEWAYS = {("meta", "train"), ("models", "data.constants")}
SUBPACKAGES = {"models", "data", "nas", "train", "meta", "fewshot", "hub", "utils", "cli"}


def _rel(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def _module_name(path: Path) -> str:
    parts = ["metantk_zoo", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_of(path: Path) -> str:
    name = _module_name(path)
    return name if path.name == "__init__.py" else name.rsplit(".", 1)[0]


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").is_file() or (PACKAGE / rel / "__init__.py").is_file()


def _internal_imports(path: Path) -> set[str]:
    """Every ``metantk_zoo`` module ``path`` imports, lazy imports included (``from . import x`` -> ``pkg.x``)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "metantk_zoo"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package_of(path).split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "metantk_zoo":
                module = node.module
            else:
                continue
            submodules = {f"{module}.{a.name}" for a in node.names if _exists(f"{module}.{a.name}")}
            if len(submodules) < len(node.names):  # ``from pkg import name``: pkg itself is what is read
                out.add(module)
            out |= submodules
    return out - {_module_name(path)}


def _third_party(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names - {"metantk_zoo"}


def _part(module: str) -> str:
    """``metantk_zoo.nas.loop`` -> ``nas``; the root package -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


GRAPH = {_module_name(p): _internal_imports(p) for p in MODULES}


def test_layout_has_one_subpackage_per_capability():
    names = {_rel(p) for p in MODULES}
    for sub in SUBPACKAGES:
        assert f"{sub}/__init__.py" in names, f"missing subpackage {sub}/"
    assert {"pipeline.py", "errors.py", "genotype.py", "version.py", "data/constants.py",
            "models/complexity.py", "utils/rundir.py", "utils/distributed.py"} <= names
    top = {n for n in names if "/" not in n}
    assert top <= {"__init__.py", "__main__.py", "errors.py", "genotype.py", "version.py", "pipeline.py"}, top


def test_every_module_states_its_job_in_its_first_docstring_line():
    for path in MODULES:
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc and doc.strip().splitlines()[0].strip(), f"{_rel(path)} has no module docstring"


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_imports_point_down(path):
    """An import points into the module's own part or a lower layer (or an allowed sideways edge), never up."""
    me = _module_name(path)
    mine = _part(me)
    if mine in ("", "__main__"):  # the root re-exports the public API; ``python -m metantk_zoo`` runs the CLI
        return
    for target in GRAPH[me]:
        theirs = _part(target)
        assert theirs, f"{_rel(path)} imports the package root; import from the defining module instead"
        if theirs == mine:
            continue
        sideways = any(mine == a and (theirs == b or target.startswith(f"metantk_zoo.{b}")) for a, b in
                       ALLOWED_SIDEWAYS)
        assert LAYERS[theirs] < LAYERS[mine] or sideways, (
            f"{_rel(path)} (layer {LAYERS[mine]}, {mine}) imports {target} (layer {LAYERS[theirs]}): "
            "imports point down")


def test_models_read_only_the_data_constants():
    for path in (p for p in MODULES if _rel(p).startswith("models/")):
        for target in GRAPH[_module_name(path)]:
            if _part(target) == "data":
                assert target == "metantk_zoo.data.constants", f"{_rel(path)} imports {target}"


def test_no_import_cycles():
    """No circle between modules, lazy imports included (a subpackage's ``__init__`` counts as a module)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH.get(node, ())):
            if nxt not in GRAPH:
                continue
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)


@pytest.mark.parametrize("path", [p for p in MODULES if _rel(p).startswith("cli/")], ids=_rel)
def test_no_command_imports_another_command(path):
    shared = {"metantk_zoo.cli", "metantk_zoo.cli._app", "metantk_zoo.cli._options"}
    me = _module_name(path)
    others = {t for t in GRAPH[me] if _part(t) == "cli" and t not in shared and t != me}
    assert not others, f"{_rel(path)} imports command module(s) {others}; shared code belongs in the pipeline"


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_third_party_owners(path):
    rel = _rel(path)
    imports = _third_party(path)
    if rel in ("errors.py", "genotype.py", "version.py", "data/constants.py", "models/genotypes.py"):
        extra = {n for n in imports if n not in sys.stdlib_module_names}
        assert not extra, f"{rel} must use the standard library only, imports {extra}"
    owners = {"datasets": ("data/",), "typer": ("cli/",), "rich": ("cli/",), "opacus": ("nas/",),
              "huggingface_hub": ("hub/", "data/", "models/_manifests.py")}
    for package, allowed in owners.items():
        if package in imports:
            assert rel.startswith(allowed), f"only {allowed} may import {package}; {rel} does"
    if rel in ("nas/kernels.py", "nas/regions.py"):
        assert not imports & {"numpy", "scipy"}, f"{rel} must be pure torch"
        assert ".cuda(" not in path.read_text(), f"{rel} must run on its inputs' device"
    if rel.startswith(("train/", "fewshot/", "meta/")):
        assert "metantk_zoo.genotype" not in GRAPH[_module_name(path)], f"{rel} must not see genotypes"


def test_library_never_imports_the_cli():
    for path in MODULES:
        rel = _rel(path)
        if rel.startswith("cli/") or rel == "__main__.py":  # ``python -m metantk_zoo`` is the CLI's second entry
            continue
        assert not {t for t in GRAPH[_module_name(path)] if _part(t) == "cli"}, f"{rel} imports the CLI"


def test_scripts_never_import_cli_internals():
    scripts = Path(__file__).resolve().parents[1] / "scripts"
    for path in scripts.glob("*.py"):
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("metantk_zoo.cli."):
                raise AssertionError(f"scripts/{path.name} imports {node.module}; use metantk_zoo.pipeline")


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


def test_rules_catch_violations(tmp_path):
    """The checks themselves: an upward import, a cycle and a command importing a command are all detected."""
    global GRAPH
    saved = dict(GRAPH)
    try:
        GRAPH["metantk_zoo.utils.io"] = GRAPH["metantk_zoo.utils.io"] | {"metantk_zoo.nas.loop"}
        with pytest.raises(AssertionError, match="imports point down"):
            test_imports_point_down(PACKAGE / "utils" / "io.py")
        GRAPH = dict(saved)
        GRAPH["metantk_zoo.errors"] = {"metantk_zoo.genotype"}
        GRAPH["metantk_zoo.genotype"] = GRAPH["metantk_zoo.genotype"] | {"metantk_zoo.errors"}
        with pytest.raises(AssertionError, match="import cycle"):
            test_no_import_cycles()
        GRAPH = dict(saved)
        GRAPH["metantk_zoo.cli.demo"] = GRAPH["metantk_zoo.cli.demo"] | {"metantk_zoo.cli.train"}
        with pytest.raises(AssertionError, match="command module"):
            test_no_command_imports_another_command(PACKAGE / "cli" / "demo.py")
    finally:
        GRAPH = saved


def test_import_is_light():
    """``import metantk_zoo`` pulls in torch and timm, nothing heavier (no datasets, CLI, opacus, scipy)."""
    code = (
        "import sys, metantk_zoo; "
        "print(','.join(m for m in ('datasets', 'typer', 'opacus', 'scipy', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent)
    assert out.stdout.strip() == ""
