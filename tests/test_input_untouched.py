"""Input folders are never written to: every verb that reads a folder leaves it byte-for-byte alone.

The input tree is hashed before and after each command: every entry's relative name, type,
size, permission bits, modification time (ns) and, for files, the SHA-256 of the bytes; for
links, the target. Folder mtimes are included, so a file created and deleted again (a temp
file) inside the tree is caught too.
"""

import hashlib
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from robustsdd.cli import main

TINY = [
    "--weights",
    "random",
    "--image-size",
    "32",
    "--scales",
    "1",
    "--rotations",
    "0",
    "--quiet",
    "--detector",
    "gaussian",
]


def snapshot(root: Path) -> dict:
    """Name -> (type, size, mode, mtime_ns, content hash or link target) for root and below."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in [None] + sorted(dirnames) + sorted(filenames):
            path = Path(dirpath) / name if name else Path(dirpath)
            rel = path.relative_to(root).as_posix()
            if rel in out:
                continue
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                extra = "link:" + os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                extra = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                extra = ""
            out[rel] = (
                stat.S_IFMT(st.st_mode),
                st.st_size if not stat.S_ISDIR(st.st_mode) else 0,
                stat.S_IMODE(st.st_mode),
                st.st_mtime_ns,
                extra,
            )
    return out


def _diff(before: dict, after: dict) -> list:
    changes = [f"added {k}" for k in sorted(set(after) - set(before))]
    changes += [f"removed {k}" for k in sorted(set(before) - set(after))]
    changes += [
        f"changed {k}: {before[k]} -> {after[k]}"
        for k in sorted(set(before) & set(after))
        if before[k] != after[k]
    ]
    return changes


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A labelled folder with odd names, a subfolder, a link, hidden and non-image files."""
    base = tmp_path_factory.mktemp("untouched")
    root = base / "data"
    rng = np.random.default_rng(0)
    for cls, n in (("good", 14), ("defect", 6)):
        for i in range(n):
            sub = "batch 2/" if i % 5 == 4 else ""
            path = root / cls / f"{sub}{cls} {i:02d} ü日.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            img = rng.normal(128, 12, (28, 28)).clip(0, 255)
            if cls == "defect":
                img[6:22, 12:15] = 255
            Image.fromarray(img.astype(np.uint8)).save(path)
    os.symlink("good 00 ü日.png", root / "good" / "link to 00.png")
    (root / "README.txt").write_text("notes about the data\n")
    (root / "good" / ".hidden.png").write_bytes(b"not read")
    # Old mtimes, so a rewrite in the same second as the fixture would still show.
    for p in sorted(root.rglob("*"), reverse=True):
        os.utime(
            p, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000), follow_symlinks=False
        )
    os.utime(root, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    return root


@pytest.fixture(scope="module")
def model(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "model"
    before = snapshot(tree)
    assert (
        main(
            [
                "fit",
                "--source",
                "folder",
                "--root",
                str(tree),
                "--rule",
                "fraction",
                "--fraction",
                "0.2",
                "--out",
                str(out),
                *TINY,
            ]
        )
        == 0
    )
    assert _diff(before, snapshot(tree)) == []
    return out


def _commands(tree: Path, model: Path, out: Path):
    return {
        "fit --source folder": [
            "fit",
            "--source",
            "folder",
            "--root",
            str(tree),
            "--rule",
            "fraction",
            "--out",
            str(out / "m1"),
            *TINY,
        ],
        "fit --source unlabeled": [
            "fit",
            "--source",
            "unlabeled",
            "--root",
            str(tree / "good"),
            "--out",
            str(out / "m2"),
            *TINY,
        ],
        "fit IMAGES_DIR": [
            "fit",
            str(tree / "good"),
            "--rule",
            "none",
            "--out",
            str(out / "m3"),
            *TINY,
        ],
        "score --source folder": [
            "score",
            str(model),
            "--source",
            "folder",
            "--root",
            str(tree),
            "--out",
            str(out / "scores.csv"),
            "--quiet",
        ],
        "score --source unlabeled": [
            "score",
            str(model),
            "--source",
            "unlabeled",
            "--root",
            str(tree),
            "--quiet",
        ],
        "predict": ["predict", str(model), str(tree), "--out", str(out / "pred.csv"), "--quiet"],
        "run --source folder": [
            "run",
            "--source",
            "folder",
            "--root",
            str(tree),
            "--n-train",
            "10",
            "--contamination",
            "0.2",
            "--n-test-good",
            "4",
            "--n-test-defective",
            "4",
            "--out",
            str(out / "run"),
            *TINY,
        ],
    }


COMMANDS = [
    "fit --source folder",
    "fit --source unlabeled",
    "fit IMAGES_DIR",
    "score --source folder",
    "score --source unlabeled",
    "predict",
    "run --source folder",
]


@pytest.mark.parametrize("which", COMMANDS)
def test_command_leaves_input_tree_unchanged(which, tree, model, tmp_path, capsys):
    argv = _commands(tree, model, tmp_path)[which]
    before = snapshot(tree)
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert _diff(before, snapshot(tree)) == []


def test_failing_command_leaves_input_tree_unchanged(tmp_path, capsys):
    """A fit that stops on a broken image writes nothing into the tree either."""
    root = tmp_path / "broken"
    root.mkdir()
    for i in range(4):
        Image.new("L", (20, 20), 40 * i).save(root / f"{i}.png")
    (root / "zero.png").write_bytes(b"")
    before = snapshot(root)
    assert (
        main(["fit", str(root), "--out", str(tmp_path / "m"), "--on-bad-image", "fail", *TINY]) == 2
    )
    assert "zero.png" in capsys.readouterr().err
    assert _diff(before, snapshot(root)) == []
    # The default skips it, lists it next to the model, and still leaves the tree alone.
    assert main(["fit", str(root), "--out", str(tmp_path / "m2"), *TINY]) == 0
    assert "zero.png: empty file" in (tmp_path / "m2" / "skipped.csv").read_text()
    assert _diff(before, snapshot(root)) == []


@pytest.mark.parametrize("where", ["fit", "predict"])
def test_outputs_inside_the_input_tree_are_refused(where, tree, model, capsys):
    before = snapshot(tree)
    argv = {
        "fit": ["fit", str(tree / "good"), "--out", str(tree / "good" / "model"), *TINY],
        "predict": ["predict", str(model), str(tree), "--out", str(tree / "p.csv"), "--quiet"],
    }[where]
    assert main(argv) == 2
    assert "inside" in capsys.readouterr().err
    assert _diff(before, snapshot(tree)) == []


@pytest.mark.parametrize("where", ["score", "run"])
def test_score_and_run_outputs_inside_the_input_tree_are_refused(where, tmp_path, model, capsys):
    root = tmp_path / "data"
    for cls in ("good", "defect"):
        (root / cls).mkdir(parents=True)
        for i in range(8):
            Image.new("L", (20, 20), 10 * i + (100 if cls == "defect" else 0)).save(
                root / cls / f"{i}.png"
            )
    before = snapshot(root)
    argv = {
        "score": [
            "score",
            str(model),
            "--source",
            "folder",
            "--root",
            str(root),
            "--out",
            str(root / "scores.csv"),
            "--quiet",
        ],
        "run": [
            "run",
            "--source",
            "folder",
            "--root",
            str(root),
            "--n-train",
            "6",
            "--n-test-good",
            "2",
            "--n-test-defective",
            "2",
            "--out",
            str(root / "run"),
            *TINY,
        ],
    }[where]
    code = main(argv)
    assert code == 2 and _diff(before, snapshot(root)) == []


def test_snapshot_sees_changes(tmp_path):
    """The hash itself notices a rewrite with the same bytes, an added and a removed file."""
    (tmp_path / "a.png").write_bytes(b"x")
    os.utime(tmp_path / "a.png", ns=(10**18, 10**18))
    s0 = snapshot(tmp_path)
    (tmp_path / "a.png").write_bytes(b"x")
    assert any("changed a.png" in c for c in _diff(s0, snapshot(tmp_path)))
    s1 = snapshot(tmp_path)
    (tmp_path / "b.tmp").write_bytes(b"")
    assert "added b.tmp" in _diff(s1, snapshot(tmp_path))
    (tmp_path / "b.tmp").unlink()
    os.utime(tmp_path, ns=(10**18, 10**18))
    s2 = snapshot(tmp_path)
    (tmp_path / "c").write_bytes(b"")
    (tmp_path / "c").unlink()
    assert [c.split(":")[0] for c in _diff(s2, snapshot(tmp_path))] == ["changed ."]
