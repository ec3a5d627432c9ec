"""The package's layers point one way (docs/design.md section 6, README "Layout"): a test reads every import.

nn (modules, no I/O) <- hub and the loaders <- method <- eval <- cli, apps and the notebooks; world and pretrain
are peers used from above. cli (the ``facestyle`` command) is the top: it may import every layer, none imports it.
Imports inside functions count too: a lazy import is still a dependency.
"""
import ast
from pathlib import Path

import facestyle

PKG = Path(facestyle.__file__).parent

# What each layer must not import (facestyle sub-packages / modules, by their first name under facestyle).
FORBIDDEN = {
    "nn": {"hub", "config", "method", "eval", "cli", "apps", "pretrain", "world", "runs", "manifest", "demo",
           "distributed", "notebook", "explorer", "bench", "bench_method"},
    "method": {"eval", "cli", "apps", "pretrain", "demo", "notebook", "explorer", "bench", "bench_method"},
    "eval": {"cli", "apps", "pretrain", "demo", "notebook", "explorer"},
    "runs": {"method", "eval", "cli", "apps", "pretrain", "nn", "world"},
    "distributed": {"method", "eval", "cli", "apps", "pretrain", "nn", "world", "hub", "config", "runs"},
    "manifest": {"method", "eval", "cli", "apps", "pretrain", "nn", "world"},
    "images": {"method", "eval", "cli", "apps", "pretrain", "nn", "world", "hub", "config"},
    "hub": {"method", "eval", "cli", "apps", "pretrain", "demo", "notebook", "explorer", "bench", "bench_method"},
    "world": {"nn", "hub", "method", "eval", "cli", "apps", "pretrain", "demo", "notebook", "explorer", "bench",
              "bench_method"},
    "pretrain": {"method", "eval", "cli", "apps", "demo", "notebook", "explorer", "bench", "bench_method"},
}
# Known exceptions as (file under facestyle/, imported name), each with the reason it is still there (issue "a
# house a newcomer can live in"). None today: keep it empty rather than widen FORBIDDEN's holes silently.
ALLOWED: set[tuple[str, str]] = set()


def _imports(path: Path) -> set[str]:
    """First facestyle-level names imported by ``path`` (``from ..hub import x`` -> "hub")."""
    rel = path.relative_to(PKG)
    pkg_parts = list(rel.parent.parts)
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("facestyle."):
                    out.add(a.name.split(".")[1])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module and node.module.startswith("facestyle."):
                    out.add(node.module.split(".")[1])
                elif node.module == "facestyle":
                    out.update(a.name for a in node.names)
                continue
            base = pkg_parts[:len(pkg_parts) - (node.level - 1)] if node.level > 1 else pkg_parts
            if node.level - 1 > len(pkg_parts):
                continue
            target = base + (node.module.split(".") if node.module else [])
            if target:
                out.add(target[0])
            else:  # "from .. import world, hub"
                out.update(a.name for a in node.names)
    return out


def _layer(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def test_imports_point_one_way():
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        layer = _layer(path)
        rel = str(path.relative_to(PKG))
        for name in sorted(_imports(path) & FORBIDDEN.get(layer, set())):
            if (rel, name) not in ALLOWED:
                bad.append(f"facestyle/{rel} imports facestyle.{name} (layer {layer!r} must not)")
    assert not bad, "imports that run against the layering:\n" + "\n".join(bad)


def test_no_library_layer_imports_the_cli():
    assert all("cli" in FORBIDDEN[layer] for layer in ("nn", "method", "eval", "hub", "runs", "world", "pretrain"))
    assert "cli" not in FORBIDDEN


def test_the_reader_understands_relative_imports():
    assert "runs" in _imports(PKG / "method" / "finetune.py")
    assert "method" in _imports(PKG / "cli" / "finetune.py")  # a lazy "from ..method.finetune import" counts
    assert "train_ops" not in _imports(PKG / "method" / "losses.py")  # "from ..nn.train_ops" is layer nn
    assert "nn" in _imports(PKG / "method" / "losses.py")
