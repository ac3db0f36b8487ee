"""Reliability table (issue 5): every bad input tried, and what robustsdd does with it.

Usage:
    python benchmarks/reliability_table.py          # writes RELIABILITY.md (3-8 min on 2 cores)
    python benchmarks/reliability_table.py --out /tmp/r.md --work /tmp/rel --keep --jobs 4

Builds each bad image (issue 5, item 1) and each bad request (item 2) in a fresh work folder,
runs it through the library (``load_rgb``, ``screen_images``, ``paper_split``, ...) and through
the command line (``python -m robustsdd.cli ...`` in a subprocess, tiny settings: random
weights, 32 px, 2 views, Gaussian detector, no feature cache), and writes a markdown table of
input -> outcome: exit code, the first line of the message, whether a traceback was printed,
and whether the input folder was left unchanged (a hash of names, types, sizes, modes, mtimes
and bytes of everything under it, before and after each command). If the CLI has an
``--on-bad-image`` flag, every bad-image case is run with ``skip`` and with ``fail``.

Section 3 interrupts ``robustsdd fit`` (SIGINT, SIGTERM, SIGKILL) at known points (a small
wrapper pauses the command after a chosen checkpoint; the signal arrives during the pause),
damages and invalidates checkpoints, and checks what the model folder holds after each step
and that the resumed result equals an uninterrupted run's, bit for bit.

Nothing here needs a network or real data; all inputs are generated.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import platform
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

import robustsdd
from robustsdd import RobustSDDError
from robustsdd.data import load_folder, load_unlabeled, paper_split, screen_images
from robustsdd.data.images import load_rgb

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--weights",
    "random",
    "--image-size",
    "32",
    "--scales",
    "1",
    "--rotations",
    "0",
    "--detector",
    "gaussian",
    "--no-cache",
    "--engine",
    "torch",
    "--quiet",
]


# --------------------------------------------------------------------------- inputs
def _encode(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _noise(h, w, seed, channels=3):
    shape = (h, w, channels) if channels > 1 else (h, w)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _png_header_only(width, height):
    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _exif_jpeg(orientation):
    arr = np.zeros((32, 48, 3), np.uint8)
    arr[:16, :16] = [255, 0, 0]  # red block stored top-left
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = orientation
    return _encode(img, "JPEG", quality=95, exif=exif.tobytes())


def _red_corner(out):
    h, w = out.shape[:2]
    corners = {
        "top-left": out[:8, :8],
        "top-right": out[:8, -8:],
        "bottom-left": out[-8:, :8],
        "bottom-right": out[-8:, -8:],
    }
    red = [k for k, v in corners.items() if v[..., 0].mean() > 200 and v[..., 1].mean() < 50]
    return f"{h}x{w}, red block {'/'.join(red) or 'nowhere'}"


def _palette_png():
    img = Image.new("P", (2, 1), 0)
    img.putpalette([0, 0, 0, 12, 34, 56] + [0] * 762)
    img.putpixel((1, 0), 1)
    return _encode(img, "PNG")


def bad_image_cases():
    """(case, file name, how to make it, what the decoded image is checked for)."""
    png = _encode(Image.fromarray(_noise(64, 64, 1)), "PNG")
    jpg = _encode(Image.fromarray(_noise(64, 64, 1)), "JPEG")

    def data(b):
        return lambda path: path.write_bytes(b)

    def symlink(target):
        return lambda path: os.symlink(target, path)

    def unreadable(path):
        path.write_bytes(png)
        path.chmod(0)

    def fifo(path):
        os.mkfifo(path)

    px = lambda out: (
        f"{out.shape[0]}x{out.shape[1]}, pixel[0,0] = {tuple(int(v) for v in out[0, 0])}"
    )
    return [
        ("zero-byte file", "zero.png", data(b""), None),
        ("truncated PNG (half)", "truncated.png", data(png[: len(png) // 2]), None),
        ("truncated JPEG (half)", "truncated.jpg", data(jpg[: len(jpg) // 2]), None),
        ("JPEG cut after 20 bytes", "header-only.jpg", data(jpg[:20]), None),
        ("text file named .png", "text.png", data(b"this is a text file, not a PNG\n"), None),
        (
            "unsupported format: PDF named .png",
            "document.png",
            data(b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"),
            None,
        ),
        (
            "unsupported format: SVG named .tif",
            "vector.tif",
            data(b'<svg xmlns="http://www.w3.org/2000/svg"/>\n'),
            None,
        ),
        (
            "16-bit grayscale PNG (0, 65535)",
            "gray16.png",
            data(_encode(Image.fromarray(np.array([[0, 65535]], np.uint16)), "PNG")),
            lambda out: (
                f"{out.shape[0]}x{out.shape[1]}, values {out[0, :, 0].tolist()} (scaled by 1/257)"
            ),
        ),
        (
            "RGBA PNG, fully transparent (10, 20, 30, 0)",
            "rgba.png",
            data(_encode(Image.new("RGBA", (3, 2), (10, 20, 30, 0)), "PNG")),
            px,
        ),
        (
            "palette (P) PNG",
            "palette.png",
            data(_palette_png()),
            lambda out: f"colours {[tuple(int(v) for v in c) for c in out[0]]}",
        ),
        (
            "CMYK JPEG (C=0 M=255 Y=255 K=0: red)",
            "cmyk.jpg",
            data(_encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95)),
            lambda out: f"mean colour {tuple(int(round(v)) for v in out.reshape(-1, 3).mean(0))}",
        ),
        (
            "EXIF orientation 6 (rotate 90 CW), red block stored top-left",
            "exif6.jpg",
            data(_exif_jpeg(6)),
            _red_corner,
        ),
        ("EXIF orientation 3 (rotate 180)", "exif3.jpg", data(_exif_jpeg(3)), _red_corner),
        ("EXIF orientation 8 (rotate 90 CCW)", "exif8.jpg", data(_exif_jpeg(8)), _red_corner),
        (
            "1x1 image",
            "one-pixel.png",
            data(_encode(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG")),
            px,
        ),
        (
            "very large: PNG header claims 100000x100000 (10 G pixels)",
            "bomb.png",
            data(_png_header_only(100_000, 100_000)),
            None,
        ),
        ("unreadable: chmod 000", "secret.png", unreadable, px),
        ("broken symbolic link", "broken-link.png", symlink("/nonexistent/image.png"), None),
        ("symbolic link loop", "loop.png", symlink("loop.png"), None),
        ("named pipe (FIFO) named .png", "pipe.png", fifo, None),
        (
            "name with spaces and non-ASCII characters",
            "a name ü 日本 ✓.png",
            data(_encode(Image.fromarray(_noise(20, 20, 7)), "PNG")),
            px,
        ),
    ]


def make_good_images(folder: Path, n=5, seed=100):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(_noise(28, 28, seed + i, channels=1)).save(folder / f"good_{i:02d}.png")


def make_labelled(root: Path, n_good=12, n_defect=6):
    rng = np.random.default_rng(0)
    for cls, n in (("good", n_good), ("defect", n_defect)):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = rng.normal(128, 12, (28, 28)).clip(0, 255)
            if cls == "defect":
                img[6:22, 12:15] = 255
            Image.fromarray(img.astype(np.uint8)).save(root / cls / f"{cls}_{i:02d}.png")


# --------------------------------------------------------------------------- running
def snapshot(root: Path) -> str:
    """A hash of names, types, sizes, modes, mtimes and bytes of everything under ``root``."""
    h = hashlib.sha256()
    if not root.exists():
        return "absent"
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in [""] + sorted(dirnames) + sorted(filenames):
            path = Path(dirpath) / name if name else Path(dirpath)
            st = path.lstat()
            h.update(
                repr(
                    (
                        path.relative_to(root).as_posix(),
                        stat.S_IFMT(st.st_mode),
                        stat.S_IMODE(st.st_mode),
                        st.st_size,
                        st.st_mtime_ns,
                    )
                ).encode()
            )
            if stat.S_ISLNK(st.st_mode):
                h.update(os.readlink(path).encode(errors="surrogateescape"))
            elif stat.S_ISREG(st.st_mode):
                try:
                    h.update(path.read_bytes())
                except PermissionError:
                    h.update(b"<unreadable>")
    return h.hexdigest()


class Runner:
    def __init__(self, work: Path):
        self.work = work
        self.env = dict(
            os.environ,
            OMP_NUM_THREADS="1",
            OMP_WAIT_POLICY="PASSIVE",
            ROBUSTSDD_CACHE_DIR=str(work / "cache"),
            PYTHONWARNINGS="ignore",
        )
        src = str(REPO / "src")
        self.env["PYTHONPATH"] = src + os.pathsep + self.env.get("PYTHONPATH", "")

    def show(self, argv) -> str:
        text = "robustsdd " + " ".join(_quote(a) for a in argv)
        return text.replace(str(self.work), "$WORK")

    def cli(self, argv, inputs=()):
        """Run ``robustsdd ARGV``; return a dict with rc, message, traceback, input unchanged."""
        before = {p: snapshot(p) for p in inputs}
        t = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "robustsdd.cli", *argv],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
            cwd=self.work,
        )
        seconds = time.perf_counter() - t
        after = {p: snapshot(p) for p in inputs}
        out_lines = [line for line in proc.stdout.splitlines() if line.strip()]
        err_lines = [line for line in proc.stderr.splitlines() if line.strip()]
        if proc.returncode == 0:
            message = next(
                (line for line in out_lines if line.startswith("trained on")),
                out_lines[-1] if out_lines else (err_lines[-1] if err_lines else ""),
            )
            notes = [line for line in out_lines if line.startswith("note:")]
            if notes:
                message += " / " + " / ".join(notes[:3])
        else:
            errs = [line for line in err_lines if "error" in line.lower()]
            message = (errs or err_lines or out_lines or [""])[0]
        unchanged = "n/a" if not inputs else ("yes" if before == after else "**NO**")
        return {
            "rc": proc.returncode,
            "message": message.replace(str(self.work), "$WORK"),
            "traceback": "Traceback" in proc.stderr,
            "unchanged": unchanged,
            "command": self.show(argv),
            "seconds": seconds,
        }


def _quote(arg: str) -> str:
    return f"'{arg}'" if any(c in arg for c in " '\"$") else arg


def library(fn, work: Path):
    """Call ``fn``; return its outcome text (result, or the exception type and message)."""
    try:
        text = "ok: " + str(fn())
    except RobustSDDError as exc:
        text = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001 - the table reports anything unexpected
        text = f"**unexpected {type(exc).__name__}**: {exc}"
    return text.replace(str(work), "$WORK")


def _cell(text, limit=230) -> str:
    text = str(text).splitlines()[0] if str(text) else ""
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("|", "\\|")


# --------------------------------------------------------------------------- tables
def _run_all(run: Runner, jobs: int, commands):
    """Run ``(argv, inputs)`` commands, ``jobs`` at a time (each has inputs of its own)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(lambda c: run.cli(*c), commands))


def images_table(run: Runner, on_bad_image_flag: bool, jobs: int):
    work = run.work
    all_dir = work / "all-bad-images"  # every case in one folder, for the screen
    make_good_images(all_dir, n=3)
    cases, commands = [], []
    variants = (
        [["--on-bad-image", "skip"], ["--on-bad-image", "fail"]] if on_bad_image_flag else [[]]
    )
    for k, (case, fname, make, check) in enumerate(bad_image_cases()):
        folder = work / "images" / f"{k:02d}"
        make_good_images(folder)
        make(folder / fname)
        make(all_dir / fname)
        path = folder / fname
        decoded = library(lambda: load_rgb(path), work)
        if decoded.startswith("ok: ") and check is not None:
            decoded = "decoded: " + check(load_rgb(path))
        if fname == "secret.png" and os.geteuid() == 0:
            decoded += (
                " (running as root: chmod 000 does not stop root; unit test simulates EACCES)"
            )
        screened = library(lambda: screen_images(load_unlabeled(folder), "skip"), work)
        if screened.startswith("ok: "):
            result = screen_images(load_unlabeled(folder), "skip")
            skipped = [x for x in result.skipped if x.name == fname]
            screened = (
                ("skipped: " + skipped[0].reason)
                if skipped
                else f"kept ({len(result.images)} of {result.n_total} images)"
            )
        for extra in variants:
            out = work / "out" / f"image-{k:02d}{'-' + extra[1] if extra else ''}"
            cases.append((case, f"`{fname}`", decoded, screened, extra))
            commands.append((["fit", str(folder), "--out", str(out), *TINY, *extra], [folder]))
    # Duplicates: a byte copy and a BMP re-encoding of one of the good images.
    dup = work / "images" / "duplicates"
    make_good_images(dup)
    shutil.copy(dup / "good_00.png", dup / "copy of good_00.png")
    (dup / "good_00 again.bmp").write_bytes(_encode(Image.open(dup / "good_00.png"), "BMP"))
    result = screen_images(load_unlabeled(dup))
    dup_text = "; ".join(g.describe() for g in result.duplicates) or "none found"
    for extra in variants:
        cases.append(
            (
                "duplicate files (a byte copy and a BMP re-encoding of one PNG)",
                "`copy of good_00.png`, `good_00 again.bmp`",
                "decoded (each file is a valid image)",
                f"reported once: {dup_text}",
                extra,
            )
        )
        commands.append(
            (
                [
                    "fit",
                    str(dup),
                    "--out",
                    str(work / "out" / f"duplicates{'-' + extra[1] if extra else ''}"),
                    *TINY,
                    *extra,
                ],
                [dup],
            )
        )
    results = _run_all(run, jobs, commands)
    rows = [(*c[:4], r, c[4]) for c, r in zip(cases, results)]
    for (case, *_), r in zip(cases, results):
        print(f"  {case}: exit {r['rc']} ({r['seconds']:.0f} s)", flush=True)
    # The screen over every case at once.
    result = screen_images(
        load_unlabeled(all_dir), "skip", skip_list=work / "out" / "all-bad-images-skipped.csv"
    )
    notes = [n.replace(str(work), "$WORK") for n in result.notes(max_listed=100)]
    return rows, notes


def _templates(work: Path) -> dict:
    """The input folders of the bad requests; each command gets a copy of its own."""
    t = work / "templates"
    labelled = t / "labelled"
    make_labelled(labelled)
    (t / "empty").mkdir(parents=True)
    no_images = t / "no-images"
    no_images.mkdir()
    (no_images / "README.txt").write_text("notes\n")
    (no_images / "photo.gif").write_bytes(_encode(Image.new("RGB", (4, 4)), "GIF"))
    all_bad = t / "all-bad"
    all_bad.mkdir()
    for n in ("a.png", "b.jpg", "c.png"):
        (all_bad / n).write_bytes(b"not an image")
    make_good_images(t / "two-images", n=2)
    make_good_images(t / "good-only", n=8)
    return {p.name: p for p in t.iterdir()}


def requests_table(run: Runner, on_bad_image_flag: bool, jobs: int):
    import torch
    import torchvision

    from robustsdd import Featurizer, ViewSpec, create_detector
    from robustsdd.features import FeatureExtractor

    work = run.work
    tpl = _templates(work)
    wrong = work / "resnet18-state-dict.pt"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), wrong)
    junk = work / "junk-weights.pt"
    junk.write_bytes(b"these are not weights")
    model = work / "out" / "model"  # for the `score` cases
    made = run.cli(["fit", str(tpl["good-only"]), "--rule", "none", "--out", str(model), *TINY])
    if made["rc"] != 0:
        raise SystemExit(f"could not fit the model the score cases need: {made['message']}")
    pool = load_folder(tpl["labelled"])

    def featurizer(backbone):
        # Not the recipe: asks the Featurizer class itself for a backbone (e.g. an unknown one).
        fz = Featurizer(
            backbone=backbone,
            weights=None,
            views=ViewSpec(size=32, scales=(1,)),
            cache_dir=False,
            progress=False,
        )
        return fz.extractor.n_features

    def extractor(weights):
        return FeatureExtractor("efficientnet_lite0", weights=weights).n_features

    def weights(path):
        return _replace(TINY, "random", str(path))

    def split(n, c):
        return lambda: paper_split(
            pool, n_train=n, contamination=c, n_test_good=2, n_test_defective=2
        )

    def run_args(n, c):
        return [
            "--n-train",
            str(n),
            "--contamination",
            str(c),
            "--n-test-good",
            "2",
            "--n-test-defective",
            "2",
        ]

    skip = ["--on-bad-image", "skip"] if on_bad_image_flag else []
    # (request, library call or None, input templates, argv builder(inputs, out folder))
    cases = [
        (
            "empty folder",
            lambda: load_unlabeled(tpl["empty"]),
            ["empty"],
            lambda i, o: ["fit", i[0], "--out", o, *TINY],
        ),
        (
            "folder with no image files (a .txt and a .gif)",
            lambda: load_unlabeled(tpl["no-images"]),
            ["no-images"],
            lambda i, o: ["fit", i[0], "--out", o, *TINY],
        ),
        (
            "folder that does not exist",
            lambda: load_unlabeled(work / "missing"),
            [],
            lambda i, o: ["fit", str(work / "missing"), "--out", o, *TINY],
        ),
        (
            "every image unreadable (3 of 3)" + (" (--on-bad-image skip)" if skip else ""),
            lambda: screen_images(load_unlabeled(tpl["all-bad"]), "skip"),
            ["all-bad"],
            lambda i, o: ["fit", i[0], "--out", o, *TINY, *skip],
        ),
        (
            "N larger than the pool (500; pool: 12 good + 6 defective)",
            split(500, 0.2),
            ["labelled"],
            lambda i, o: [
                "run",
                "--source",
                "folder",
                "--root",
                i[0],
                *run_args(500, 0.2),
                "--out",
                o,
                *TINY,
            ],
        ),
        (
            "contamination the pool cannot meet (90 % of 10, + 2 defective test images; pool has 6)",
            split(10, 0.9),
            ["labelled"],
            lambda i, o: [
                "run",
                "--source",
                "folder",
                "--root",
                i[0],
                *run_args(10, 0.9),
                "--out",
                o,
                *TINY,
            ],
        ),
        (
            "contamination out of range (1.5)",
            split(10, 1.5),
            ["labelled"],
            lambda i, o: [
                "run",
                "--source",
                "folder",
                "--root",
                i[0],
                *run_args(10, 1.5),
                "--out",
                o,
                *TINY,
            ],
        ),
        (
            "unknown backbone name",
            lambda: featurizer("no_such_net"),
            ["good-only"],
            lambda i, o: ["fit", i[0], "--backbone", "no_such_net", "--out", o, *TINY],
        ),
        (
            "unknown detector name",
            lambda: create_detector("no_such_detector"),
            ["good-only"],
            lambda i, o: ["fit", i[0], "--out", o, *_replace(TINY, "gaussian", "no_such_detector")],
        ),
        (
            "unknown removal rule",
            None,
            ["good-only"],
            lambda i, o: ["fit", i[0], "--rule", "no_such_rule", "--out", o, *TINY],
        ),
        (
            "unknown sweep strategy",
            None,
            ["labelled"],
            lambda i, o: [
                "sweep",
                "--source",
                "folder",
                "--root",
                i[0],
                "--strategies",
                "osr_banana",
                "--out",
                o,
                *TINY,
            ],
        ),
        (
            "weights file of the wrong architecture (a ResNet-18 state dict)",
            lambda: extractor(wrong),
            ["good-only"],
            lambda i, o: ["fit", i[0], "--out", o, *weights(wrong)],
        ),
        (
            "weights file that is not weights (text)",
            lambda: extractor(junk),
            ["good-only"],
            lambda i, o: ["fit", i[0], "--out", o, *weights(junk)],
        ),
        (
            "weights file that does not exist",
            lambda: extractor(work / "nope.pt"),
            ["good-only"],
            lambda i, o: ["fit", i[0], "--out", o, *weights(work / "nope.pt")],
        ),
        (
            "every image above the removal threshold (--threshold -1e9)",
            None,
            ["good-only"],
            lambda i, o: ["fit", i[0], "--threshold=-1e9", "--out", o, *TINY],
        ),
        (
            "removal of every image asked (--rule fraction --fraction 1.0)",
            None,
            ["good-only"],
            lambda i, o: [
                "fit",
                i[0],
                "--rule",
                "fraction",
                "--fraction",
                "1.0",
                "--out",
                o,
                *TINY,
            ],
        ),
        (
            "fewer images than the removal guard keeps (2 images, --min-keep 5)",
            None,
            ["two-images"],
            lambda i, o: [
                "fit",
                i[0],
                "--rule",
                "fraction",
                "--fraction",
                "0.5",
                "--min-keep",
                "5",
                "--out",
                o,
                *TINY,
            ],
        ),
        (
            "model folder that does not exist",
            None,
            ["good-only"],
            lambda i, o: [
                "score",
                str(work / "no-model"),
                "--source",
                "unlabeled",
                "--root",
                i[0],
                "--quiet",
            ],
        ),
        (
            "a folder of images given as the model",
            None,
            ["good-only"],
            lambda i, o: ["score", i[0], "--source", "unlabeled", "--root", i[0], "--quiet"],
        ),
        (
            "`fit --out` inside the input folder",
            None,
            ["good-only"],
            lambda i, o: ["fit", i[0], "--out", str(Path(i[0]) / "model"), *TINY],
        ),
        (
            "`predict --out` inside the input folder",
            None,
            ["good-only"],
            lambda i, o: [
                "predict",
                str(model),
                i[0],
                "--out",
                str(Path(i[0]) / "p.csv"),
                "--quiet",
            ],
        ),
        (
            "`score --out` inside the input folder",
            None,
            ["good-only"],
            lambda i, o: [
                "score",
                str(model),
                "--source",
                "unlabeled",
                "--root",
                i[0],
                "--out",
                str(Path(i[0]) / "scores.csv"),
                "--quiet",
            ],
        ),
        (
            "`run --out` inside the input folder",
            None,
            ["labelled"],
            lambda i, o: [
                "run",
                "--source",
                "folder",
                "--root",
                i[0],
                *run_args(6, 0.2),
                "--out",
                str(Path(i[0]) / "run"),
                *TINY,
            ],
        ),
    ]
    outcomes, commands = [], []
    for k, (_name, lib, needs, argv) in enumerate(cases):
        outcomes.append(library(lib, work) if lib is not None else "—")
        inputs = []
        for t in needs:  # a fresh copy, so commands run side by side cannot see each other
            inputs.append(work / "inputs" / f"{k:02d}" / t)
            shutil.copytree(tpl[t], inputs[-1], symlinks=True)
        commands.append(
            (argv([str(p) for p in inputs], str(work / "out" / f"request-{k:02d}")), inputs)
        )
    results = _run_all(run, jobs, commands)
    for (name, *_), r in zip(cases, results):
        print(f"  {name}: exit {r['rc']} ({r['seconds']:.0f} s)", flush=True)
    return [(c[0], o, r) for c, o, r in zip(cases, outcomes, results)]


# --------------------------------------------------------------------------- interrupted fits
# `robustsdd fit` with hooks (counts fits, pauses at a checkpoint), shared with the tests.
HOOKS = Path(__file__).resolve().parent.parent / "tests" / "fit_with_hooks.py"


def _hooked(run: Runner, argv, pause_after=None, sig=None):
    """Run ``fit`` through the hooks; with ``pause_after``, send ``sig`` at that checkpoint."""
    import signal as _signal

    hooks, marker = HOOKS, run.work / "paused"
    marker.unlink(missing_ok=True)
    env = dict(run.env, PAUSED_MARKER=str(marker), PAUSE_SECONDS="300")
    env.pop("PAUSE_AFTER", None)
    if pause_after:
        env["PAUSE_AFTER"] = pause_after
    proc = subprocess.Popen(
        [sys.executable, str(hooks), *argv],
        env=env,
        cwd=run.work,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    err_note = ""
    if pause_after:
        deadline = time.monotonic() + 600
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if marker.exists():
            proc.send_signal(sig)
        else:
            err_note = f"**never reached checkpoint {pause_after}**"
    out, err = proc.communicate(timeout=600)
    rc = proc.returncode
    rc_text = f"{rc} ({_signal.Signals(-rc).name})" if rc < 0 else str(rc)
    lines = [x for x in (out + err).splitlines() if x.strip()]
    keep = [
        x
        for x in lines
        if x.startswith(
            ("resuming", "ignoring", "not resuming", "robustsdd fit:", "note: restored")
        )
    ]
    if pause_after and not marker.exists():
        keep = [err_note, *keep, *lines[-3:]]
    fits = next((x.split(": ")[1] for x in lines if x.startswith("detector fits:")), "—")
    return {
        "rc": rc_text,
        "traceback": "Traceback" in err,
        "fits": fits,
        "messages": [m.replace(str(run.work), "$WORK") for m in keep],
        "command": run.show(argv)
        + (f"   # {sig.name} after checkpoint {pause_after}" if pause_after else ""),
    }


def _model_state(folder: Path) -> str:
    """What a model folder holds: its files, checkpoints, whether it loads."""
    from robustsdd import Model

    if not folder.exists():
        return "absent"
    names = sorted(p.name for p in folder.iterdir() if p.name != ".partial")
    ckpts = (
        sorted(p.name for p in (folder / ".partial").iterdir())
        if (folder / ".partial").is_dir()
        else []
    )
    try:
        Model.load(folder)
        loads = "loads"
    except RobustSDDError:
        loads = "does not load"
    parts = [f"{len(names)} model files" if names else "no model files"]
    if ckpts:
        parts.append(".partial/: " + ", ".join(c.replace(".ckpt", "") for c in ckpts))
    return "; ".join(parts) + f"; {loads}"


def _files_bytes(folder: Path) -> dict:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".partial" not in p.relative_to(folder).parts
    }


def _same_model(a: Path, b: Path) -> str:
    """'yes' if the two model folders hold the same model and scores, bit for bit."""
    import json

    from safetensors.torch import load_file

    try:
        same = json.loads((a / "robustsdd.json").read_text()) == json.loads(
            (b / "robustsdd.json").read_text()
        )
        same &= all(
            (a / f).read_bytes() == (b / f).read_bytes()
            for f in ("train_scores.csv", "config.json", "report.html")
        )
        sa, sb = load_file(a / "state.safetensors"), load_file(b / "state.safetensors")
        same &= sa.keys() == sb.keys() and all(
            sa[k].numpy().tobytes() == sb[k].numpy().tobytes() for k in sa
        )
    except OSError as exc:
        return f"**NO** ({exc})"
    return "yes" if same else "**NO**"


def interrupt_table(run: Runner):
    """Interrupt `fit` at known points, damage checkpoints, resume; compare with a clean run."""
    import signal as _signal

    work = run.work
    images = work / "interrupt" / "images"
    make_good_images(images, n=12)
    out = work / "interrupt" / "out"
    fit_args = ["--rule", "fraction", "--fraction", "0.1", *TINY]

    def fit(name, pause_after=None, sig=None, folder=None, extra=()):
        argv = ["fit", str(folder or images), "--out", str(out / name), *fit_args, *extra]
        before = snapshot(folder or images)
        r = _hooked(run, argv, pause_after, sig)
        r["unchanged"] = "yes" if snapshot(folder or images) == before else "**NO**"
        r["after"] = _model_state(out / name)
        print(
            f"    {name}: exit {r['rc']}, {r['fits']} fits, {r['after']}; "
            f"{' / '.join(r['messages'])[:200]}",
            flush=True,
        )
        return r

    def damage(path: Path, how) -> str:
        if not path.is_file():
            return f"**{path.name} missing**"
        path.write_bytes(how(path.read_bytes()))
        return ""

    def flip(blob: bytes) -> bytes:
        blob = bytearray(blob)
        blob[-5] ^= 0xFF
        return bytes(blob)

    rows = []

    def row(step, r, check=""):
        rows.append((step, r, check))

    ref = fit("reference")
    row("uninterrupted fit (the reference)", ref)
    # A: a new folder, Ctrl-C after stage 1, then resumed.
    r = fit("a", "stage1", _signal.SIGINT)
    row("A1. new folder; Ctrl-C (SIGINT) after stage 1", r)
    r = fit("a")
    row(
        "A2. the same command again",
        r,
        f"same model as the reference: {_same_model(out / 'a', out / 'reference')}",
    )
    # B: over an earlier model: kill (SIGTERM), kill -9 (SIGKILL), then resumed.
    fit("b", extra=["--rule", "none"])  # the earlier model
    earlier = _files_bytes(out / "b")
    r = fit("b", "decision_fold2of5", _signal.SIGTERM)
    row(
        "B1. over an earlier model; `kill` (SIGTERM) after decision-threshold fit 2 of 5",
        r,
        f"earlier model unchanged: {'yes' if _files_bytes(out / 'b') == earlier else '**NO**'}",
    )
    r = fit("b", "decision_fold4of5", _signal.SIGKILL)
    row(
        "B2. the same command; `kill -9` (SIGKILL) after decision-threshold fit 4 of 5",
        r,
        f"earlier model unchanged: {'yes' if _files_bytes(out / 'b') == earlier else '**NO**'}",
    )
    r = fit("b")
    row(
        "B3. the same command again",
        r,
        f"same model as the reference: {_same_model(out / 'b', out / 'reference')}",
    )
    # C: damaged checkpoints.
    fit("c", "stage1", _signal.SIGINT)
    problem = damage(out / "c" / ".partial" / "stage1.ckpt", flip)
    r = fit("c")
    row(
        "C1. Ctrl-C after stage 1, one bit of its checkpoint flipped, run again",
        r,
        f"{problem} same model as the reference: "
        f"{_same_model(out / 'c', out / 'reference')}".strip(),
    )
    fit("c2", "stage3", _signal.SIGINT)
    problem = damage(out / "c2" / ".partial" / "stage3.ckpt", lambda b: b[:1000])
    r = fit("c2")
    row(
        "C2. Ctrl-C after stage 3, its checkpoint truncated to 1000 bytes, run again",
        r,
        f"{problem} same model as the reference: "
        f"{_same_model(out / 'c2', out / 'reference')}".strip(),
    )
    # D: stale checkpoints: other images, other settings.
    fit("d", "stage3", _signal.SIGINT)
    fewer = work / "interrupt" / "fewer-images"
    shutil.copytree(images, fewer)
    (fewer / "good_00.png").unlink()
    r = fit("d", folder=fewer)
    row("D1. Ctrl-C after stage 3, then the command on the same folder minus one image", r)
    fit("e", "stage3", _signal.SIGINT)
    r = fit("e", extra=["--fraction", "0.2"])
    row("D2. Ctrl-C after stage 3, then the command with `--fraction 0.2`", r)
    fit("f", "stage3", _signal.SIGINT)
    r = fit("f", extra=["--no-resume"])
    row("D3. Ctrl-C after stage 3, then the command with `--no-resume`", r)
    for step, r, _ in rows:
        print(f"  {step}: exit {r['rc']}", flush=True)
    return rows


def _replace(args, old, new):
    return [new if a == old else a for a in args]


# --------------------------------------------------------------------------- report
def render(
    image_rows, screen_notes, request_rows, on_bad_image_flag, seconds, interrupt_rows=()
) -> str:
    import PIL
    import torch

    lines = [
        "# Reliability: bad inputs and what robustsdd does with them",
        "",
        "Generated by `python benchmarks/reliability_table.py` (issue 5); do not edit by hand, "
        "re-run the script. Every input is generated in a fresh work folder (`$WORK`). CLI "
        "commands run in a subprocess with tiny settings (random backbone weights, 32 px, "
        "2 views, Gaussian detector, no feature cache). *Input unchanged* compares a hash of "
        "names, types, sizes, modes, modification times and bytes of everything under the "
        "input folder before and after the command.",
        "",
        f"robustsdd {robustsdd.__version__}, Python {platform.python_version()}, Pillow "
        f"{PIL.__version__}, NumPy {np.__version__}, PyTorch {torch.__version__}, "
        f"{platform.system()}; running as {'root' if os.geteuid() == 0 else 'a normal user'}; "
        f"{seconds:.0f} s.",
        "",
        "## 1. Bad images",
        "",
        "Each case is one file beside 5 good images (`$WORK/images/NN/`). *load_rgb*: the decoder on that file; "
        "*screen (skip)*: `screen_images(load_unlabeled(folder), 'skip')`; *CLI*: "
        f"`robustsdd fit FOLDER` {'with `--on-bad-image skip` / `fail`' if on_bad_image_flag else '(no `--on-bad-image` flag in this CLI yet: the first bad image stops the run)'}.",
        "",
        "| input | file | load_rgb | screen (skip) | CLI exit | CLI message (first line) | traceback | input unchanged |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case, fname, decoded, screened, r, extra in image_rows:
        label = case + (f" ({' '.join(extra)})" if extra else "")
        lines.append(
            f"| {_cell(label)} | {_cell(fname)} | {_cell(decoded)} | {_cell(screened)} | "
            f"{r['rc']} | {_cell(r['message'])} | {'yes' if r['traceback'] else 'no'} | "
            f"{r['unchanged']} |"
        )
    lines += [
        "",
        "All of the above in one folder (with 3 good images), screened with "
        "`screen_images(..., 'skip', skip_list=...)`; its notes:",
        "",
        "```",
    ]
    lines += screen_notes + [
        "```",
        "",
        "## 2. Bad requests",
        "",
        "| request | library | CLI exit | CLI message (first line) | traceback | input unchanged |",
        "|---|---|---|---|---|---|",
    ]
    for name, outcome, r in request_rows:
        lines.append(
            f"| {_cell(name)} | {_cell(outcome)} | {r['rc']} | {_cell(r['message'])} | "
            f"{'yes' if r['traceback'] else 'no'} | {r['unchanged']} |"
        )
    if interrupt_rows:
        lines += [
            "",
            "## 3. Interrupted fits",
            "",
            "`robustsdd fit` on 12 images (tiny settings as above, `--rule fraction "
            "--fraction 0.1`, 5 out-of-fold decision-threshold fits), run through a "
            "wrapper that pauses after a chosen checkpoint so that the signal always "
            "arrives at the same point, and counts detector fits (7 for a whole fit: "
            "stage 1, stage 3, 5 folds). *Model folder after*: the files of the model "
            "folder (excluding `.partial/`), the checkpoints in `.partial/`, and whether "
            "`Model.load` accepts it. *Same model*: `robustsdd.json`, `train_scores.csv`, "
            "`config.json`, `report.html` and every tensor identical to the reference.",
            "",
            "| step | exit | traceback | what it printed | detector fits | model folder "
            "after | check | input unchanged |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for step, r, check in interrupt_rows:
            said = " / ".join(r["messages"]) or "—"
            lines.append(
                f"| {_cell(step)} | {r['rc']} | {'yes' if r['traceback'] else 'no'} | "
                f"{_cell(said, 400)} | {r['fits']} | {_cell(r['after'])} | "
                f"{_cell(check) or '—'} | {r['unchanged']} |"
            )
    lines += ["", "## Commands", "", "Bad images:", "", "```"]
    lines += [r["command"] for *_, r, _ in image_rows]
    lines += ["```", "", "Bad requests:", "", "```"]
    lines += [r["command"] for *_, r in request_rows]
    if interrupt_rows:
        lines += [
            "```",
            "",
            "Interrupted fits (`fit_with_hooks.py`: `robustsdd fit` with the pause hook):",
            "",
            "```",
        ]
        lines += [r["command"] for _, r, _ in interrupt_rows]
    lines += ["```", ""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "RELIABILITY.md"), help="markdown file to write")
    ap.add_argument("--work", help="work folder (default: a new temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--jobs", type=int, default=2, help="commands run side by side (default 2)")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="robustsdd-reliability-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if any(work.iterdir()):
        sys.exit(f"{work} is not empty")
    run = Runner(work)
    t0 = time.perf_counter()
    try:
        help_text = subprocess.run(
            [sys.executable, "-m", "robustsdd.cli", "fit", "--help"],
            env=run.env,
            capture_output=True,
            text=True,
        ).stdout
        flag = "--on-bad-image" in help_text
        print("bad images:", flush=True)
        image_rows, screen_notes = images_table(run, flag, args.jobs)
        print("bad requests:", flush=True)
        request_rows = requests_table(run, flag, args.jobs)
        print("interrupted fits:", flush=True)
        interrupt_rows = interrupt_table(run)
        from robustsdd._io import atomic_write_bytes

        text = render(
            image_rows, screen_notes, request_rows, flag, time.perf_counter() - t0, interrupt_rows
        )
        atomic_write_bytes(args.out, text.encode())
        print(f"wrote {args.out}")
    finally:
        for p in work.rglob("secret.png"):
            p.chmod(0o644)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


if __name__ == "__main__":
    main()
