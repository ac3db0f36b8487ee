"""Executors: local processes and Ray give the same features and sweep rows as one process;
the driver alone writes the cache; a worker killed mid-task is replaced and nothing is lost.

Worker processes are the cost here (each imports torch): the tests share one local Ray
instance and a warm feature cache, so each spawns as few as it can.
"""

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from robustsdd import ConfigError, Featurizer, GaussianDetector, ViewSpec
from robustsdd._hashing import image_digest
from robustsdd.data import ImageSet
from robustsdd.executors import LocalExecutor, WorkerLostError, make_executor, start_ray
from robustsdd.experiments.sweep import cell_path, run_sweep

# Not imported here: start_ray imports it, after choosing a loopback-only instance.
HAVE_RAY = importlib.util.find_spec("ray") is not None

VIEWS = ViewSpec(size=32, scales=(1.0,), rotations=(0, 180), flips=False)
GRID = dict(
    levels=(0.0, 0.5),
    strategies=("none", "osr_1.5"),
    seeds=(0, 1),
    n_train=12,
    n_test_good=4,
    n_test_defective=4,
)


def _image(rng, defective):
    img = rng.normal(128, 12, size=(36, 36)).clip(0, 255)
    if defective:
        img[6:30, 16:20] = 255
    return img.astype(np.uint8)


@pytest.fixture(scope="module")
def pool():
    rng = np.random.default_rng(3)
    labels = [0] * 20 + [1] * 10
    return ImageSet(
        [_image(rng, y) for y in labels],
        labels,
        [f"im{i:02d}" for i in range(len(labels))],
        source="fixture",
    )


def featurizer(cache_dir=False, **kw):
    return Featurizer(weights=None, views=VIEWS, cache_dir=cache_dir, progress=False, **kw)


def comparable(rows):
    return [
        {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in r.items()
            if k != "fit_seconds"
        }
        for r in rows
    ]


@pytest.fixture(scope="module")
def serial_features(pool):
    return featurizer().transform(pool)


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("warm-cache")


@pytest.fixture(scope="module")
def local_rows(pool, warm_cache, tmp_path_factory):
    """The reference: the sweep in this process (and a warm cache for the later sweeps)."""
    return run_sweep(
        pool,
        featurizer=featurizer(warm_cache),
        detector=GaussianDetector(),
        out_dir=tmp_path_factory.mktemp("local"),
        progress=False,
        **GRID,
    )


class KillOnceGaussian(GaussianDetector):
    """A Gaussian detector whose first fit anywhere kills the process that runs it."""

    def __init__(self, shrinkage="ledoit_wolf", marker=""):
        super().__init__(shrinkage=shrinkage)
        self.marker = marker

    def fit(self, X, y=None):
        if self.marker and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)  # the worker dies mid-group
        return super().fit(X, y)


def assert_every_cell_once(out):
    cells = sorted((out / "cells").glob("*.json"))
    assert len(cells) == len(GRID["levels"]) * len(GRID["seeds"])
    for level in GRID["levels"]:
        for seed in GRID["seeds"]:
            data = json.loads(cell_path(out, level, seed).read_text())
            assert sorted(r["strategy"] for r in data["rows"]) == sorted(GRID["strategies"])
    assert not list((out / "cells").glob(".*.tmp"))


# -- configuration ------------------------------------------------------------------------------
@pytest.mark.slow
def test_executor_choice_is_checked_without_importing_ray(monkeypatch):
    with pytest.raises(ConfigError, match="unknown executor"):
        make_executor("dask")
    with pytest.raises(ConfigError, match="jobs"):
        make_executor("local", jobs=0)
    with pytest.raises(ConfigError, match="address"):
        make_executor("local", address="10.0.0.1:6379")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"robustsdd\[ray\]"):
        make_executor("ray")
    monkeypatch.undo()
    # Importing robustsdd (its sweep and executors too) does not import ray.
    code = (
        "import sys, robustsdd, robustsdd.executors, robustsdd.experiments.sweep, "
        "robustsdd.cli, robustsdd.features.parallel; print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_sweep_verb_has_executor_flags(tmp_path):
    import argparse

    from robustsdd.cli.sweep import add_sweep_parser, cmd_sweep

    parser = argparse.ArgumentParser(prog="robustsdd")
    sub = parser.add_subparsers(dest="verb", required=True)
    add_sweep_parser(sub)
    args = parser.parse_args(
        ["sweep", "--executor", "ray", "--address", "auto", "--jobs", "3", "--out", str(tmp_path)]
    )
    assert (args.executor, args.address, args.jobs) == ("ray", "auto", 3)
    with pytest.raises(SystemExit):
        parser.parse_args(["sweep", "--executor", "dask"])
    # An address without Ray is refused before any data is read.
    args = parser.parse_args(
        [
            "sweep",
            "--address",
            "auto",
            "--source",
            "folder",
            "--root",
            str(tmp_path / "missing"),
            "--out",
            str(tmp_path),
        ]
    )
    with pytest.raises(ConfigError, match="address"):
        cmd_sweep(args)


# -- local processes ----------------------------------------------------------------------------
@pytest.mark.slow
def test_local_parallel_extraction_equals_serial_and_the_driver_owns_the_cache(
    pool, serial_features, tmp_path
):
    # The 30 images and a repeat of image 0 (computed once, cached once).
    images = ImageSet(
        list(pool.items) + [pool.items[0]],
        list(pool.labels) + [0],
        list(pool.names) + ["copy-of-im00"],
    )
    fz = featurizer(tmp_path)
    with make_executor("local", jobs=2) as ex:
        got = fz.transform(images, executor=ex)
    np.testing.assert_array_equal(got[:-1], serial_features)  # bit for bit
    np.testing.assert_array_equal(got[-1], serial_features[0])
    assert fz.n_computed == len(pool)
    # One valid entry per distinct image and nothing else in the cache folder.
    digests = {image_digest(pool.rgb(i)) for i in range(len(pool))}
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        f"{d}.feat" for d in digests
    )
    check = featurizer(tmp_path)
    for i in range(len(pool)):
        np.testing.assert_array_equal(
            check.cache.get(image_digest(pool.rgb(i)), check.config_key), serial_features[i]
        )
    assert check.cache.corrupt == 0
    # A second run reads every image from the cache and starts no worker.
    with make_executor("local", jobs=2) as ex:
        np.testing.assert_array_equal(check.transform(images, executor=ex), got)
    assert check.n_computed == 0 and check.cache.hits == len(pool) + len(images)


def _always_die(item, shared):
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.slow
def test_killed_local_worker_is_replaced_and_nothing_is_lost(
    pool, local_rows, warm_cache, tmp_path
):
    marker, out = tmp_path / "killed", tmp_path / "out"
    rows = run_sweep(
        pool,
        featurizer=featurizer(warm_cache),
        detector=KillOnceGaussian(marker=str(marker)),
        out_dir=out,
        jobs=2,
        progress=False,
        **GRID,
    )
    assert marker.exists()  # a worker process was killed during the run
    assert comparable(rows) == comparable(local_rows)
    assert rows.stats["computed"] == 4
    assert_every_cell_once(out)
    # Retries are bounded: a task that always kills its worker fails the run.
    with pytest.raises(WorkerLostError, match="died"):
        list(LocalExecutor(jobs=2, max_retries=0).map_unordered(_always_die, [1, 2]))


# -- Ray ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray(tmp_path_factory):
    """One local Ray instance (2 CPUs) for the module, started as the executor starts it."""
    if not HAVE_RAY:
        pytest.skip("ray cannot be imported (pip install 'robustsdd[ray]')")
    started = start_ray(jobs=2)
    import ray

    # Classes and functions of this test module travel to Ray workers by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    if started:
        ray.shutdown()


@pytest.mark.slow
def test_ray_sweep_equals_local_and_resumes(pool, local_rows, ray, tmp_path):
    assert ray.cluster_resources()["CPU"] == 2
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")  # loopback only
    fz = featurizer(tmp_path / "cache")  # a cold cache: features are computed on Ray too
    out = tmp_path / "ray"
    rows = run_sweep(
        pool,
        featurizer=fz,
        detector=GaussianDetector(),
        out_dir=out,
        executor="ray",
        jobs=2,
        progress=False,
        **GRID,
    )
    assert rows.stats["executor"] == "ray" and rows.stats["computed"] == 4
    assert fz.n_computed == rows.stats["features_computed"]
    assert fz.n_computed == local_rows.stats["features_computed"]
    assert comparable(rows) == comparable(local_rows)
    assert rows.config["config_hash"] == local_rows.config["config_hash"]
    assert_every_cell_once(out)
    # Resume under either executor: nothing is recomputed.
    for executor in ("ray", "local"):
        again = run_sweep(
            pool,
            featurizer=featurizer(tmp_path / "cache"),
            detector=GaussianDetector(),
            out_dir=out,
            executor=executor,
            progress=False,
            **GRID,
        )
        assert again.stats["computed"] == 0 and again.stats["features_computed"] == 0
        assert comparable(again) == comparable(local_rows)


@pytest.mark.slow
def test_killed_ray_worker_is_retried_and_nothing_is_lost(
    pool, local_rows, warm_cache, ray, tmp_path
):
    marker, out = tmp_path / "killed", tmp_path / "out"
    rows = run_sweep(
        pool,
        featurizer=featurizer(warm_cache),
        detector=KillOnceGaussian(marker=str(marker)),
        out_dir=out,
        executor="ray",
        jobs=2,
        progress=False,
        **GRID,
    )
    assert marker.exists()  # a Ray worker was killed during the run
    assert comparable(rows) == comparable(local_rows)
    assert rows.stats["computed"] == 4
    assert_every_cell_once(out)


def _divide(item, shared):
    return shared / item


@pytest.mark.slow
def test_ray_extraction_equals_serial(pool, serial_features, ray, tmp_path):
    import torch

    fz = featurizer(tmp_path)
    with make_executor("ray", jobs=2) as ex:
        np.testing.assert_array_equal(fz.transform(pool, executor=ex), serial_features)
        # PyTorch's kernels sum in a thread-count-dependent order; workers use one thread,
        # so the torch engine's features equal a one-thread serial run bit for bit.
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            serial_torch = featurizer(engine="torch").transform(pool.subset(range(6)))
        finally:
            torch.set_num_threads(before)
        got = featurizer(engine="torch").transform(pool.subset(range(6)), executor=ex)
        np.testing.assert_array_equal(got, serial_torch)
        # An exception raised by a task reaches the caller as itself (not retried).
        with pytest.raises(ZeroDivisionError):
            list(ex.map_unordered(_divide, [1, 0, 2], shared=1))
    assert ray.is_initialized()  # the module's instance was used, not shut down
    assert len(list(tmp_path.rglob("*.feat"))) == len(pool)
