"""Package boundaries (issue #13): what ships to AWS is the runtime package `recpipe` and its
serving dependencies, never the development tooling (`recpipe_dev`: local stack, moto, demo and
its static page, fakes, evaluation, benchmarks) nor a dev-only dependency.

Checked on the artefacts themselves: a clean `sam build` of template.yaml (the Lambda layer and
the handlers' CodeUri folders) and the SageMaker source tarball (`build_source_tarball`). The
import rules between the packages are import-linter contracts (`[tool.importlinter]` in
pyproject.toml, run by `make lint`); the handlers are not a package, so their imports are
checked here.

The build downloads the layer's requirements from PyPI (about a minute, once per module)."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from infra_contract import ROOT, TEMPLATE_PATH

FUNCTIONS_DIR = ROOT / "functions"
HANDLER_FILES = frozenset({"app.py", "__init__.py"})

#: Lambda's unzipped limit for a function and all its layers together.
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024

#: Runtime modules the deployed code needs (online, stream and batch paths); what each handler
#: loads is checked in full by test_layer_satisfies_every_handlers_load_time_imports.
RUNTIME_FILES = (
    "recpipe/__init__.py",
    "recpipe/py.typed",
    "recpipe/config.py",
    "recpipe/ports.py",
    "recpipe/bundle.py",
    "recpipe/redis_keys.py",
    "recpipe/ranking_metrics.py",
    "recpipe/tflite.py",
    "recpipe/domain/events.py",
    "recpipe/adapters/redis_candidates.py",
    "recpipe/adapters/dynamodb_users.py",
    "recpipe/serving/runtime.py",
    "recpipe/serving/recommender.py",
    "recpipe/stream/ingest.py",
    "recpipe/stream/updater.py",
    "recpipe/training/workflow.py",
    "recpipe/training/sagemaker_entry.py",
)

#: Development tooling that used to live in `recpipe` and now lives in `recpipe_dev` (paths
#: relative to the package): the CLI, local stack, demo (and its static page), fakes,
#: evaluation, benchmarks and the synthetic shop.
DEV_PATHS_IN_PACKAGE = (
    "cli.py",
    "commands",
    "local",
    "demo",
    "testing",
    "evaluation",
    "bench",
    "synthetic.py",
)
STATIC_SUFFIXES = frozenset({".html", ".js", ".css", ".map", ".ico", ".png", ".svg"})

#: Serving dependencies (layers/recpipe/requirements.txt) as import names.
SERVING_PACKAGES = (
    "numpy",
    "tflite_runtime",
    "redis",
    "opensearchpy",
    "aws_lambda_powertools",
    "pydantic",
    "orjson",
    "isal",
)

#: Training-only packages (the SageMaker image has them): never in the layer, but
#: recpipe.training may import them inside its functions.
TRAINING_ONLY = frozenset({"tensorflow", "tensorflow_cpu", "keras", "implicit", "scipy", "matplotlib"})

#: Import names of the dev-only and training-only packages: never in the layer.
FORBIDDEN_PACKAGES = (
    "recpipe_dev",
    "moto",
    "pytest",
    "_pytest",
    "pytest_socket",
    "pytest_timeout",
    "hypothesis",
    "granian",
    "werkzeug",
    "flask",
    "cfnlint",
    "samcli",
    "samtranslator",
    "importlinter",
    "grimp",
    "ruff",
    "mypy",
    "playwright",
    "yaml",
    "tensorflow",
    "keras",
    "implicit",
    "scipy",
    "matplotlib",
    "tests",
)
#: The same as distribution names (the *.dist-info folders pip leaves in the layer).
FORBIDDEN_DISTRIBUTIONS = (
    "recpipe_dev",
    "moto",
    "pytest",
    "pytest_socket",
    "pytest_timeout",
    "hypothesis",
    "granian",
    "werkzeug",
    "flask",
    "cfn_lint",
    "aws_sam_cli",
    "aws_sam_translator",
    "import_linter",
    "grimp",
    "ruff",
    "mypy",
    "boto3_stubs",
    "types_redis",
    "playwright",
    "pyyaml",
    "tensorflow",
    "tensorflow_cpu",
    "keras",
    "implicit",
    "scipy",
    "matplotlib",
)

#: What the python3.11 Lambda runtime provides besides the standard library.
LAMBDA_RUNTIME_PACKAGES = frozenset(
    {"boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six"}
)
#: What a handler may import: the runtime, Powertools and the standard library.
HANDLER_ALLOWED_PACKAGES = frozenset({"recpipe", "aws_lambda_powertools"})


# ---------------------------------------------------------------------------------- helpers


def _sam() -> str | None:
    beside_python = Path(sys.executable).parent / "sam"
    return str(beside_python) if beside_python.exists() else shutil.which("sam")


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _size_report(files: Iterable[Path], root: Path) -> str:
    """'N files, B bytes unzipped (recpipe: n files, b bytes; third-party: ...)'."""
    code_n = code_b = deps_n = deps_b = 0
    for p in files:
        size = p.stat().st_size
        if p.relative_to(root).parts[0] == "recpipe":
            code_n, code_b = code_n + 1, code_b + size
        else:
            deps_n, deps_b = deps_n + 1, deps_b + size
    return (
        f"{code_n + deps_n} files, {code_b + deps_b:,} bytes unzipped "
        f"(recpipe: {code_n} files, {code_b:,} bytes; third-party: {deps_n} files, {deps_b:,} bytes)"
    )


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _top_level_names(site: Path) -> set[str]:
    """Import names at the top of a site-packages-like folder (packages, modules, extensions)."""
    names = set()
    for p in site.iterdir():
        if p.name.endswith((".dist-info", ".egg-info", ".data")):
            continue
        if p.is_dir():
            names.add(p.name)
        elif p.suffix in {".py", ".so", ".pyd"}:
            names.add(p.name.split(".")[0])
    return names


def _distributions(site: Path) -> set[str]:
    return {_normalise(p.name.split("-")[0]) for p in site.glob("*.dist-info")}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _catches_import_error(node: ast.Try) -> bool:
    names = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}
    for handler in node.handlers:
        types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        if handler.type is None or any(isinstance(t, ast.Name) and t.id in names for t in types):
            return True
    return False


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    package = module if is_package else module.rpartition(".")[0]
    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    return f"{base}.{node.module}" if node.module else base


def _load_time_imports(
    tree: ast.Module, module: str = "", is_package: bool = False
) -> Iterator[tuple[str, tuple[str, ...]]]:
    """(module, names imported from it) for the imports that run when the module is imported:
    not in function bodies, not under `if TYPE_CHECKING:`, not in a `try:` that falls back on
    ImportError (its `except` branch is what must resolve)."""

    def visit(body: list[ast.stmt]) -> Iterator[tuple[str, tuple[str, ...]]]:
        for node in body:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield alias.name, ()
            elif isinstance(node, ast.ImportFrom):
                yield _absolute(node, module, is_package), tuple(a.name for a in node.names)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            elif isinstance(node, ast.If) and _is_type_checking(node.test):
                yield from visit(node.orelse)
            elif isinstance(node, ast.Try) and _catches_import_error(node):
                for handler in node.handlers:
                    yield from visit(handler.body)
                yield from visit(node.orelse)
                yield from visit(node.finalbody)
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    children = getattr(node, field, None)
                    if isinstance(children, list):
                        yield from visit([c for c in children if isinstance(c, ast.stmt)])
                        for h in children:
                            if isinstance(h, ast.ExceptHandler):
                                yield from visit(h.body)

    yield from visit(tree.body)


def _all_imports(tree: ast.Module) -> Iterator[str]:
    """Every absolute import anywhere in the module (function bodies included)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            yield node.module


def _module_file(site: Path, module: str) -> Path | None:
    base = site.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _handler_closure(app: Path, site: Path) -> tuple[set[str], set[str], set[str]]:
    """Follow a handler's load-time imports through the `recpipe` files in `site`.

    -> (recpipe modules loaded, top-level external packages needed, recpipe modules missing)."""
    loaded: set[str] = set()
    external: set[str] = set()
    missing: set[str] = set()
    queue: list[tuple[str, tuple[str, ...]]] = list(_load_time_imports(ast.parse(app.read_text())))
    while queue:
        name, from_names = queue.pop()
        top = name.split(".")[0]
        if top != "recpipe":
            external.add(top)
            continue
        # Importing a.b.c runs a/__init__, a/b/__init__ and a/b/c; `from a.b import c` may name a module.
        parts = name.split(".")
        wanted = [".".join(parts[: i + 1]) for i in range(len(parts))]
        wanted += [f"{name}.{n}" for n in from_names if _module_file(site, f"{name}.{n}") is not None]
        for mod in wanted:
            if mod in loaded or mod in missing:
                continue
            path = _module_file(site, mod)
            if path is None:
                missing.add(mod)
                continue
            loaded.add(mod)
            queue.extend(_load_time_imports(ast.parse(path.read_text()), mod, path.name == "__init__.py"))
    return loaded, external, missing


def _handler_dirs() -> list[Path]:
    return sorted(p.parent for p in FUNCTIONS_DIR.glob("*/app.py"))


def _function_code_uris(template: dict[str, Any]) -> dict[str, Path]:
    """Logical id -> CodeUri folder of every AWS::Serverless::Function."""
    out = {}
    for logical_id, resource in template["Resources"].items():
        if resource.get("Type") == "AWS::Serverless::Function":
            code_uri = resource["Properties"].get("CodeUri") or template.get("Globals", {}).get(
                "Function", {}
            ).get("CodeUri")
            out[logical_id] = (ROOT / str(code_uri)).resolve()
    return out


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sam_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean `sam build` of the whole template (no build cache: the artefact as deployed)."""
    sam = _sam()
    if sam is None:
        pytest.skip("the sam CLI is not installed (pip install aws-sam-cli, part of the dev extra)")
    build_dir = tmp_path_factory.mktemp("sam-build") / "build"
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0"}
    result = subprocess.run(
        [sam, "build", "--no-cached", "--template", str(TEMPLATE_PATH), "--build-dir", str(build_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"sam build failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return build_dir


@pytest.fixture(scope="module")
def layer_site(sam_build: Path) -> Path:
    site = sam_build / "RecpipeLayer" / "python"
    assert site.is_dir(), f"no RecpipeLayer/python in the build: {sorted(os.listdir(sam_build))}"
    return site


# ---------------------------------------------------------------------------------- handlers


def test_handlers_import_only_the_runtime_powertools_and_the_stdlib() -> None:
    handler_dirs = _handler_dirs()
    assert handler_dirs, f"no functions/<name>/app.py under {FUNCTIONS_DIR}"
    function_modules = {d.name for d in handler_dirs} | {"app", "functions"}
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    problems = []
    for d in handler_dirs:
        tree = ast.parse((d / "app.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                problems.append(f"{d.name}/app.py: relative import (level {node.level}) {node.module}")
        for name in _all_imports(tree):
            top = name.split(".")[0]
            if top in function_modules:
                problems.append(f"{d.name}/app.py imports another function's module: {name}")
            elif top not in stdlib and top not in HANDLER_ALLOWED_PACKAGES:
                problems.append(f"{d.name}/app.py imports {name} (allowed: recpipe, powertools, stdlib)")
    assert not problems, "\n".join(problems)


def test_handler_code_uris_hold_only_the_handler(template: dict[str, Any], sam_build: Path) -> None:
    code_uris = _function_code_uris(template)
    assert code_uris, "no AWS::Serverless::Function in the template"
    problems = []
    for logical_id, folder in sorted(code_uris.items()):
        if FUNCTIONS_DIR.resolve() not in folder.parents:
            problems.append(f"{logical_id}: CodeUri {folder} is not a functions/<name>/ folder")
        source = {p.relative_to(folder).as_posix() for p in _files(folder) if "__pycache__" not in p.parts}
        built_dir = sam_build / logical_id
        built = {p.relative_to(built_dir).as_posix() for p in _files(built_dir)}
        for where, files in (("source", source), ("build", built)):
            if "app.py" not in files:
                problems.append(f"{logical_id} ({where}): no app.py in {sorted(files)}")
            if extra := files - HANDLER_FILES:
                problems.append(f"{logical_id} ({where}): more than the handler: {sorted(extra)}")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------- the layer


def test_layer_holds_the_runtime_and_its_serving_dependencies(layer_site: Path) -> None:
    files = _files(layer_site)
    size = _size_report(files, layer_site)
    total = sum(p.stat().st_size for p in files)
    assert total < LAMBDA_UNZIPPED_LIMIT, f"layer over Lambda's 250 MB unzipped limit: {size}"

    rel = {p.relative_to(layer_site).as_posix() for p in files}
    missing = [f for f in RUNTIME_FILES if f not in rel]
    assert not missing, f"runtime files missing from the layer: {missing}; layer: {size}"
    top = _top_level_names(layer_site)
    missing_deps = [p for p in SERVING_PACKAGES if p not in top]
    assert not missing_deps, f"serving dependencies missing from the layer: {missing_deps}; layer: {size}"


def test_layer_holds_no_dev_tooling_nor_dev_dependency(layer_site: Path) -> None:
    files = _files(layer_site)
    size = _size_report(files, layer_site)
    package = layer_site / "recpipe"

    found_packages = sorted(_top_level_names(layer_site) & set(FORBIDDEN_PACKAGES))
    assert not found_packages, f"dev-only packages in the layer: {found_packages}; layer: {size}"
    found_dists = sorted(_distributions(layer_site) & set(FORBIDDEN_DISTRIBUTIONS))
    assert not found_dists, f"dev-only distributions in the layer: {found_dists}; layer: {size}"

    dev_paths = [f"recpipe/{p}" for p in DEV_PATHS_IN_PACKAGE if (package / p).exists()]
    assert not dev_paths, f"dev tooling inside the layer's recpipe package: {dev_paths}; layer: {size}"
    static = [p.relative_to(layer_site).as_posix() for p in _files(package) if p.suffix in STATIC_SUFFIXES]
    assert not static, f"static (demo page) files in the layer's recpipe: {static}; layer: {size}"
    leaks = sorted(
        f"{p.relative_to(layer_site)}: import {name}"
        for p in _files(package)
        if p.suffix == ".py"
        for name in _all_imports(ast.parse(p.read_text()))
        if name.split(".")[0] in set(FORBIDDEN_PACKAGES) - TRAINING_ONLY
    )
    assert not leaks, f"the layer's recpipe imports dev tooling: {leaks}; layer: {size}"


def test_layer_satisfies_every_handlers_load_time_imports(layer_site: Path) -> None:
    """What a handler imports when Lambda loads it (and what that imports, through recpipe) is
    in the layer, the Lambda runtime (boto3) or the standard library: no moto, no recpipe_dev,
    no training-only package on the cold-start path."""
    available = _top_level_names(layer_site) | LAMBDA_RUNTIME_PACKAGES
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    problems = []
    for d in _handler_dirs():
        loaded, external, missing = _handler_closure(d / "app.py", layer_site)
        if missing:
            problems.append(f"{d.name}: recpipe modules not in the layer: {sorted(missing)}")
        if unresolved := sorted(external - available - stdlib):
            problems.append(f"{d.name}: needs {unresolved}, not in the layer nor the Lambda runtime")
        if not loaded:
            problems.append(f"{d.name}: imports nothing from recpipe")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------- SageMaker


def test_sagemaker_source_tarball_holds_the_runtime_only(tmp_path: Path) -> None:
    from recpipe.training.sagemaker_entry import PROGRAM, build_source_tarball

    path = build_source_tarball(tmp_path / "recpipe-training.tar.gz")
    with tarfile.open(path) as tar:
        members = {m.name: m.size for m in tar.getmembers() if m.isfile()}
        requirements = tar.extractfile("requirements.txt")
        assert requirements is not None
        lines = requirements.read().decode().splitlines()
    required = {
        _normalise(re.split(r"[\s<>=!~\[;]", line, maxsplit=1)[0])
        for line in lines
        if line.strip() and not line.startswith("#")
    }
    code = {n: s for n, s in members.items() if n.startswith("recpipe/")}
    size = (
        f"{len(members)} files, {sum(members.values()):,} bytes unpacked "
        f"(recpipe: {len(code)} files, {sum(code.values()):,} bytes), {path.stat().st_size:,} bytes gzipped"
    )

    others = sorted(set(members) - set(code) - {PROGRAM, "requirements.txt"})
    assert not others, (
        f"the tarball holds more than {PROGRAM}, requirements.txt and recpipe/: {others}; {size}"
    )
    missing = [f for f in RUNTIME_FILES if f not in code]
    assert not missing, f"runtime files missing from the tarball: {missing}; {size}"
    dev_paths = sorted(
        n for n in code for p in DEV_PATHS_IN_PACKAGE if n == f"recpipe/{p}" or n.startswith(f"recpipe/{p}/")
    )
    assert not dev_paths, f"dev tooling in the tarball: {dev_paths}; {size}"
    not_source = sorted(n for n in code if not (n.endswith((".py", ".json")) or n == "recpipe/py.typed"))
    assert not not_source, f"non-source files in the tarball's recpipe/: {not_source}; {size}"
    dev_requirements = sorted(required & set(FORBIDDEN_DISTRIBUTIONS) - TRAINING_ONLY)
    assert not dev_requirements, f"dev-only packages in the tarball's requirements.txt: {dev_requirements}"
