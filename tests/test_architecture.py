"""The package's layering, checked on the source: who may import whom."""

import ast
from pathlib import Path

import robustsdd

SRC = Path(robustsdd.__file__).parent


def _imports(path: Path):
    """(module imported, names) for every import in ``path``, relative ones resolved."""
    parts = path.relative_to(SRC).with_suffix("").parts
    # The package a relative import starts from: the module's own, or itself for __init__.
    package = ".".join(("robustsdd", *parts[:-1]))
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []


def _modules(folder=""):
    return sorted((SRC / folder).rglob("*.py"))


def test_the_resolver_sees_relative_imports():
    found = dict(_imports(SRC / "data" / "masks.py"))
    assert "robustsdd._errors" in found and "robustsdd.data._imageset" in found


def test_data_imports_nothing_from_features():
    for path in _modules("data"):
        for module, _ in _imports(path):
            assert not module.startswith("robustsdd.features"), f"{path}: imports {module}"


def test_infrastructure_imports_no_domain_package():
    domain = (
        "data",
        "features",
        "detectors",
        "cleaning",
        "workflow",
        "model",
        "experiments",
        "review",
        "cli",
        "recipes",
    )
    for name in ("_io", "_hashing", "_format", "_validation", "_errors", "_version", "executors"):
        for module, _ in _imports(SRC / f"{name}.py"):
            assert not module.startswith(tuple(f"robustsdd.{d}" for d in domain)), (name, module)


def test_nothing_reads_the_version_from_the_package_init():
    for path in _modules():
        for module, names in _imports(path):
            if "__version__" in names:
                assert module == "robustsdd._version", f"{path}: __version__ from {module}"


def test_no_private_name_is_imported_across_packages():
    for path in _modules():
        own = ".".join(("robustsdd", *path.relative_to(SRC).parts[:1]))
        for module, names in _imports(path):
            if not module.startswith("robustsdd") or module.startswith(own):
                continue
            private = [n for n in names if n.startswith("_") and n != "__version__"]
            assert not private, f"{path}: imports {private} from {module}"


def test_the_public_api_exports_every_built_in_detector():
    from robustsdd.detectors.base import detector_class, detector_names

    for name in detector_names():
        cls = detector_class(name)
        assert getattr(robustsdd, cls.__name__) is cls and cls.__name__ in robustsdd.__all__
