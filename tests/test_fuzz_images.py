"""Fuzzing the image loader: any bytes, any array -> a valid (H, W, 3) uint8 image or our own error.

Hypothesis draws random bytes and truncated/mutated encodings of valid PNG, JPEG, BMP, GIF,
TIFF and WebP files (several modes each), and arrays of many shapes, dtypes and byte orders.
``load_rgb`` must return an (H, W, 3) ``uint8`` array or raise a :class:`RobustSDDError`
subclass whose message names the input: never another exception type.
"""

import io
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

from robustsdd._errors import RobustSDDError  # noqa: E402
from robustsdd.data import images as images_mod  # noqa: E402
from robustsdd.data.images import load_rgb  # noqa: E402

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _encode(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _seeds():
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))
    gray = rgb.convert("L")
    exif = rgb.getexif()
    exif[0x0112] = 6
    pal = rgb.convert("P")
    g16 = Image.frombytes("I;16", (10, 12), rng.integers(0, 65536, 120, dtype=np.uint16).tobytes())
    return [
        _encode(rgb, "PNG"),
        _encode(gray, "PNG"),
        _encode(rgb.convert("RGBA"), "PNG"),
        _encode(pal, "PNG", transparency=3),
        _encode(g16, "PNG"),
        _encode(rgb, "PNG", exif=exif),
        _encode(rgb, "JPEG"),
        _encode(gray, "JPEG"),
        _encode(rgb.convert("CMYK"), "JPEG"),
        _encode(rgb, "JPEG", exif=exif.tobytes(), progressive=True),
        _encode(rgb, "BMP"),
        _encode(pal, "BMP"),
        _encode(rgb, "GIF"),
        _encode(rgb, "TIFF"),
        _encode(g16, "TIFF"),
        _encode(rgb, "TIFF", compression="tiff_lzw"),
        _encode(rgb.convert("CMYK"), "TIFF"),
        _encode(gray.convert("F"), "TIFF"),
        _encode(rgb, "WEBP"),
    ]


SEEDS = _seeds()


@st.composite
def image_bytes(draw):
    kind = draw(st.sampled_from(["random", "truncate", "flip", "splice", "valid"]))
    if kind == "random":
        return draw(st.binary(max_size=512))
    data = bytearray(draw(st.sampled_from(SEEDS)))
    if kind == "truncate":
        return bytes(data[: draw(st.integers(0, len(data)))])
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            pos = draw(st.integers(0, len(data) - 1))
            data[pos] = draw(st.integers(0, 255))
        return bytes(data)
    if kind == "splice":
        pos = draw(st.integers(0, len(data)))
        end = draw(st.integers(pos, min(len(data), pos + 64)))
        return bytes(data[:pos]) + draw(st.binary(max_size=64)) + bytes(data[end:])
    return bytes(data)


@pytest.fixture(scope="module")
def fuzz_dir():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def _check(out):
    assert isinstance(out, np.ndarray), type(out)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3, (out.dtype, out.shape)
    assert out.shape[0] >= 1 and out.shape[1] >= 1


@FUZZ
@given(
    data=image_bytes(), suffix=st.sampled_from([".png", ".jpg", ".bmp", ".gif", ".tif", ".webp"])
)
def test_fuzz_file_bytes(fuzz_dir, data, suffix):
    path = fuzz_dir / f"fuzz{suffix}"
    path.write_bytes(data)
    # A small pixel limit keeps memory bounded when a mutation inflates a header.
    old = images_mod.MAX_PIXELS
    images_mod.MAX_PIXELS = 1_000_000
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about some damaged files; fine
            out = load_rgb(path)
    except RobustSDDError as exc:
        assert str(exc).startswith(str(path)), str(exc)
        return
    finally:
        images_mod.MAX_PIXELS = old
    _check(out)


def test_fuzz_seeds_all_decode(fuzz_dir):
    for i, data in enumerate(SEEDS):
        path = fuzz_dir / f"seed{i}.img"
        path.write_bytes(data)
        _check(load_rgb(path))


DTYPES = [
    "u1",
    "u2",
    ">u2",
    "<u2",
    "i1",
    "i2",
    "i4",
    "i8",
    "u4",
    "f2",
    "f4",
    ">f4",
    "f8",
    "b1",
    "c8",
    "U1",
    "O",
    "V2",
    "M8[s]",
]


@st.composite
def arrays(draw):
    ndim = draw(st.integers(0, 4))
    shape = tuple(draw(st.lists(st.integers(0, 5), min_size=ndim, max_size=ndim)))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    n = int(np.prod(shape)) if shape else 1
    if dtype.kind in "fc":
        values = draw(
            st.lists(
                st.one_of(
                    st.floats(allow_nan=True, allow_infinity=True, width=32),
                    st.floats(0, 1, width=32),
                ),
                min_size=n,
                max_size=n,
            )
        )
        with np.errstate(over="ignore", invalid="ignore"):  # float16 overflow -> inf: fine
            arr = np.array(values, dtype=np.float64).astype(dtype) if n else np.zeros(0, dtype)
    elif dtype.kind in "ui":
        info = np.iinfo(dtype)
        values = draw(st.lists(st.integers(int(info.min), int(info.max)), min_size=n, max_size=n))
        arr = np.array(values, dtype=dtype)
    elif dtype.kind == "b":
        arr = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    else:
        arr = np.zeros(n, dtype=dtype)
    arr = arr.reshape(shape)
    if draw(st.booleans()) and arr.ndim >= 2:
        arr = arr.swapaxes(0, 1)  # non-contiguous
    return arr


@FUZZ
@given(arr=arrays())
def test_fuzz_arrays(arr):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow/cast warnings from our conversions either
        try:
            out = load_rgb(arr, name="arr")
        except RobustSDDError as exc:
            assert str(exc).startswith("arr:"), str(exc)
            return
    _check(out)
    assert out.shape[:2] == arr.shape[:2]


def _should_decode(arr):
    """Arrays the loader documents as supported (then it must not refuse them)."""
    shape_ok = (
        (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 3, 4)))
        and arr.shape[0] > 0
        and arr.shape[1] > 0
    )
    if not shape_ok:
        return False
    if arr.dtype.kind == "u" and arr.dtype.itemsize <= 2 or arr.dtype.kind == "b":
        return True
    if arr.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            return bool(np.all(np.isfinite(arr)) and np.all((arr >= 0) & (arr <= 1)))
    return False


@FUZZ
@given(arr=arrays())
def test_fuzz_supported_arrays_decode(arr):
    if not _should_decode(arr):
        return
    out = load_rgb(arr, name="arr")
    _check(out)
    gray = arr if arr.ndim == 2 else arr[:, :, 0]
    if gray.dtype.kind == "u" and gray.dtype.itemsize == 1:
        np.testing.assert_array_equal(out[:, :, 0], gray)


@FUZZ
@given(
    mode=st.sampled_from(
        [
            "1",
            "L",
            "LA",
            "P",
            "PA",
            "RGB",
            "RGBA",
            "RGBX",
            "RGBa",
            "La",
            "CMYK",
            "YCbCr",
            "LAB",
            "HSV",
            "I",
            "I;16",
            "I;16B",
            "I;16L",
            "F",
        ]
    ),
    w=st.integers(1, 6),
    h=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_fuzz_pil_modes(mode, w, h, seed):
    rng = np.random.default_rng(seed)
    img = Image.new(mode, (w, h))
    raw = rng.integers(0, 256, len(img.tobytes()), dtype=np.uint8).tobytes()
    img.frombytes(raw)
    try:
        out = images_mod._pil_to_rgb(img, "img")
    except RobustSDDError as exc:
        assert str(exc).startswith("img:"), str(exc)
        return
    _check(out)
    assert out.shape[:2] == (h, w)
