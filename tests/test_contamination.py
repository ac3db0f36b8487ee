"""The paper's split protocol and Table 1's removal counts."""

import numpy as np
import pytest

from robustsdd._errors import ConfigError, DataError
from robustsdd.data import DEFECTIVE, GOOD, UNKNOWN, ImageSet, paper_split, removal_counts
from robustsdd.data.contamination import n_defective_for

LEVELS = [round(0.1 * k, 1) for k in range(11)]


def _pool(n_good=250, n_bad=220, n_unknown=20, prefix=""):
    labels = [GOOD] * n_good + [DEFECTIVE] * n_bad + [UNKNOWN] * n_unknown
    names = [
        f"{prefix}{'gdu'[['0', '1', '-1'].index(str(lab))]}{i}" for i, lab in enumerate(labels)
    ]
    img = np.zeros((2, 2), np.uint8)
    return ImageSet(items=[img] * len(labels), labels=labels, names=names, source=f"toy{prefix}")


@pytest.fixture(scope="module")
def pool():
    return _pool()


@pytest.mark.parametrize("level", LEVELS)
def test_sizes_and_exact_contamination(pool, level):
    train, test = paper_split(pool, contamination=level, random_state=3)
    assert len(train) == 100 and train.n_defective == round(100 * level)
    assert train.n_good + train.n_defective == 100
    assert (test.n_good, test.n_defective) == (100, 100) and len(test) == 200
    names_train, names_test = set(train.names), set(test.names)
    assert len(names_train) == 100 and len(names_test) == 200
    assert not names_train & names_test
    assert UNKNOWN not in train.labels and UNKNOWN not in test.labels
    # labels still belong to their images
    lookup = dict(zip(pool.names, pool.labels))
    assert all(
        lookup[n] == lab
        for n, lab in zip(train.names + test.names, np.concatenate([train.labels, test.labels]))
    )
    assert train.meta["contamination"] == level and train.meta["split"] == "train"
    assert test.meta["split"] == "test" and train.meta["n_train_defective"] == train.n_defective


def test_zero_and_full_contamination(pool):
    clean, _ = paper_split(pool, contamination=0.0)
    assert clean.n_defective == 0 and clean.n_good == 100
    full, _ = paper_split(pool, contamination=1.0)
    assert full.n_defective == 100 and full.n_good == 0


def test_same_seed_same_split(pool):
    a = paper_split(pool, contamination=0.3, random_state=7)
    b = paper_split(pool, contamination=0.3, random_state=7)
    assert a[0].names == b[0].names and a[1].names == b[1].names
    g = paper_split(pool, contamination=0.3, random_state=np.random.default_rng(7))
    assert g[0].names == a[0].names


def test_different_seeds_differ(pool):
    a_train, a_test = paper_split(pool, random_state=0)
    b_train, b_test = paper_split(pool, random_state=1)
    assert set(a_train.names) != set(b_train.names)
    assert set(a_test.names) != set(b_test.names)


def test_test_set_independent_of_contamination(pool):
    tests = [paper_split(pool, contamination=lv, random_state=11)[1].names for lv in LEVELS]
    assert all(t == tests[0] for t in tests)


def test_training_sets_nested_across_levels(pool):
    train = {lv: paper_split(pool, contamination=lv, random_state=5)[0] for lv in (0.0, 0.2, 0.5)}
    good = {lv: {n for n, lab in zip(t.names, t.labels) if lab == GOOD} for lv, t in train.items()}
    bad = {
        lv: {n for n, lab in zip(t.names, t.labels) if lab == DEFECTIVE} for lv, t in train.items()
    }
    assert good[0.5] <= good[0.2] <= good[0.0]
    assert bad[0.0] <= bad[0.2] <= bad[0.5]


def test_training_order_shuffled(pool):
    for seed in range(3):
        train, _ = paper_split(pool, contamination=0.5, random_state=seed)
        assert not np.array_equal(train.labels, np.sort(train.labels))


def test_test_pool(pool):
    test_pool = _pool(120, 110, 5, prefix="t")
    train, test = paper_split(pool, contamination=0.4, test_pool=test_pool, random_state=2)
    assert train.n_defective == 40 and all(not n.startswith("t") for n in train.names)
    assert all(n.startswith("t") for n in test.names) and test.source == "toyt"
    assert (test.n_good, test.n_defective) == (100, 100)
    other = paper_split(pool, contamination=0.9, test_pool=test_pool, random_state=2)[1]
    assert other.names == test.names
    # with a separate test pool the training set may use the whole pool
    big, _ = paper_split(_pool(60, 140, 0), n_train=200, contamination=0.7, test_pool=test_pool)
    assert (big.n_good, big.n_defective) == (60, 140)


def test_pool_too_small(pool):
    small = _pool(150, 120, 0)
    with pytest.raises(
        DataError, match=r"needs 200 good and 100 defective images, has 150 good and 120"
    ) as e:
        paper_split(small, contamination=0.0)
    assert "toy" in str(e.value)
    with pytest.raises(DataError, match="needs 100 good and 200 defective"):
        paper_split(small, contamination=1.0)
    paper_split(small, contamination=0.2, n_test_good=50)  # fits: 50+80 good, 100+20 defective
    with pytest.raises(DataError, match="test pool"):
        paper_split(pool, test_pool=_pool(99, 200, 0))
    with pytest.raises(DataError, match="needs 20 good"):
        paper_split(_pool(10, 500, 0), contamination=0.8, test_pool=pool, n_train=100)


def test_unknown_only_pool_fails():
    with pytest.raises(DataError, match="has 0 good and 0 defective"):
        paper_split(_pool(0, 0, 300), n_train=5, n_test_good=0, n_test_defective=0)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(contamination=-0.1),
        dict(contamination=1.01),
        dict(contamination=float("nan")),
        dict(contamination="0.2"),
        dict(n_train=0),
        dict(n_train=10.0),
        dict(n_train=True),
        dict(n_test_good=-1),
        dict(n_test_defective=2.5),
    ],
)
def test_bad_config(pool, kwargs):
    with pytest.raises(ConfigError):
        paper_split(pool, **kwargs)


def test_no_test_set_allowed(pool):
    train, test = paper_split(pool, n_test_good=0, n_test_defective=0, contamination=0.1)
    assert len(train) == 100 and len(test) == 0


def test_rounding():
    assert n_defective_for(100, 0.29) == 29
    assert n_defective_for(100, 0.1 * 3) == 30
    assert n_defective_for(10, 0.25) == 3  # halves round up
    assert n_defective_for(10, 0.35) == 4
    assert n_defective_for(7, 1.0) == 7 and n_defective_for(7, 0.0) == 0


def test_removal_counts():
    labels = np.array([GOOD, GOOD, GOOD, DEFECTIVE, DEFECTIVE, UNKNOWN])
    keep = np.array([True, False, True, False, True, False])
    assert removal_counts(labels, keep) == {
        "removed_good": 1,
        "removed_defective": 1,
        "kept_good": 2,
        "kept_defective": 1,
    }
    assert removal_counts([0, 1], [True, True]) == {
        "removed_good": 0,
        "removed_defective": 0,
        "kept_good": 1,
        "kept_defective": 1,
    }
    with pytest.raises(ConfigError, match="equal length"):
        removal_counts(labels, keep[:-1])
    with pytest.raises(ConfigError, match="boolean"):
        removal_counts(labels, keep.astype(int))
