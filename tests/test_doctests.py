"""The examples in the docstrings run and show what they claim: one test per module.

Modules are discovered from the package itself, so moved or renamed modules are picked
up without editing this file. Examples marked ``# doctest: +SKIP`` stay skipped. Each
module's examples run in a temporary working folder (``tempfile`` folders land there too;
conftest redirects the feature cache) with network connections refused.
"""

import doctest
import importlib
import io
import pkgutil
import socket
import tempfile

import pytest

import robustsdd

MODULES = sorted(
    {
        name
        for _, name, _ in pkgutil.walk_packages(robustsdd.__path__, "robustsdd.")
        if name.rsplit(".", 1)[-1] != "__main__"
    }
    | {"robustsdd"}
)
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _doctests(module_name):
    """The module's own docstring examples (not those of objects it imports), if any of
    them is not marked +SKIP."""
    module = importlib.import_module(module_name)
    tests = [
        t for t in doctest.DocTestFinder(exclude_empty=True).find(module, module_name) if t.examples
    ]
    runnable = any(not ex.options.get(doctest.SKIP, False) for t in tests for ex in t.examples)
    return tests if runnable else []


WITH_EXAMPLES = [name for name in MODULES if _doctests(name)]


def test_modules_are_discovered():
    # A guard against a discovery that silently finds nothing (and so tests nothing).
    assert {
        "robustsdd._validation",
        "robustsdd.detectors.base",
        "robustsdd.detectors.patchcore",
    } <= set(MODULES)
    assert len(MODULES) > 20
    assert {"robustsdd.cleaning.registry", "robustsdd.recipes", "robustsdd._format"} <= set(
        WITH_EXAMPLES
    )


@pytest.fixture
def offline(monkeypatch):
    def refuse(self, address, *args, **kwargs):
        raise OSError(f"a doctest tried to open a network connection to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("module_name", WITH_EXAMPLES)
def test_doctests(module_name, tmp_path, monkeypatch, offline):
    tests = _doctests(module_name)
    # Anything an example writes lands in this test's temporary folder: relative paths, and
    # tempfile.mkdtemp() too (removed with the folder instead of left behind in /tmp).
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    report = io.StringIO()
    for test in sorted(tests, key=lambda t: t.name):
        runner.run(test, out=report.write)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} failing example(s):\n{report.getvalue()}"
    assert result.attempted > 0
