"""The package's layering, read from the source: one-way imports, no cycles, no private names
across modules, function-local project imports only with their reason, and a public API that
imports no TensorFlow.

The layers, lowest first (pwavenet/__init__.py and docs/design.md describe them): a module may
import its own package and anything in a lower layer; modules of two different packages in the
same layer (data and training, evaluation and the vocoder) do not import each other.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pwavenet")

LAYERS = {
    "pwavenet.config_schema": 0,  # imports nothing: launch checks configs before JAX starts
    "pwavenet.audio": 0,
    "pwavenet.models": 1,
    "pwavenet.flows.bijectors": 1,
    "pwavenet.flows.toy2d": 1,
    "pwavenet.distillation": 2,
    "pwavenet.data": 3,
    "pwavenet.training": 3,
    "pwavenet.evaluation": 4,
    "pwavenet.vocoder": 4,
    "pwavenet.jobs": 5,
    "pwavenet.flows.fitting": 5,
    "pwavenet.flows": 5,  # the package's __init__: re-exports the toolkit only
}


def _modules() -> dict[str, str]:
    """Module name -> path, for every .py file of the package."""
    out = {}
    for folder, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                rel = os.path.relpath(path, os.path.dirname(ROOT))[: -len(".py")]
                name = rel.replace(os.sep, ".").removesuffix(".__init__")
                out[name] = path
    return out


MODULES = _modules()


def _owner(name: str) -> str:
    """The longest LAYERS key that `name` is or lies under."""
    keys = [k for k in LAYERS if name == k or name.startswith(k + ".")]
    assert keys, f"{name} has no layer in tests/test_import_layering.py: add it to LAYERS"
    return max(keys, key=len)


def _resolve(target: str) -> str:
    """The project module an import of `target` loads (a name inside a module -> the module)."""
    while target not in MODULES and "." in target:
        target = target.rsplit(".", 1)[0]
    return target


def _imports(path: str):
    """(module imported, line, is_function_local, line text) for every project import."""
    source = open(path).read()
    lines = source.split("\n")
    tree = ast.parse(source)
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            if t == "pwavenet" or t.startswith("pwavenet."):
                yield _resolve(t), node.lineno, id(node) not in top, lines[node.lineno - 1]


def _graph() -> dict[str, set[str]]:
    return {
        name: {t for t, *_ in _imports(path) if t != name and t != "pwavenet"}
        for name, path in MODULES.items()
        if name != "pwavenet"
    }


def test_every_import_goes_down_or_stays_in_its_package():
    problems = []
    for name, path in MODULES.items():
        if name == "pwavenet":
            continue
        here = _owner(name)
        for target, line, _, _ in _imports(path):
            if target == "pwavenet":
                problems.append(f"{path}:{line} imports the top-level package (lazy API)")
                continue
            there = _owner(target)
            same_package = here.split(".")[:2] == there.split(".")[:2]
            if LAYERS[there] > LAYERS[here] or (LAYERS[there] == LAYERS[here] and not same_package):
                problems.append(
                    f"{path}:{line} ({here}, layer {LAYERS[here]}) imports {target} "
                    f"({there}, layer {LAYERS[there]})"
                )
    assert not problems, "\n".join(problems)


def test_no_import_cycle():
    graph = _graph()
    # Tarjan's strongly connected components; any component of two or more modules is a cycle.
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_cycle_check_finds_a_planted_cycle(monkeypatch):
    """The check itself: two modules importing each other are reported."""
    fake = {"pwavenet.a": {"pwavenet.b"}, "pwavenet.b": {"pwavenet.a"}, "pwavenet.c": set()}
    monkeypatch.setattr(sys.modules[__name__], "_graph", lambda: fake)
    with pytest.raises(AssertionError, match="pwavenet.a"):
        test_no_import_cycle()


def test_function_local_project_imports_say_why():
    problems = [
        f"{path}:{line}: {text.strip()}"
        for name, path in MODULES.items()
        for _, line, local, text in _imports(path)
        if local and "#" not in text
    ]
    assert not problems, "function-local project imports without a reason:\n" + "\n".join(problems)


def test_no_private_name_used_across_modules():
    problems = []
    for name, path in MODULES.items():
        tree = ast.parse(open(path).read())
        aliases = {}
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("pwavenet")
            ):
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        problems.append(f"{path}:{node.lineno} imports {node.module}.{a.name}")
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("pwavenet"):
                        aliases[a.asname or a.name.split(".")[0]] = a.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and _resolve(aliases[node.value.id]) in MODULES
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                problems.append(f"{path}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not problems, "\n".join(problems)


def test_public_api_imports_without_tensorflow():
    code = (
        "import sys, pwavenet\n"
        "names = [getattr(pwavenet, n) for n in pwavenet.__all__]\n"
        "assert pwavenet.flows.Planar and pwavenet.audio.mulaw_encode\n"
        "assert pwavenet.student_inverse is pwavenet.models.iaf.inverse\n"
        "print(sorted(pwavenet.__all__)); print('tensorflow' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(ROOT),
    ).stdout.split("\n")
    assert out[1] == "False", out
    assert "load_vocoder" in out[0] and "WaveNet" in out[0] and "IAFStudent" in out[0]
