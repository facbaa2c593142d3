"""The package is a one-way house: the core imports nothing outside itself (and never ROS), and no two modules of
the package import each other, directly or around a loop (imports inside functions count too).

The checker reads the source with ``ast`` (nothing is imported), and is itself tested on small trees with a
deliberate wrong-way import and a deliberate loop.
"""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

PACKAGE = Path(__file__).resolve().parents[1] / "camfusion_ros"
# What the core may use of the rest of the package: stdlib-only leaf modules (package data, the error contract).
CORE_MAY_IMPORT = {"resources", "cli_errors"}
ROS_PACKAGES = {"rclpy", "rosidl_runtime_py", "sensor_msgs", "geometry_msgs", "std_msgs", "nav_msgs",
                "builtin_interfaces", "tf2_msgs", "tf2_ros", "diagnostic_msgs", "visualization_msgs", "std_srvs",
                "rcl_interfaces", "rosgraph_msgs"}


def module_graph(package: Path) -> dict[str, set[str]]:
    """Module name -> every module of the same package it imports (top level or inside functions)."""
    top = package.name
    files = {".".join(f.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__"): f
             for f in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        deps: set[str] = set()
        pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(pkg[:len(pkg) - node.level + 1] + ([node.module] if node.module else []))
                # "from pkg import sub" imports the submodule when there is one
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            deps |= {n for n in names if n == top or n.startswith(top + ".")}
        graph[mod] = {d for d in deps if d in files and d != mod}
    return graph


def wrong_way_imports(graph: dict[str, set[str]], package: Path) -> list[str]:
    """Core modules importing outside the core (bar the allowed leaves) or any ROS package."""
    top = package.name
    core = f"{top}.core"
    allowed = {f"{top}.{m}" for m in CORE_MAY_IMPORT}
    bad = []
    for mod, deps in sorted(graph.items()):
        if mod == core or mod.startswith(core + "."):
            bad += [f"{mod} -> {d}" for d in sorted(deps) if not (d == core or d.startswith(core + ".") or d in allowed)]
            path = package.parent / (mod.replace(".", "/") + ".py")
            path = path if path.is_file() else package.parent / mod.replace(".", "/") / "__init__.py"
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
                bad += [f"{mod} -> {n}" for n in names if n.split(".")[0] in ROS_PACKAGES]
    return bad


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that import each other around a loop (strongly connected components above one module)."""
    names = sorted(graph)
    index = {n: i for i, n in enumerate(names)}
    rows = [index[m] for m in names for d in graph[m]]
    cols = [index[d] for m in names for d in graph[m]]
    adj = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(names), len(names)))
    _, labels = connected_components(adj, directed=True, connection="strong")
    groups: dict[int, list[str]] = {}
    for n, lab in zip(names, labels):
        groups.setdefault(int(lab), []).append(n)
    return [g for g in groups.values() if len(g) > 1]


def test_the_core_imports_only_the_core_and_never_ros():
    assert wrong_way_imports(module_graph(PACKAGE), PACKAGE) == []


def test_no_import_cycles_in_the_package():
    assert import_cycles(module_graph(PACKAGE)) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    pkg = tmp_path / "camfusion_ros"
    for rel, text in {"__init__.py": "", "core/__init__.py": "", **files}.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    return pkg


def test_the_checker_sees_a_wrong_way_import_a_ros_import_and_a_loop(tmp_path):
    pkg = _tree(tmp_path, {
        "eval/__init__.py": "", "eval/lists.py": "X = 1\n",
        "core/vocab.py": "def f():\n    from ..eval.lists import X\n    return X\n",
        "core/node_ish.py": "import rclpy\nfrom sensor_msgs.msg import Image\n",
        "core/a.py": "from camfusion_ros.core import b\n",
        "core/b.py": "def g():\n    from camfusion_ros.core.a import f\n",
        "resources.py": "", "core/ok.py": "from camfusion_ros import resources\nfrom camfusion_ros.core import a\n",
    })
    graph = module_graph(pkg)
    assert wrong_way_imports(graph, pkg) == [
        "camfusion_ros.core.node_ish -> rclpy", "camfusion_ros.core.node_ish -> sensor_msgs.msg",
        "camfusion_ros.core.vocab -> camfusion_ros.eval.lists"]
    assert import_cycles(graph) == [["camfusion_ros.core.a", "camfusion_ros.core.b"]]


def test_every_console_script_follows_the_command_line_convention():
    """setup.py's console scripts each name a function main(argv=None) -> int (docs/architecture.md)."""
    import inspect
    import importlib
    import re

    scripts = re.findall(r'"([\w-]+) = ([\w.]+):(\w+)"', (PACKAGE.parent / "setup.py").read_text())
    assert len(scripts) >= 15
    for name, module, func in scripts:
        fn = getattr(importlib.import_module(module), func)
        params = list(inspect.signature(fn).parameters.values())
        assert [p.name for p in params] == ["argv"] and params[0].default is None, name
        assert inspect.signature(fn).return_annotation in (int, "int"), name
