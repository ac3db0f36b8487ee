"""Decoding every image mode and array kind to (H, W, 3) uint8, and every bad file to DataError."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from robustsdd._errors import DataError
from robustsdd.data import images
from robustsdd.data.images import IMAGE_EXTENSIONS, list_images, load_rgb


def _save(img, path, **kw):
    img.save(path, **kw)
    return path


def _rgb(path):
    out = load_rgb(path)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    return out


# --------------------------------------------------------------------------- file modes


def test_rgb_png_roundtrip(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = _rgb(_save(Image.fromarray(arr), tmp_path / "a.png"))
    np.testing.assert_array_equal(out, arr)


def test_gray_l(tmp_path):
    img = Image.new("L", (3, 2), 77)
    np.testing.assert_array_equal(_rgb(_save(img, tmp_path / "a.png")), np.full((2, 3, 3), 77))


def test_mode_1_is_0_or_255(tmp_path):
    img = Image.new("1", (2, 1), 0)
    img.putpixel((1, 0), 1)
    out = _rgb(_save(img, tmp_path / "a.png"))
    np.testing.assert_array_equal(out[0, :, 0], [0, 255])


def test_la_drops_alpha(tmp_path):
    img = Image.new("LA", (2, 2), (90, 10))
    np.testing.assert_array_equal(_rgb(_save(img, tmp_path / "a.png")), np.full((2, 2, 3), 90))


def test_rgba_keeps_rgb_not_composited(tmp_path):
    img = Image.new("RGBA", (2, 2), (10, 200, 30, 0))  # fully transparent
    np.testing.assert_array_equal(_rgb(_save(img, tmp_path / "a.png"))[0, 0], [10, 200, 30])


def test_palette_maps_to_colour(tmp_path):
    img = Image.new("P", (2, 1), 0)
    img.putpalette([0, 0, 0, 12, 34, 56] + [0] * 762)
    img.putpixel((1, 0), 1)
    out = _rgb(_save(img, tmp_path / "a.png"))
    np.testing.assert_array_equal(out[0], [[0, 0, 0], [12, 34, 56]])


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (2, 1), 0)
    img.putpalette([0, 0, 0, 12, 34, 56] + [0] * 762)
    img.putpixel((1, 0), 1)
    path = _save(img, tmp_path / "a.png", transparency=1)
    assert Image.open(path).info.get("transparency") == 1
    np.testing.assert_array_equal(_rgb(path)[0, 1], [12, 34, 56])


def test_pa_mode_via_pil():
    img = Image.new("PA", (1, 1))
    img.putpalette([0, 0, 0, 9, 8, 7] + [0] * 762)
    img.putpixel((0, 0), (1, 128))
    np.testing.assert_array_equal(images._pil_to_rgb(img, "x")[0, 0], [9, 8, 7])


def test_cmyk(tmp_path):
    img = Image.new("CMYK", (2, 1), (0, 0, 0, 0))
    img.putpixel((1, 0), (255, 0, 0, 0))
    out = _rgb(_save(img, tmp_path / "a.tif"))
    np.testing.assert_array_equal(out[0], [[255, 255, 255], [0, 255, 255]])


@pytest.mark.parametrize("mode,suffix", [("I;16", ".png"), ("I;16", ".tif"), ("I;16B", ".tif")])
def test_16bit_scaled_by_257_not_clipped(tmp_path, mode, suffix):
    values = np.array([[0, 65535, 257 * 100, 1000]], dtype=np.uint16)
    dtype = ">u2" if mode == "I;16B" else "<u2"
    img = Image.frombytes(mode, (4, 1), values.astype(dtype).tobytes())
    path = _save(img, tmp_path / f"a{suffix}")
    assert Image.open(path).mode == mode
    np.testing.assert_array_equal(_rgb(path)[0, :, 1], [0, 255, 100, 4])  # 1000/257 = 3.9


def test_32bit_int(tmp_path):
    small = Image.fromarray(np.array([[0, 65535, 25700]], dtype=np.int32))
    assert small.mode == "I"
    np.testing.assert_array_equal(_rgb(_save(small, tmp_path / "a.tif"))[0, :, 0], [0, 255, 100])
    big = Image.fromarray(np.array([[0, 2**31 - 1, 2**30]], dtype=np.int32))
    np.testing.assert_array_equal(_rgb(_save(big, tmp_path / "b.tif"))[0, :, 0], [0, 255, 128])
    neg = Image.fromarray(np.array([[-5, 7]], dtype=np.int32))
    with pytest.raises(DataError, match="negative"):
        load_rgb(_save(neg, tmp_path / "c.tif"))


def test_float_mode_f(tmp_path):
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    np.testing.assert_array_equal(_rgb(_save(unit, tmp_path / "a.tif"))[0, :, 0], [0, 128, 255])
    byte_scale = Image.fromarray(np.array([[0.0, 200.0]], dtype=np.float32))
    np.testing.assert_array_equal(_rgb(_save(byte_scale, tmp_path / "b.tif"))[0, :, 0], [0, 200])
    bad = Image.fromarray(np.array([[np.nan, 1.0]], dtype=np.float32))
    with pytest.raises(DataError, match="NaN"):
        load_rgb(_save(bad, tmp_path / "c.tif"))


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_exif_orientation_6_rotates(tmp_path, suffix):
    arr = np.zeros((2, 4, 3), dtype=np.uint8)  # 2 high, 4 wide
    arr[0, 0] = [255, 0, 0]
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = _save(img, tmp_path / f"a{suffix}", exif=exif.tobytes())
    out = _rgb(path)
    assert out.shape == (4, 2, 3)
    if suffix == ".png":  # lossless: the stored top-left pixel ends top-right
        np.testing.assert_array_equal(out[0, 1], [255, 0, 0])


def test_jpeg_webp_bmp_decode(tmp_path):
    img = Image.new("RGB", (8, 6), (100, 150, 200))
    for suffix in (".jpg", ".webp", ".bmp"):
        out = _rgb(_save(img, tmp_path / f"a{suffix}"))
        assert out.shape == (6, 8, 3)
        assert np.abs(out.astype(int) - [100, 150, 200]).max() <= 3


# --------------------------------------------------------------------------- arrays


def test_array_gray_shapes():
    gray = np.arange(6, dtype=np.uint8).reshape(2, 3)
    expect = np.repeat(gray[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(load_rgb(gray), expect)
    np.testing.assert_array_equal(load_rgb(gray[:, :, None]), expect)


def test_array_rgb_and_rgba():
    rgba = np.random.default_rng(1).integers(0, 256, (3, 2, 4), dtype=np.uint8)
    np.testing.assert_array_equal(load_rgb(rgba), rgba[:, :, :3])
    np.testing.assert_array_equal(load_rgb(rgba[:, :, :3]), rgba[:, :, :3])


def test_array_output_is_a_copy():
    arr = np.zeros((2, 2, 3), dtype=np.uint8)
    out = load_rgb(arr)
    out[:] = 9
    assert arr.max() == 0
    readonly = np.zeros((2, 2), dtype=np.uint8)
    readonly.setflags(write=False)
    assert load_rgb(readonly).flags.writeable


def test_array_uint16_bool_float():
    np.testing.assert_array_equal(
        load_rgb(np.array([[0, 65535, 25700]], np.uint16))[0, :, 0], [0, 255, 100]
    )
    np.testing.assert_array_equal(load_rgb(np.array([[False, True]]))[0, :, 0], [0, 255])
    np.testing.assert_array_equal(
        load_rgb(np.array([[0.0, 0.2, 1.0]], np.float32))[0, :, 0], [0, 51, 255]
    )


@pytest.mark.parametrize(
    "arr,match",
    [
        (np.array([[0.0, 1.5]]), r"\[0, 1\]"),
        (np.array([[-0.1, 0.5]]), r"\[0, 1\]"),
        (np.array([[np.nan, 0.5]]), "NaN"),
        (np.array([[np.inf, 0.5]]), "NaN or infinite"),
        (np.zeros((2, 2), np.int64), "dtype"),
        (np.zeros((2, 2), np.complex64), "dtype"),
        (np.zeros((2, 2, 2), np.uint8), "shape"),
        (np.zeros(5, np.uint8), "shape"),
        (np.zeros((2, 2, 3, 1), np.uint8), "shape"),
        (np.zeros((0, 3), np.uint8), "empty"),
    ],
)
def test_bad_arrays_raise_named(arr, match):
    with pytest.raises(DataError, match=match) as e:
        load_rgb(arr, name="cell/7")
    assert str(e.value).startswith("cell/7:")


def test_bad_item_type():
    with pytest.raises(DataError):
        load_rgb(42)


# --------------------------------------------------------------------------- bad files


def _noise_png(path, size=64):
    arr = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def test_bad_files_raise_dataerror_naming_file(tmp_path):
    missing = tmp_path / "missing.png"
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "text.png"
    text.write_text("this is not an image\n")
    folder = tmp_path / "folder.png"
    folder.mkdir()
    trunc_png = _noise_png(tmp_path / "trunc.png")
    trunc_png.write_bytes(trunc_png.read_bytes()[: trunc_png.stat().st_size // 2])
    jpg = tmp_path / "trunc.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        jpg
    )
    jpg.write_bytes(jpg.read_bytes()[: jpg.stat().st_size // 2])
    cases = {
        missing: "not found",
        empty: "0 bytes",
        text: "not an image",
        folder: "folder",
        trunc_png: "cannot decode",
        jpg: "cannot decode",
    }
    for path, what in cases.items():
        with pytest.raises(DataError, match=what) as e:
            load_rgb(path)
        assert str(e.value).startswith(str(path)), str(e.value)
        with pytest.raises(DataError) as e:  # str paths too, and name replaces the path
            load_rgb(str(path), name="nice-name")
        assert str(e.value).startswith("nice-name:")


def _png_with_size(path, width, height):
    """A PNG whose header claims width x height (the pixel data is never read)."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def test_pixel_guard(tmp_path, monkeypatch):
    small = _save(Image.new("L", (5, 5)), tmp_path / "small.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 24)
    with pytest.raises(DataError, match="too large") as e:
        load_rgb(small)
    assert str(e.value).startswith(str(small))


def test_decompression_bomb_header(tmp_path, monkeypatch):
    bomb = _png_with_size(tmp_path / "bomb.png", 30000, 30000)
    with pytest.raises(DataError, match="too large") as e:  # Pillow's guard or ours
        load_rgb(bomb)
    assert str(e.value).startswith(str(bomb))
    # With Pillow's guard switched off by the user, ours still refuses.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(DataError, match="limit 200,000,000"):
        load_rgb(bomb)


# --------------------------------------------------------------------------- list_images


def test_list_images(tmp_path):
    for rel in [
        "b.png",
        "a.JPG",
        "sub/c.tif",
        "sub/deep/d.webp",
        "z.bmp",
        "x.jpeg",
        "y.TIFF",
        ".hidden.png",
        ".git/e.png",
        "sub/.cache/f.png",
        "notes.txt",
        "sub/g.gif",
    ]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    (tmp_path / "dir.png").mkdir()  # a folder with an image name is not a file
    rels = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert rels == ["a.JPG", "b.png", "sub/c.tif", "sub/deep/d.webp", "x.jpeg", "y.TIFF", "z.bmp"]
    flat = [p.name for p in list_images(tmp_path, recursive=False)]
    assert flat == ["a.JPG", "b.png", "x.jpeg", "y.TIFF", "z.bmp"]
    assert list_images(tmp_path / "sub" / "deep") == [tmp_path / "sub" / "deep" / "d.webp"]


def test_list_images_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist") as e:
        list_images(tmp_path / "nope")
    assert str(e.value).startswith(str(tmp_path / "nope"))
    f = tmp_path / "f.png"
    f.write_bytes(b"x")
    with pytest.raises(DataError, match="not a folder"):
        list_images(f)


def test_extensions():
    assert IMAGE_EXTENSIONS == {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
