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

MODULES = sorted({name for _, name, _ in pkgutil.walk_packages(robustsdd.__path__, "robustsdd.")
                  if name.rsplit(".", 1)[-1] != "__main__"} | {"robustsdd"})
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def test_modules_are_discovered():
    # A guard against a discovery that silently finds nothing (and so tests nothing).
    assert {"robustsdd._validation", "robustsdd.detectors.base",
            "robustsdd.detectors.patchcore"} <= set(MODULES)
    assert len(MODULES) > 20


@pytest.fixture
def offline(monkeypatch):
    def refuse(self, address, *args, **kwargs):
        raise OSError(f"a doctest tried to open a network connection to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("module_name", MODULES)
def test_doctests(module_name, tmp_path, monkeypatch, offline):
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    # Only the module's own docstrings: not those of objects it imports from elsewhere.
    tests = [t for t in finder.find(module, module_name) if t.examples]
    runnable = [t for t in tests
                if any(not ex.options.get(doctest.SKIP, False) for ex in t.examples)]
    if not runnable:
        pytest.skip(f"{module_name} has no doctests" if not tests
                    else f"every example of {module_name} is marked +SKIP")
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
