"""The package's layers (docs/DESIGN.md), checked on the source with ``ast``.

* a module imports (at module level) only modules of its own layer or of layers below it;
* no module-level import cycle;
* no module imports another module's underscore names;
* function-level imports of the package's own modules only where ALLOWED_LOCAL says why;
* few reaches into another object's underscore members (``obj._x`` where ``obj`` is not
  ``self`` / ``cls``): at most MAX_FOREIGN_PRIVATE.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "d2c_fast"

# Bottom to top. A module's layer is that of the longest prefix listed here.
LAYERS = [
    ["d2c_fast.errors", "d2c_fast.config", "d2c_fast.utils"],
    ["d2c_fast.images", "d2c_fast.diffusion", "d2c_fast.ops", "d2c_fast.kernels",
     "d2c_fast.models", "d2c_fast.data"],
    ["d2c_fast.checkpoint"],
    ["d2c_fast.runtime"],
    ["d2c_fast.attributes", "d2c_fast.edit", "d2c_fast.conditional", "d2c_fast.projector"],
    ["d2c_fast.sampler", "d2c_fast.gpu"],
    ["d2c_fast.demo", "d2c_fast.train", "d2c_fast.eval", "d2c_fast.jobs", "d2c_fast.serve"],
    ["d2c_fast.cli", "d2c_fast.__main__"],
]
# The package's face: `import d2c_fast` stays light, so Sampler / Attribute / load_config are
# reached lazily from d2c_fast/__init__.py (PEP 562 __getattr__).
FACE = "d2c_fast"

# Function-level imports of the package's own modules that are allowed, and why:
# (importing module, imported module): reason.
ALLOWED_LOCAL = {
    ("d2c_fast", "d2c_fast.sampler"): "lazy package face: import d2c_fast loads no model code",
    ("d2c_fast", "d2c_fast.attributes"): "lazy package face",
    ("d2c_fast", "d2c_fast.config"): "lazy package face",
    ("d2c_fast.ops", "d2c_fast._C"): "the compiled library is optional (reference fallback)",
    ("d2c_fast.ops.group_norm_silu", "d2c_fast.kernels"):
        "Triton kernels: optional, imported only where triton is installed",
    ("d2c_fast.cli.serve", "d2c_fast.serve"):
        "the serve extra (fastapi, uvicorn): optional, imported only by `d2c-fast serve`",
}
MAX_LOCAL = 15
MAX_FOREIGN_PRIVATE = 10


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules():
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        out[_module_name(p)] = p
    for p in sorted((ROOT / "kernels").glob("*.py")):   # installed as d2c_fast.kernels
        name = "d2c_fast.kernels" + ("" if p.stem == "__init__" else "." + p.stem)
        out[name] = p
    return out


MODULES = _modules()
COMPILED = {"d2c_fast._C"}   # the extension module (no Python source)


def _resolve(mod: str, path: Path, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = mod.split(".")
    if path.name != "__init__.py":
        base = base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(mod: str, path: Path):
    """(imported module, names, lineno, function-level?) for each import of d2c_fast."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []

    def visit(node, local):
        for child in ast.iter_child_nodes(node):
            is_fn = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for a in child.names:
                    if a.name.split(".")[0] == "d2c_fast":
                        found.append((a.name, [], child.lineno, local))
            elif isinstance(child, ast.ImportFrom):
                target = _resolve(mod, path, child)
                if target.split(".")[0] != "d2c_fast":
                    continue
                names = [a.name for a in child.names]
                # `from . import x` imports the submodule x
                subs = [n for n in names if f"{target}.{n}" in MODULES or f"{target}.{n}" in COMPILED]
                for n in subs:
                    found.append((f"{target}.{n}", [], child.lineno, local))
                rest = [n for n in names if n not in subs]
                if rest or not subs:
                    found.append((target, rest, child.lineno, local))
            visit(child, local or is_fn)

    visit(tree, False)
    return found


IMPORTS = {m: _imports(m, p) for m, p in MODULES.items()}


def _layer(mod: str) -> int | None:
    best, rank = -1, None
    for i, group in enumerate(LAYERS):
        for prefix in group:
            if (mod == prefix or mod.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    return rank


def _owner(target: str) -> str:
    """The module an import refers to (a name imported from a package resolves to it)."""
    while target not in MODULES and target not in COMPILED and "." in target:
        target = target.rsplit(".", 1)[0]
    return target


def test_every_module_has_a_layer():
    missing = [m for m in MODULES if m != FACE and _layer(m) is None and m != "d2c_fast._C"]
    assert not missing, f"modules in no layer of LAYERS: {missing}"


def test_no_import_of_a_higher_layer():
    bad = []
    for mod, imps in IMPORTS.items():
        if mod == FACE:
            continue
        for target, _, line, local in imps:
            t = _owner(target)
            if local or t == FACE:
                continue
            lm, lt = _layer(mod), _layer(t)
            if lm is not None and lt is not None and lt > lm:
                bad.append(f"{mod}:{line} imports {t} (layer {lt} > {lm})")
    assert not bad, "\n".join(bad)


def test_no_module_level_cycle():
    graph = {m: sorted({_owner(t) for t, _, _, local in imps if not local} - {m, FACE})
             for m, imps in IMPORTS.items()}
    # a package's __init__ re-exporting its submodules is not a cycle with them
    def edges(m):
        return [t for t in graph.get(m, []) if not t.startswith(m + ".")]
    state, stack, cycles = {}, [], []

    def dfs(m):
        state[m] = 1
        stack.append(m)
        for t in edges(m):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                dfs(t)
        stack.pop()
        state[m] = 2

    for m in graph:
        if m not in state:
            dfs(m)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_no_import_of_underscore_names():
    bad = []
    for mod, imps in IMPORTS.items():
        for target, names, line, _ in imps:
            owner = _owner(target)
            if owner == "d2c_fast._C":
                continue
            private_mod = any(p.startswith("_") and not p.startswith("__")
                              for p in target.split(".")[1:])
            # a package may use its own private submodules
            if private_mod and not target.startswith(mod.rsplit(".", 1)[0] + "."):
                bad.append(f"{mod}:{line} imports private module {target}")
            for n in names:
                if n.startswith("_") and not n.startswith("__"):
                    bad.append(f"{mod}:{line} imports {target}.{n}")
    assert not bad, "\n".join(bad)


def test_function_level_imports_are_few_and_named():
    local = [(mod, _owner(t), line) for mod, imps in IMPORTS.items()
             for t, _, line, is_local in imps if is_local]
    unexplained = [f"{m}:{line} imports {t}" for m, t, line in local
                   if (m, t) not in ALLOWED_LOCAL and (m, t.rsplit(".", 1)[0]) not in ALLOWED_LOCAL]
    assert not unexplained, "function-level imports of the package's own modules:\n" + \
        "\n".join(unexplained)
    assert len(local) <= MAX_LOCAL, local


def _foreign_private(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                and not node.attr.startswith("__"):
            base = node.value
            if isinstance(base, ast.Name) and base.id in ("self", "cls", "torch", "F"):
                continue
            if isinstance(base, ast.Attribute) and base.attr in ("ops",):
                continue
            out.append((node.lineno, ast.unparse(node)))
    return out


def test_few_reaches_into_private_members():
    found = [f"{MODULES[m].relative_to(ROOT)}:{line} {txt}" for m in MODULES
             for line, txt in _foreign_private(MODULES[m])]
    assert len(found) <= MAX_FOREIGN_PRIVATE, "\n".join(found)


@pytest.mark.parametrize("src,msg", [
    ("from ..sampler import _RNG\n", "imports d2c_fast.sampler._RNG"),
])
def test_the_checks_can_fail(tmp_path, src, msg):
    """The underscore check flags an import like the ones the redesign removed."""
    p = PKG / "edit.py"
    tree_imports = _imports("d2c_fast.edit", p)
    fake = tmp_path / "attributes_eval.py"
    fake.write_text(src)
    got = _imports("d2c_fast.eval.attributes_eval", fake)
    assert got and got[0][0] == "d2c_fast.sampler" and got[0][1] == ["_RNG"]
    assert all(n != "_RNG" for _, names, _, _ in tree_imports for n in names)
