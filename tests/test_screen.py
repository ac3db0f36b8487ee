"""Every bad image of issue 5 (item 1): decoded right, or skipped/failed with a message naming it.

The fixtures are made in tmp_path: broken files, odd modes, EXIF rotations, a decompression
bomb, unreadable files, broken links, odd names and duplicates. ``screen_images`` must skip
(and list) or fail on each bad one, decode each good one, and report duplicates once per group.
"""

import csv
import io
import os
import resource
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from robustsdd._errors import ConfigError, DataError
from robustsdd.data import (
    DEFECTIVE,
    GOOD,
    ImageSet,
    load_folder,
    load_unlabeled,
    screen_images,
    write_skip_list,
)
from robustsdd.data import images as images_mod
from robustsdd.data.images import list_images, load_rgb


def _noise(h=32, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _encode(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _png_header_only(width, height):
    """A PNG whose header claims width x height; its pixel data is a few bytes."""

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


def _exif_jpeg(orientation, arr):
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = orientation
    return _encode(img, "JPEG", quality=95, exif=exif.tobytes())


# Bad files: name -> (bytes, the words the skip reason must contain)
def _bad_files():
    png = _encode(Image.fromarray(_noise(64, 64)), "PNG")
    jpg = _encode(Image.fromarray(_noise(64, 64)), "JPEG")
    return {
        "zero.png": (b"", "empty file (0 bytes)"),
        "truncated.png": (png[: len(png) // 2], "cannot decode"),
        "truncated.jpg": (jpg[: len(jpg) // 2], "cannot decode"),
        "header-only.jpg": (jpg[:20], "not an image"),
        "text.png": (b"this is a text file, not a PNG\n", "not an image"),
        "document.png": (b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n", "not an image"),
        "vector.tif": (b'<svg xmlns="http://www.w3.org/2000/svg"/>\n', "not an image"),
        "bomb.png": (_png_header_only(100_000, 100_000), "too large"),
    }


@pytest.fixture
def messy(tmp_path):
    """A folder with every kind of good and bad image; returns (root, expected bad reasons)."""
    root = tmp_path / "images"
    bad = {}
    for name, (data, why) in _bad_files().items():
        _write(root / name, data)
        bad[name] = why
    os.symlink(tmp_path / "gone.png", root / "broken-link.png")
    bad["broken-link.png"] = "broken symbolic link"
    os.symlink("loop.png", root / "loop.png")
    bad["loop.png"] = "broken symbolic link"
    # Good images, odd modes and names
    _write(root / "rgb.png", _encode(Image.fromarray(_noise()), "PNG"))
    _write(
        root / "gray16.png",
        _encode(Image.fromarray(np.array([[0, 65535], [25700, 1000]], np.uint16)), "PNG"),
    )
    _write(root / "rgba.png", _encode(Image.new("RGBA", (3, 2), (10, 20, 30, 0)), "PNG"))
    pal = Image.new("P", (2, 1), 0)
    pal.putpalette([0, 0, 0, 12, 34, 56] + [0] * 762)
    pal.putpixel((1, 0), 1)
    _write(root / "palette.png", _encode(pal, "PNG"))
    _write(
        root / "cmyk.jpg",
        _encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95),
    )
    _write(root / "one-pixel.png", _encode(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG"))
    _write(
        root / "sub dir" / "name with spaces.png", _encode(Image.fromarray(_noise(seed=1)), "PNG")
    )
    _write(root / "ünïcödé 日本 ✓.png", _encode(Image.fromarray(_noise(seed=2)), "PNG"))
    # Duplicates: the same pixels as rgb.png, once as a copy, once re-encoded as BMP.
    _write(root / "copy of rgb.png", (root / "rgb.png").read_bytes())
    _write(root / "rgb-again.bmp", _encode(Image.fromarray(_noise()), "BMP"))
    return root, bad


# --------------------------------------------------------------------------- screening


def test_screen_skips_every_bad_file_and_names_it(messy, tmp_path):
    root, bad = messy
    images = load_unlabeled(root)
    result = screen_images(images, "skip", skip_list=tmp_path / "out" / "skipped.csv")
    skipped = {s.name: s.reason for s in result.skipped}
    assert set(skipped) == set(bad)
    for name, why in bad.items():
        assert why in skipped[name], (name, skipped[name])
        assert skipped[name].startswith(name + ":"), skipped[name]  # the message names the file
    good = set(result.images.names)
    assert good == set(images.names) - set(bad)
    assert result.n_total == len(images) and result.n_unreadable == len(bad)
    assert all(isinstance(p, Path) for p in result.images.items)  # paths, not decoded arrays
    assert len(result.digests) == len(result.images)
    # The skip list: UTF-8 CSV, columns name and reason, one row per skipped file, outside root.
    with open(tmp_path / "out" / "skipped.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert {r["name"]: r["reason"] for r in rows} == skipped
    assert result.skip_list == tmp_path / "out" / "skipped.csv"
    notes = "\n".join(result.notes())
    assert f"skipped {len(bad)} of {len(images)} images" in notes and "skipped.csv" in notes


def test_duplicates_reported_once_per_group(messy):
    root, _ = messy
    result = screen_images(load_unlabeled(root))
    assert len(result.duplicates) == 1
    group = result.duplicates[0]
    assert group.first == "copy of rgb.png"  # first in the set's (sorted) order
    assert set(group.others) == {"rgb-again.bmp", "rgb.png"}
    assert group.describe() == "rgb-again.bmp, rgb.png: same content as copy of rgb.png"
    # "keep" (default) keeps every copy; "drop" keeps the first and lists the others.
    assert {"rgb.png", "rgb-again.bmp", "copy of rgb.png"} <= set(result.images.names)
    dropped = screen_images(load_unlabeled(root), duplicates="drop")
    assert "copy of rgb.png" in dropped.images.names
    assert not {"rgb.png", "rgb-again.bmp"} & set(dropped.images.names)
    dup_rows = [s for s in dropped.skipped if s.kind == "duplicate"]
    assert [s.reason for s in dup_rows] == [
        "rgb-again.bmp: duplicate: same content as copy of rgb.png",
        "rgb.png: duplicate: same content as copy of rgb.png",
    ]
    assert sum("same content as" in n for n in dropped.notes()) == 1


def test_fail_mode_raises_first_bad_file(messy):
    root, bad = messy
    images = load_unlabeled(root)
    first_bad = next(n for n in images.names if n in bad)
    with pytest.raises(DataError) as e:
        screen_images(images, "fail")
    assert str(e.value).startswith(first_bad + ":")


def test_good_images_all_decode_to_rgb(messy):
    root, bad = messy
    images = load_unlabeled(root)
    for i, name in enumerate(images.names):
        if name not in bad:
            out = images.rgb(i)
            assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3, name


def test_labels_and_masks_follow_the_kept_images(tmp_path):
    root = tmp_path / "data"
    for i in range(3):
        _write(root / "good" / f"g{i}.png", _encode(Image.fromarray(_noise(seed=10 + i)), "PNG"))
        _write(root / "masks" / f"g{i}.png", _encode(Image.new("L", (32, 32)), "PNG"))
    _write(root / "good" / "g1.png", b"")  # broken, in the middle
    _write(root / "defect" / "d0.png", _encode(Image.fromarray(_noise(seed=20)), "PNG"))
    _write(root / "masks" / "d0.png", _encode(Image.new("L", (32, 32), 255), "PNG"))
    result = screen_images(load_folder(root))
    kept = result.images
    assert kept.names == ["good/g0.png", "good/g2.png", "defect/d0.png"]
    assert kept.labels.tolist() == [GOOD, GOOD, DEFECTIVE]
    assert [m.name for m in kept.masks] == ["g0.png", "g2.png", "d0.png"]
    assert kept.meta["root"] == str(root)


def test_all_skipped_and_empty_are_clear_errors(tmp_path):
    root = tmp_path / "bad"
    for n in ("a.png", "b.jpg", "c.png"):
        _write(root / n, b"nope")
    with pytest.raises(DataError, match=r"all 3 images were skipped.*see .*skipped\.csv") as e:
        screen_images(load_unlabeled(root), skip_list=tmp_path / "out" / "skipped.csv")
    assert str(e.value).startswith(str(root))
    rows = list(csv.reader((tmp_path / "out" / "skipped.csv").open(encoding="utf-8")))
    assert [r[0] for r in rows] == ["name", "a.png", "b.jpg", "c.png"]
    with pytest.raises(DataError, match=r"all 3 images were skipped.*first: a\.png: not an image"):
        screen_images(load_unlabeled(root))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no images found") as e:
        load_unlabeled(empty)
    assert str(e.value).startswith(str(empty))
    with pytest.raises(DataError, match="no images found"):
        screen_images(ImageSet([], [], [], meta={"root": str(empty)}))


def test_options_and_skip_list_location(messy, tmp_path):
    root, _ = messy
    images = load_unlabeled(root)
    with pytest.raises(ConfigError, match="on_bad_image"):
        screen_images(images, "ignore")
    with pytest.raises(ConfigError, match="duplicates"):
        screen_images(images, duplicates="merge")
    before = sorted(p.name for p in root.rglob("*"))
    with pytest.raises(ConfigError, match="inside the image folder"):
        screen_images(images, skip_list=root / "skipped.csv")
    with pytest.raises(ConfigError, match="inside the image folder"):
        write_skip_list(screen_images(images), root / "sub dir" / "skipped.csv")
    assert sorted(p.name for p in root.rglob("*")) == before


def test_arrays_are_screened_too():
    bad = np.full((2, 2), np.nan)
    images = ImageSet(
        [np.zeros((4, 4), np.uint8), bad, np.zeros((4, 4), np.uint8)],
        [0, 0, 0],
        ["a", "b", "c"],
        source="memory",
    )
    result = screen_images(images)
    assert result.images.names == ["a", "c"]
    assert result.skipped[0].path is None and result.skipped[0].reason.startswith("b: ")
    assert result.duplicates[0].describe() == "c: same content as a"


def test_screen_holds_no_decoded_images(tmp_path, monkeypatch):
    """Each decoded image is dropped before the next is decoded."""
    import weakref

    for i in range(4):
        _write(tmp_path / f"{i}.png", _encode(Image.fromarray(_noise(seed=i)), "PNG"))
    images = load_unlabeled(tmp_path)
    alive, real_rgb = [], ImageSet.rgb

    class Tracked(np.ndarray):
        pass

    def rgb(self, i):
        out = real_rgb(self, i).view(Tracked)
        assert sum(r() is not None for r in alive) == 0, "an earlier decoded image is still held"
        alive.append(weakref.ref(out))
        return out

    monkeypatch.setattr(ImageSet, "rgb", rgb)
    assert len(screen_images(images).images) == 4


def test_skip_list_with_undecodable_file_name(tmp_path):
    name = os.fsdecode(b"bad-\xff.png")  # not UTF-8: a surrogate escape in Python
    try:
        _write(tmp_path / "in" / name, b"")
    except (UnicodeEncodeError, OSError):
        pytest.skip("this file system does not take non-UTF-8 names")
    result = screen_images(
        ImageSet([tmp_path / "in" / name, np.zeros((2, 2), np.uint8)], [0, 0], [name, "ok"])
    )
    write_skip_list(result, tmp_path / "skipped.csv")
    text = (tmp_path / "skipped.csv").read_text(encoding="utf-8")
    assert "bad-\\udcff.png" in text


# --------------------------------------------------------------------------- single cases


@pytest.mark.parametrize(
    "orientation,corner", [(1, (0, 0)), (3, (-1, -1)), (6, (0, -1)), (8, (-1, 0))]
)
def test_exif_rotated_jpeg_pixel_positions(tmp_path, orientation, corner):
    """A red block stored top-left must appear where the EXIF orientation puts it."""
    arr = np.zeros((32, 48, 3), np.uint8)  # 32 high, 48 wide
    arr[:16, :16] = [255, 0, 0]
    out = load_rgb(_write(tmp_path / "r.jpg", _exif_jpeg(orientation, arr)))
    assert out.shape == ((32, 48, 3) if orientation in (1, 3) else (48, 32, 3))
    rows = slice(0, 8) if corner[0] == 0 else slice(-8, None)
    cols = slice(0, 8) if corner[1] == 0 else slice(-8, None)
    block = out[rows, cols].reshape(-1, 3).mean(axis=0)
    assert block[0] > 200 and block[1] < 50 and block[2] < 50, block
    assert out.reshape(-1, 3)[:, 0].astype(int).sum() < 0.3 * 255 * out.shape[0] * out.shape[1]


def test_mode_conversions(messy):
    root, _ = messy
    np.testing.assert_array_equal(load_rgb(root / "gray16.png")[:, :, 0], [[0, 255], [100, 4]])
    np.testing.assert_array_equal(load_rgb(root / "rgba.png"), np.full((2, 3, 3), [10, 20, 30]))
    np.testing.assert_array_equal(load_rgb(root / "palette.png")[0], [[0, 0, 0], [12, 34, 56]])
    cmyk = load_rgb(root / "cmyk.jpg")  # C=0 M=255 Y=255 K=0 is red
    assert cmyk.shape == (16, 16, 3)
    assert np.abs(cmyk.reshape(-1, 3).mean(axis=0) - [255, 0, 0]).max() < 8
    np.testing.assert_array_equal(load_rgb(root / "one-pixel.png"), [[[1, 2, 3]]])


def test_names_with_spaces_and_non_ascii(messy):
    root, _ = messy
    images = load_unlabeled(root)
    assert "sub dir/name with spaces.png" in images.names
    assert "ünïcödé 日本 ✓.png" in images.names
    i = images.names.index("ünïcödé 日本 ✓.png")
    np.testing.assert_array_equal(images.rgb(i), _noise(seed=2))


def test_decompression_bomb_bounded_memory(tmp_path, monkeypatch):
    bomb = _write(tmp_path / "bomb.png", _png_header_only(60_000, 60_000))  # 3.6 G pixels
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for guard in (Image.MAX_IMAGE_PIXELS, None):  # Pillow's guard on, then off: ours holds
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", guard)
        with pytest.raises(DataError, match="too large") as e:
            load_rgb(bomb)
        assert str(e.value).startswith(str(bomb))
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 100, f"peak memory grew by {grown_mib:.0f} MiB"


def test_unreadable_file_real_permissions(tmp_path):
    if os.geteuid() == 0:
        pytest.skip(
            "running as root: chmod 000 does not stop root from reading "
            "(test_unreadable_file_simulated covers the same path)"
        )
    path = _write(tmp_path / "secret.png", _encode(Image.new("RGB", (2, 2)), "PNG"))
    path.chmod(0)
    try:
        with pytest.raises(DataError, match="permission denied") as e:
            load_rgb(path)
        assert str(e.value).startswith(str(path))
    finally:
        path.chmod(0o644)


def test_unreadable_file_simulated(tmp_path, monkeypatch):
    path = _write(tmp_path / "secret.png", _encode(Image.new("RGB", (2, 2)), "PNG"))
    real_open = images_mod.Image.open

    def deny(fp, *a, **k):
        if Path(fp) == path:
            raise PermissionError(13, "Permission denied", str(fp))
        return real_open(fp, *a, **k)

    monkeypatch.setattr(images_mod.Image, "open", deny)
    with pytest.raises(DataError, match="permission denied") as e:
        load_rgb(path)
    assert str(e.value).startswith(str(path))
    result = screen_images(
        ImageSet([path, np.zeros((2, 2), np.uint8)], [0, 0], ["secret.png", "ok"])
    )
    assert [(s.name, s.reason) for s in result.skipped] == [
        ("secret.png", "secret.png: permission denied")
    ]


def test_unlistable_subfolder_is_an_error_not_a_silent_gap(tmp_path, monkeypatch):
    _write(tmp_path / "a.png", _encode(Image.new("RGB", (2, 2)), "PNG"))
    locked = tmp_path / "locked"
    _write(locked / "b.png", _encode(Image.new("RGB", (2, 2)), "PNG"))
    real_scandir = os.scandir

    def scandir(p="."):
        if Path(p) == locked:
            raise PermissionError(13, "Permission denied", str(p))
        return real_scandir(p)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(DataError, match="cannot list folder: permission denied") as e:
        list_images(tmp_path)
    assert str(e.value).startswith(str(locked))


def test_fifo_is_refused_not_read(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this OS")
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="not a regular file"):
        load_rgb(fifo)  # opening a FIFO would block forever


def test_broken_symlink_message(tmp_path):
    link = tmp_path / "l.png"
    os.symlink(tmp_path / "nowhere" / "x.png", link)
    assert list_images(tmp_path) == [link]  # listed, so it can be reported, not hidden
    with pytest.raises(DataError, match="broken symbolic link .*nowhere") as e:
        load_rgb(link)
    assert str(e.value).startswith(str(link))
    good = _write(tmp_path / "target.png", _encode(Image.new("RGB", (2, 2), (5, 6, 7)), "PNG"))
    os.symlink(good, tmp_path / "ok-link.png")
    np.testing.assert_array_equal(load_rgb(tmp_path / "ok-link.png")[0, 0], [5, 6, 7])
