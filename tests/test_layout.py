"""The package's layout is its architecture: each folder one stage, imports only run downwards.

Stages, lowest first (a module may import its own stage and the ones below it, never above):
formats (sparsity, targets) -> PyTorch side (compress) and TE computes -> schedules -> passes ->
importer -> devices -> tuning -> build -> applications -> the package face.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tvm_patterns as tp

ROOT = Path(__file__).resolve().parent.parent
STAGES = [
    ("tvm_patterns.sparsity", "tvm_patterns.targets"),
    ("tvm_patterns.compress", "tvm_patterns.computes"),
    ("schedules",),
    ("tvm_patterns.passes",),
    ("tvm_patterns.importer",),
    ("tvm_patterns.devices",),
    ("tvm_patterns.tuning",),
    ("tvm_patterns.build",),
    ("tvm_patterns.apps",),
    ("tvm_patterns",),
]


def stage_of(module: str) -> int:
    """The stage of a dotted module name (the longest matching prefix decides)."""
    best, rank = -1, None
    for r, prefixes in enumerate(STAGES):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, rank = len(p), r
    assert rank is not None, f"{module} belongs to no stage"
    return rank


def modules() -> list[tuple[str, Path]]:
    found = []
    for package in ("tvm_patterns", "schedules"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found.append((".".join(parts), path))
    return found


def imports(name: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) of every import of ours in a module."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    # module level: the body, and the bodies of module-level if / try (not functions or classes)
    top, level = set(), list(tree.body)
    while level:
        node = level.pop()
        top.add(id(node))
        if isinstance(node, (ast.If, ast.Try)):
            level += node.body + node.orelse + getattr(node, "finalbody", []) + \
                [x for h in getattr(node, "handlers", []) for x in h.body]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            targets = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        for t in targets:
            if t.split(".")[0] in ("tvm_patterns", "schedules"):
                found.append((t, node.lineno, id(node) in top))
    return found


MODULES = modules()


@pytest.mark.parametrize("name,path", MODULES, ids=[m for m, _ in MODULES])
def test_imports_run_downwards_and_at_module_level(name, path):
    own = stage_of(name)
    for target, line, top_level in imports(name, path):
        assert top_level, f"{path.name}:{line} imports {target} inside a function (a hidden dependency)"
        assert stage_of(target) <= own, (f"{path.name}:{line}: {name} (stage {STAGES[own][0]}) imports {target} "
                                         f"from a later stage ({STAGES[stage_of(target)][0]})")


def test_the_top_level_holds_only_the_package_face_and_the_public_api_modules():
    loose = sorted(p.name for p in (ROOT / "tvm_patterns").glob("*.py"))
    assert loose == ["__init__.py", "build.py", "importer.py", "targets.py"]


@pytest.mark.parametrize("name", ["build", "pipeline", "from_pytorch", "tune", "export_library",
                                  "PatternConvRewrite", "SparseRewrite", "LayerDecision", "PatternLibrary"])
def test_public_names_stay_importable_from_the_package(name):
    assert callable(getattr(tp, name))


def test_targets_and_compress_stay_public():
    from tvm_patterns import compress

    assert callable(tp.targets.host) and callable(tp.targets.arm_cpu) and callable(tp.targets.mali)
    for name in ("ADMMPruner", "oneshot_prune", "pattern_prune", "parse_config", "register_kind"):
        assert hasattr(compress, name), name
