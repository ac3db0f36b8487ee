"""The interface every registered detector keeps, checked on each of them, small and fast.

A new detector registered in the library must be added to ``CASES`` (how to build it
small, and which input layout it reads) and to ``INT_PARAMS`` (its integer parameters):
``test_every_registered_detector_is_covered`` fails until it is.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone

from robustsdd import (
    ConfigError,
    ModelFileError,
    create_detector,
    detector_names,
    differnet_cpu,
    load_detector,
)
from robustsdd._validation import check_float_range, check_positive_int
from robustsdd.detectors import (
    GaussianDetector,
    KNNDetector,
    register_detector,
    registered_detector,
    unregister_detector,
)

TESTS = Path(__file__).resolve().parent

# How to build each registered detector small, and the layout of its input: "views" is
# pooled features (n_images, n_views, n_features); "patches" is PatchCore's
# (n_images, n_patches, n_channels) on a 4x4 patch grid.
CASES = {
    "gaussian": (lambda: create_detector("gaussian"), "views"),
    "knn": (lambda: create_detector("knn", k=3), "views"),
    "patchcore": (
        lambda: create_detector("patchcore", coreset="greedy", coreset_ratio=0.25, grid=(4, 4)),
        "patches",
    ),
    "differnet": (lambda: differnet_cpu(epochs=2, n_blocks=2, hidden=32), "views"),
    "ensemble": (
        lambda: create_detector(
            "ensemble",
            patch_channels=4,
            member_params={"knn": {"k": 2}, "patchcore": {"coreset_ratio": 0.25, "grid": [4, 4]}},
        ),
        "patches",
    ),
}
NAMES = sorted(CASES)

# Every integer parameter of each detector and its smallest valid value.
INT_PARAMS = {
    "gaussian": {},
    "knn": {"k": 1},
    "patchcore": {
        "max_bank": 1,
        "max_candidates": 1,
        "projection_dim": 1,
        "k": 1,
        "denoise_k": 1,
        "random_state": 0,
    },
    "ensemble": {"patch_channels": 1, "n_folds": 2, "random_state": 0},
    "differnet": {
        "n_blocks": 1,
        "hidden": 1,
        "n_hidden_layers": 1,
        "epochs": 0,
        "finetune_epochs": 0,
        "batch_size": 1,
        "random_state": 0,
    },
}
# Bad values of number (non-integer) parameters.
FLOAT_PROBES = {
    "gaussian": [
        ("shrinkage", True),
        ("shrinkage", 1.5),
        ("shrinkage", "0.5"),
        ("shrinkage", float("nan")),
    ],
    "knn": [],
    "ensemble": [],
    "patchcore": [
        ("coreset_ratio", 0),
        ("coreset_ratio", True),
        ("coreset_ratio", "0.1"),
        ("denoise_fraction", 1.0),
        ("denoise_fraction", None),
    ],
    "differnet": [
        ("lr", 0),
        ("lr", True),
        ("clamp", "3"),
        ("eps", float("nan")),
        ("noise_std", -0.1),
        ("weight_decay", -1e-5),
        ("betas", (0.8,)),
        ("betas", (0.8, 1.0)),
        ("betas", True),
    ],
}


def build(name):
    return CASES[name][0]()


def data(name):
    """(training features, 4 training-like images, the same 4 images shifted far away)."""
    rng = np.random.default_rng(0)
    shape = (20, 16, 6) if CASES[name][1] == "patches" else (30, 2, 8)
    X = rng.normal(size=shape).astype(np.float32)
    near = X[:4] + np.float32(0.01) * rng.normal(size=X[:4].shape).astype(np.float32)
    far = X[:4] + np.float32(8.0)
    return X, near, far


@pytest.fixture(scope="module")
def fitted():
    """fitted(name) -> that detector fitted on data(name)[0], once per module. Not to modify."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = build(name).fit(data(name)[0])
        return cache[name]

    return get


def _plain(params):
    # A model file stores tuples as JSON lists.
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}


# -- the registry ------------------------------------------------------------------------------
def test_every_registered_detector_is_covered():
    public = {name for name in detector_names() if not name.startswith("_")}
    assert set(CASES) == public, "add the new detector to CASES and INT_PARAMS"
    assert set(INT_PARAMS) == set(FLOAT_PROBES) == public


def test_no_test_only_detector_is_left_registered():
    # Test-only detectors ("_..._for_tests") are registered per test, never for the session.
    assert detector_names() == NAMES


@pytest.mark.slow
def test_a_fresh_session_that_imports_the_test_modules_registers_nothing():
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import test_osr, test_report; "
        "from robustsdd import detector_names; print(json.dumps(detector_names()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(TESTS)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == NAMES


class _Temporary(GaussianDetector):
    pass


def test_registered_detector_registers_for_the_block_only():
    with registered_detector("_temporary_for_tests", _Temporary) as cls:
        assert cls is _Temporary and "_temporary_for_tests" in detector_names()
        assert type(create_detector("_temporary_for_tests")) is _Temporary
    assert "_temporary_for_tests" not in detector_names()
    with pytest.raises(ConfigError, match="unknown detector"):
        create_detector("_temporary_for_tests")
    with pytest.raises(KeyError):  # restored on an exception too
        with registered_detector("_temporary_for_tests", _Temporary):
            raise KeyError("boom")
    assert detector_names() == NAMES


def test_registered_detector_restores_what_was_there():
    # An alias of a registered class: the original name and registry_name survive.
    with registered_detector("_knn_alias_for_tests", KNNDetector):
        assert create_detector("_knn_alias_for_tests").registry_name == "_knn_alias_for_tests"
    assert KNNDetector.registry_name == "knn" and detector_names() == NAMES
    # The same class under its own name: still registered afterwards.
    with registered_detector("knn", KNNDetector):
        pass
    assert type(create_detector("knn")) is KNNDetector and KNNDetector.registry_name == "knn"
    # A name that names another class is refused and left alone.
    with pytest.raises(ValueError, match="already registered"):
        with registered_detector("knn", _Temporary):
            pass
    assert type(create_detector("knn")) is KNNDetector


def test_unregister_detector():
    with pytest.raises(ConfigError, match="not registered"):
        unregister_detector("_nothing_for_tests")
    with registered_detector("_temporary_for_tests", _Temporary):
        assert unregister_detector("_temporary_for_tests") is _Temporary
        assert "_temporary_for_tests" not in detector_names()
    assert detector_names() == NAMES
    register_detector("_temporary_for_tests")(_Temporary)
    try:
        assert "_temporary_for_tests" in detector_names()
    finally:
        unregister_detector("_temporary_for_tests")
    assert detector_names() == NAMES


# -- the interface, on every detector ------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_fit_returns_self_and_scores_are_finite_per_image(name, fitted):
    X, near, far = data(name)
    det = build(name)
    assert det.fit(X) is det and det.is_fitted_
    T = np.concatenate([near, far])
    scores = det.decision_function(T)
    assert isinstance(scores, np.ndarray) and scores.shape == (8,)
    assert np.issubdtype(scores.dtype, np.floating) and np.all(np.isfinite(scores))
    np.testing.assert_array_equal(det.score_samples(T), -scores)
    # An image's score depends on that image only, not on the batch it came in.
    alone = np.array([det.decision_function(T[i : i + 1])[0] for i in (0, 5)])
    # The ensemble divides its members' log scores (float32 distances, rounded a little
    # differently per batch) by their spread, which is small on these tiny sets.
    np.testing.assert_allclose(alone, scores[[0, 5]], rtol=1e-4 if name == "ensemble" else 1e-5)
    # Fitting is deterministic: the module's fitted copy scores the same.
    np.testing.assert_allclose(fitted(name).decision_function(T), scores, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_images_far_from_the_training_data_score_higher(name, fitted):
    _, near, far = data(name)
    det = fitted(name)
    assert det.decision_function(far).min() > det.decision_function(near).max()


@pytest.mark.parametrize("name", NAMES)
def test_partial_fit_returns_self(name):
    X, near, far = data(name)
    det = build(name).fit(X)
    assert det.partial_fit(X[::-1]) is det
    scores = det.decision_function(np.concatenate([near, far]))
    assert scores.shape == (8,) and np.all(np.isfinite(scores))


@pytest.mark.parametrize("name", NAMES)
def test_clone_is_an_unfitted_copy_with_equal_params(name, fitted):
    X, near, far = data(name)
    det = fitted(name)
    copy = clone(det)
    assert type(copy) is type(det) and copy is not det
    assert copy.get_params() == det.get_params()
    assert not getattr(copy, "is_fitted_", False)
    assert not [a for a in vars(copy) if a.endswith("_") and not a.startswith("_")]
    with pytest.raises(RuntimeError, match="not fitted"):
        copy.decision_function(near)
    T = np.concatenate([near, far])
    np.testing.assert_allclose(
        copy.fit(X).decision_function(T), det.decision_function(T), rtol=1e-5
    )


@pytest.mark.parametrize("name", NAMES)
def test_save_and_load_give_identical_scores(name, fitted, tmp_path):
    _, near, far = data(name)
    det = fitted(name)
    T = np.concatenate([near, far])
    det.save(tmp_path / "m")
    again = load_detector(tmp_path / "m")
    assert type(again) is type(det) and again.registry_name == name
    assert _plain(again.get_params()) == _plain(det.get_params())
    np.testing.assert_array_equal(again.decision_function(T), det.decision_function(T))
    np.testing.assert_array_equal(
        type(det).load(tmp_path / "m").decision_function(T), det.decision_function(T)
    )
    other = GaussianDetector if name != "gaussian" else KNNDetector
    with pytest.raises(ModelFileError, match=f"not a {other.__name__}"):
        other.load(tmp_path / "m")


@pytest.mark.parametrize("name", NAMES)
def test_scoring_or_saving_before_fit_raises_not_fitted(name, tmp_path):
    _, near, _ = data(name)
    det = build(name)
    with pytest.raises(RuntimeError, match=f"{type(det).__name__} is not fitted"):
        det.decision_function(near)
    with pytest.raises(RuntimeError, match="not fitted"):
        det.save(tmp_path / "m")
    assert not (tmp_path / "m").exists()


# -- parameter checks ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_the_int_parameter_table_lists_every_int_parameter(name):
    params = build(name).get_params()
    ints = {
        k
        for k, v in type(build(name))().get_params().items()
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool)
    }
    assert ints <= set(INT_PARAMS[name]) <= set(params)


INT_CASES = [
    (name, param, minimum, bad)
    for name in NAMES
    for param, minimum in INT_PARAMS[name].items()
    for bad in (True, minimum - 1, minimum + 0.5, float(minimum + 1), str(minimum + 1))
]


@pytest.mark.parametrize(
    "name, param, minimum, bad", INT_CASES, ids=[f"{n}-{p}={b!r}" for n, p, _, b in INT_CASES]
)
def test_bad_integer_parameters_are_refused(name, param, minimum, bad):
    X = data(name)[0]
    det = build(name).set_params(**{param: bad})
    with pytest.raises(
        ConfigError,
        match=rf"^{param} must be (a positive integer|an integer >= "
        rf"{minimum}), got {bad!r}$",
    ):
        det.fit(X)


@pytest.mark.parametrize("name", [n for n in NAMES if INT_PARAMS[n]])
def test_numpy_integers_are_accepted(name, fitted):
    X, near, far = data(name)
    values = {
        p: v for p, v in build(name).get_params().items() if p in INT_PARAMS[name] and v is not None
    }
    det = build(name).set_params(**{p: np.int64(v) for p, v in values.items()}).fit(X)
    T = np.concatenate([near, far])
    np.testing.assert_allclose(
        det.decision_function(T), fitted(name).decision_function(T), rtol=1e-5
    )


FLOAT_CASES = [(name, param, bad) for name in NAMES for param, bad in FLOAT_PROBES[name]]


@pytest.mark.parametrize(
    "name, param, bad", FLOAT_CASES, ids=[f"{n}-{p}={b!r}" for n, p, b in FLOAT_CASES]
)
def test_bad_number_parameters_are_refused(name, param, bad):
    det = build(name).set_params(**{param: bad})
    with pytest.raises(ConfigError, match=rf"^{param} must be .*got "):
        det.fit(data(name)[0])


# -- the helpers themselves -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "value", [True, False, np.bool_(True), 2.0, np.float32(3), "3", None, 0, -1, [1]]
)
def test_check_positive_int_refuses(value):
    with pytest.raises(ConfigError, match=r"^k must be a positive integer, got "):
        check_positive_int(value, "k")


def test_check_positive_int_accepts_and_returns_int():
    for value, minimum in [(1, 1), (np.int64(7), 1), (np.uint8(0), 0), (5, 5)]:
        out = check_positive_int(value, "n", minimum=minimum)
        assert out == value and type(out) is int
    with pytest.raises(ConfigError, match=r"^epochs must be an integer >= 0, got -1$"):
        check_positive_int(-1, "epochs", minimum=0)
    with pytest.raises(ConfigError, match=r"^n must be an integer >= 5, got 4$"):
        check_positive_int(4, "n", minimum=5)


def test_check_float_range():
    assert check_float_range(np.float32(0.5), "x", low=0, high=1) == 0.5
    assert type(check_float_range(1, "x", low=0, high=1)) is float
    assert check_float_range(0, "x", low=0) == 0.0
    assert check_float_range(-3.5, "x") == -3.5
    for value, kw, message in [
        (0, dict(low=0, low_inclusive=False), "x must be > 0, got 0"),
        (1, dict(low=0, high=1, high_inclusive=False), r"x must be in \[0, 1\), got 1"),
        (2.5, dict(low=0, high=1), r"x must be in \[0, 1\], got 2.5"),
        (2, dict(high=1), "x must be <= 1, got 2"),
        (True, {}, "x must be a number, got True"),
        ("1", {}, "x must be a number, got '1'"),
        (None, dict(low=0), "x must be >= 0, got None"),
        (float("nan"), dict(low=0), "x must be >= 0, got nan"),
        (complex(1, 0), {}, r"x must be a number, got \(1\+0j\)"),
    ]:
        with pytest.raises(ConfigError, match=f"^{message}$"):
            check_float_range(value, "x", **kw)


@pytest.mark.parametrize("grid", [(4,), (4, 0), (4, True), (4, 4.0), "44", 4, (2, 2, 4)])
def test_patchcore_grid_must_be_two_positive_integers(grid):
    det = build("patchcore").set_params(grid=grid)
    with pytest.raises(ConfigError, match=r"^grid"):
        det.fit(data("patchcore")[0])
