"""The dependency rule of the code base: entry points -> app -> deploy -> engine -> weights -> models | data ->
utils | choices.

A package imports only packages to its right; models and data import nothing of the project but the packages
below both (utils and choices, which import nothing of the project); the library never imports the developer
tools; only entry points (and the config loader they call) read the command line. Tests may import tools (the
PyTorch reference, the MAC counter, the IR inventory); tools never use the tests.
"""
import ast
import glob
import os
from support import ROOT

ORDER = ["app", "deploy", "engine", "weights", "models", "data", "utils", "choices"]
# Below models | data, which import only themselves and these, each importing nothing of the project: utils holds
# the low-level helpers (processes, atomic files, folder locks, metrics) every layer uses; choices the names a
# configuration chooses among, so that the schema and every --help need no MindSpore.
BELOW_MODELS_AND_DATA = ["utils", "choices"]


def imported_packages(source: str, module: str) -> set:
    """Top-level project packages (``src.<pkg>`` or ``tools``) imported by the source of ``module``."""
    module = module.split(".")
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module[:len(module) - node.level]
                name = ".".join(base + ([node.module] if node.module else []))
                targets = [name] if node.module else [f"{name}.{a.name}" for a in node.names]
            else:
                targets = [node.module or ""]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        for target in targets:
            parts = target.split(".")
            if parts[0] == "src" and len(parts) > 1:
                found.add(parts[1])
            elif parts[0] == "tools":
                found.add("tools")
    return found


def test_packages_import_only_to_their_right():
    violations = []
    for package in ORDER:
        allowed = set(ORDER[ORDER.index(package):])
        if package in ("models", "data"):
            allowed = {package, *BELOW_MODELS_AND_DATA}
        elif package in BELOW_MODELS_AND_DATA:
            allowed = {package}
        for path in glob.glob(os.path.join(ROOT, "src", package, "**", "*.py"), recursive=True):
            module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
            bad = imported_packages(open(path, encoding="utf-8").read(), module) - allowed
            if bad:
                violations.append(f"{os.path.relpath(path, ROOT)} imports {sorted(bad)}")
    assert not violations, "\n".join(violations)


def test_every_source_file_belongs_to_a_layer():
    stray = [p for p in glob.glob(os.path.join(ROOT, "src", "*.py")) if not p.endswith("__init__.py")]
    folders = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "src", "*")) if os.path.isdir(p)}
    assert not stray and folders - {"__pycache__"} == set(ORDER)


def test_only_entry_points_read_the_command_line():
    readers = [os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "src", "**", "*.py"), recursive=True)
               if "sys.argv" in open(p, encoding="utf-8").read()]
    assert not readers


def test_tools_never_use_the_tests():
    """No tool imports a test module or names a path under tests/ (tests -> tools, one direction)."""
    test_modules = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "tests", "*.py"))} | {"tests"}
    offenders = []
    for path in glob.glob(os.path.join(ROOT, "tools", "**", "*.py"), recursive=True):
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if not node.level else []
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names = ["tests"] if node.value == "tests" or node.value.startswith("tests/") else []
            else:
                continue
            if {name.split(".")[0] for name in names} & test_modules:
                offenders.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}")
    assert not offenders, offenders


def test_the_checker_sees_upward_imports():
    source = "from ..app import config\nfrom src.deploy import export\nfrom . import optim\nimport tools.calibrate\n"
    assert imported_packages(source, "src.engine.trainer") == {"app", "deploy", "engine", "tools"}
