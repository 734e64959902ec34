"""The shape of the code: one import name, dependencies one way, no import circle, role names in one place.

Read from the source (ast), so every import counts, those inside functions too.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

from helpers import ROOT

# envs <- runtime <- replay <- learner <- modelserver, actors <- launch: a package imports only lower ones.
LAYERS = {"envs": 0, "runtime": 1, "replay": 2, "learner": 3, "modelserver": 4, "actors": 4, "launch": 5}
ROLES = {"supervisor", "replay", "learner", "modelserver", "evaluator", "actor"}
# The same words naming something else than a process: the wire protocol's "actor" field of a message
# (and of a log event), the `mbgen actor` subcommand, and the bench section "replay".
OTHER_MEANINGS = {
    ("replay/protocol.py", "actor"),
    ("replay/client.py", "actor"),
    ("replay/service.py", "actor"),
    ("launch/run/monitor.py", "actor"),
    ("launch/cli.py", "actor"),
    ("launch/bench/options.py", "replay"),
    ("launch/bench/throughput.py", "replay"),
}


def modules() -> dict[str, str]:
    """Every module of the product, by its import name, with its path."""
    found = {}
    for top in list(LAYERS) + ["mbgen"]:
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                    rel = rel[: -len(".__init__")] if rel.endswith(".__init__") else rel
                    found["mbgen" if top == "mbgen" else f"mbgen.{rel}"] = path
    return found


def imports(mods: dict[str, str]) -> dict[str, set[str]]:
    """Each module's imports of other product modules (`from mbgen import envs` is an import of mbgen.envs)."""
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for module, path in mods.items():
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in mods]
                targets = subs if len(subs) == len(node.names) else [node.module, *subs]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            edges[module].update(t for t in targets if t in mods and t != module)
    return edges


def test_no_bare_top_level_import_of_a_product_folder():
    """Every import names mbgen.<folder>: a bare `import envs` works only from the repository root."""
    offenders = []
    for module, path in modules().items():
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            offenders += [f"{module}: {n}" for n in names if n and n.split(".")[0] in LAYERS]
    assert not offenders, offenders


def test_no_import_circle():
    edges = imports(modules())
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
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
                circles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert not circles, circles


def test_dependencies_point_one_way():
    upward = []
    for module, targets in imports(modules()).items():
        if module == "mbgen":
            continue
        own = module.split(".")[1]
        for target in targets:
            other = target.split(".")[1] if target != "mbgen" else None
            if other is None or (other != own and LAYERS[other] >= LAYERS[own]):
                upward.append(f"{module} -> {target}")
    assert not upward, upward


def test_role_names_are_written_only_in_runtime():
    """Processes name roles by runtime/roles.py's constants, never by a bare string."""
    offenders = []
    for module, path in modules().items():
        rel = os.path.relpath(path, ROOT).replace(os.sep, "/")
        if rel.startswith("runtime/"):
            continue
        with open(path) as f:
            tree = ast.parse(f.read())
        docstrings = {
            id(n.body[0].value)
            for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)
        }  # fmt: skip
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in ROLES and id(node) not in docstrings:
                if (rel, node.value) not in OTHER_MEANINGS:
                    offenders.append(f"{rel}:{node.lineno}: {node.value!r}")
    assert not offenders, offenders


def test_the_installed_package_is_one_import_name(tmp_path):
    """The wheel puts `mbgen` (and its subpackages) into site-packages and nothing else."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), ROOT],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if out.returncode != 0 and "No module named" in out.stderr:  # no setuptools/wheel in this environment
        import pytest

        pytest.skip(out.stderr.strip().splitlines()[-1])
    assert out.returncode == 0, out.stderr
    import zipfile

    (wheel,) = tmp_path.glob("mbgen-*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"mbgen"}, tops
    names = zipfile.ZipFile(wheel).namelist()
    for expected in ("mbgen/envs/reference_scores.json", "mbgen/launch/study/presets/figure3.toml"):
        assert expected in names


def test_import_mbgen_gives_the_api_and_the_gymnasium_ids_from_any_directory(tmp_path):
    script = (
        "import mbgen, gymnasium\n"
        "env = gymnasium.make('mbgen/ProcMaze-v0', grid_size=3)\n"
        "obs, _ = env.reset(seed=0)\n"
        "print(obs.shape[0], mbgen.make('panflute', 2, 0, num_pipes=3).obs_dim, callable(mbgen.load_policy))\n"
        "import sys; print(sorted(m for m in sys.modules if m in ('envs', 'launch', 'replay', 'learner')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["36 6 True", "[]"]


def test_load_run_gives_the_metrics_as_columns(tmp_path):
    import json

    import mbgen
    from mbgen.launch.options import dump_toml
    from mbgen.learner.config import RunConfig

    run = tmp_path / "run"
    run.mkdir()  # what a run writes: its resolved configuration and its metrics
    (run / "config.toml").write_text(dump_toml(RunConfig.build(env="panflute", steps=2000).resolved().to_dict()))
    rows = [{"env_steps": 0, "member": 0, "eval_return": 0.1}, {"env_steps": 500, "member": 0, "eval_return": 0.3}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = mbgen.load_run(str(run))
    assert loaded.metrics == {"env_steps": [0, 500], "member": [0, 0], "eval_return": [0.1, 0.3]}
    assert loaded.summary is None and loaded.config.run.env == "panflute"


def test_ray_is_imported_only_inside_functions():
    """Ray is an optional extra: no module imports it when it is loaded, so nothing needs it installed
    until a command asks for `--engine ray`."""
    offenders = []
    for module, path in modules().items():
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in tree.body:  # module level only (an `if`/`try` at module level counts too)
            for inner in ast.walk(node):
                if isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    break
                names = [a.name for a in inner.names] if isinstance(inner, ast.Import) else (
                    [inner.module or ""] if isinstance(inner, ast.ImportFrom) else []
                )
                if any(n == "ray" or n.startswith("ray.") for n in names):
                    offenders.append(module)
    assert not offenders, offenders
