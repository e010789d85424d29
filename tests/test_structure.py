"""The code's structure, read from its imports (``ast``, function-local imports included): no import cycle, and
imports run one way through the layers the folders name — ``core`` (contracts, errors, device, syncs) → ``io`` →
``ops`` (stateless tensor functions) → ``models`` (+ weights, converters, the model registry) → ``stages`` →
``jobs`` → ``corpus`` → ``cli``: a module may import its own layer and the ones before it, never one after it.
``gpuface --help`` imports no torch."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gpuface"

#: The layers, lowest first: each may import itself and the ones before it, never one after it.
LAYERS = ("core", "io", "ops", "models", "stages", "jobs", "corpus", "cli")


def _modules() -> dict[str, Path]:
    mods = {}
    for p in PACKAGE.rglob("*.py"):
        parts = p.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = p
    return mods


def _imports(name: str, path: Path, mods: dict) -> set[str]:
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".") if pkg else []
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("gpuface"):
                mod = node.module.removeprefix("gpuface").lstrip(".")
            else:
                continue
            targets = [mod] + [f"{mod}.{a.name}".lstrip(".") for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name.removeprefix("gpuface").lstrip(".") for a in node.names if a.name.startswith("gpuface")]
        out.update(t for t in targets if t in mods and t != name)
    return out


def _layer(name: str) -> int:
    """The index of a module's layer in :data:`LAYERS` (its top-level folder; the package root is below all)."""
    top = name.split(".")[0]
    return LAYERS.index(top) if top in LAYERS else -1


def test_no_import_cycle():
    mods = _modules()
    graph = {m: _imports(m, p, mods) for m, p in mods.items()}
    seen, stack, cycles = {}, [], []

    def visit(v):
        seen[v] = 1
        stack.append(v)
        for w in sorted(graph[v]):
            if seen.get(w) == 1:
                cycles.append(stack[stack.index(w):] + [w])
            elif w not in seen:
                visit(w)
        stack.pop()
        seen[v] = 2

    for m in sorted(graph):
        if m not in seen:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_imports_run_one_way():
    mods = _modules()
    stray = sorted(m for m in mods if m and _layer(m) < 0)
    assert not stray, f"modules outside the layers {LAYERS}: {stray}"
    upward = [f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
              for m, p in mods.items() if m for t in _imports(m, p, mods) if t and _layer(t) > _layer(m)]
    assert not upward, "\n".join(sorted(upward))


def test_the_checks_can_fail(tmp_path):
    """The two checks above on a made-up package: a cycle and an upward import are found."""
    global PACKAGE
    fake = tmp_path / "gpuface"
    (fake / "models").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "models" / "__init__.py").write_text("")
    (fake / "models" / "a.py").write_text("from ..jobs import Job\n")
    (fake / "jobs.py").write_text("def f():\n    from .models import a\n")
    saved, PACKAGE = PACKAGE, fake
    try:
        mods = _modules()
        assert "jobs" in _imports("models.a", mods["models.a"], mods)
        assert _layer("models.a") == 3 and _layer("jobs") == 5
        try:
            test_no_import_cycle()
        except AssertionError as e:
            assert "jobs -> models.a -> jobs" in str(e)
        else:
            raise AssertionError("the cycle was not found")
        try:
            test_imports_run_one_way()
        except AssertionError as e:
            assert "models.a (layer 3) imports jobs (layer 5)" in str(e)
        else:
            raise AssertionError("the upward import was not found")
    finally:
        PACKAGE = saved


def test_help_imports_no_torch():
    code = ("import sys, contextlib, io\nfrom gpuface.cli import build_parser\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "    build_parser().parse_args(['anonymize', '--help'])\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'pandas', 'numpy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_kernels_import_from_a_plain_checkout(tmp_path):
    """``kernels/`` is top-level (the required layout); ``import gpuface.kernels`` works from a checkout that is not
    installed (no editable-install finder), and gives the checkout's own files."""
    code = ("import sys\n"
            "sys.meta_path = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
            f"sys.path.insert(0, {str(ROOT)!r})\n"
            "import gpuface.kernels, gpuface.kernels._triton as t\n"
            "print(gpuface.kernels.__file__, t.__file__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert out.stdout.split() == [str(ROOT / "kernels" / "__init__.py"), str(ROOT / "kernels" / "_triton.py")]
