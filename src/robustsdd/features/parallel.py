"""Feature extraction on an executor: workers compute features, the driver caches them.

:meth:`Featurizer.transform(images, executor=...) <robustsdd.features.Featurizer.transform>`
with a parallel executor (:mod:`robustsdd.executors`) lands here. The driver (this
process) decodes each image, looks its digest up in the feature cache, and sends the
misses in chunks of decoded images to the workers; each worker builds the same
featurizer once (same backbone, weights, views and the engine the driver resolved,
no cache) and *returns* the feature arrays of its chunk. Only the driver writes
cache entries, one per distinct image, so no two workers ever write the same entry
and the cache is the same as after a serial run. An image that appears twice in one
call is computed once.

Features are the same whichever executor computes them: each image is one backbone
pass (``batch_size=1``), and a worker runs the engine with one thread. ONNX Runtime,
the default engine, gives bit-identical features for any thread count (checked for
1, 2, 3 and 8 threads on real ELPV images), so parallel extraction equals serial
extraction bit for bit. PyTorch's CPU kernels do not: with ``engine="torch"`` the
features computed by 1-thread workers equal those of a serial run with
``torch.set_num_threads(1)`` bit for bit, and differ from a serial run with more
threads by float rounding (~2e-5 absolute on EfficientNet-Lite0 features; the cache
key does not include the thread count, as before).
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from .._hashing import image_digest
from .extract import Shrinkage

if TYPE_CHECKING:
    from ..data import ImageSet
    from ..executors import Executor
    from .extract import Featurizer

__all__ = ["transform_parallel", "featurizer_spec", "DEFAULT_CHUNK"]

#: Most images per task: large enough that a task's overhead (a few ms under Ray)
#: is small against its backbone passes (~0.1-0.3 s per image with the default views).
DEFAULT_CHUNK = 16


def featurizer_spec(featurizer: Featurizer) -> tuple[type[Featurizer], dict[str, Any]]:
    """(class, keyword arguments) that rebuild ``featurizer`` in a worker: the same
    settings and resolved engine, no cache, no progress bar."""
    kwargs = {f.name: getattr(featurizer, f.name) for f in dataclasses.fields(featurizer) if f.init}
    kwargs.update(cache_dir=False, progress=False, engine=featurizer.engine_name)
    return type(featurizer), kwargs


# A worker process keeps the featurizers it built (building one exports the backbone
# to ONNX, about a second), keyed by their spec.
_WORKER_FEATURIZERS: dict = {}


def _extract_chunk(chunk, spec) -> list:
    """Worker task: the features of each image of a chunk of (digest, rgb), as a list."""
    cls, kwargs = spec
    key = (cls.__module__, cls.__qualname__, repr(sorted(kwargs.items())))
    featurizer = _WORKER_FEATURIZERS.get(key)
    if featurizer is None:
        featurizer = _WORKER_FEATURIZERS[key] = cls(**kwargs)
    rgbs = [rgb for _, rgb in chunk]
    size = int(featurizer.batch_size)
    return [f for s in range(0, len(rgbs), size) for f in featurizer._compute(rgbs[s : s + size])]


def transform_parallel(
    featurizer: Featurizer, images: ImageSet, executor: Executor, chunk_size: int | None = None
) -> np.ndarray:
    """What ``featurizer.transform(images, executor=executor)`` returns, computed there.

    Parameters
    ----------
    featurizer : Featurizer
        Its cache (if any) is read and written here, in the driver only;
        ``n_computed`` counts the images computed by workers.
    images : ImageSet
    executor : robustsdd.executors.Executor
    chunk_size : int or None
        Images per task; None: up to :data:`DEFAULT_CHUNK`, fewer for small sets so
        every worker gets several tasks.
    """
    n = len(images)
    out: list = [None] * n
    key = featurizer.config_key  # resolves the engine here, so workers use the same one
    cache = featurizer.cache
    if chunk_size is None:
        chunk_size = max(1, min(DEFAULT_CHUNK, math.ceil(n / (4 * executor.parallelism))))
    rows: dict = {}  # digest of a miss -> rows of `out` that show that image
    finished = set()  # digests whose features are in `out`
    bar = tqdm(total=n, desc="features", unit="img", disable=not featurizer.progress, leave=False)
    shrunk = Shrinkage(featurizer.views)

    def chunks():
        # Lazy: under Ray, images are decoded as workers free up, not all held at once.
        chunk = []
        for i in range(n):
            rgb = images.rgb(i)
            shrunk.add(rgb.shape)
            digest = image_digest(rgb)
            if digest in rows:  # the same pixels again in this call
                if digest in finished:
                    out[i] = out[rows[digest][0]]
                    bar.update(1)
                else:
                    rows[digest].append(i)
                continue
            cached = cache.get(digest, key) if cache is not None else None
            if cached is not None and cached.shape == featurizer.image_feature_shape(rgb.shape):
                out[i] = cached
                bar.update(1)
                continue
            rows[digest] = [i]
            chunk.append((digest, rgb))
            if len(chunk) == chunk_size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    try:
        spec = featurizer_spec(featurizer)
        for chunk, feats in executor.map_unordered(_extract_chunk, chunks(), shared=spec):
            for (digest, _), f in zip(chunk, feats):
                for i in rows[digest]:
                    out[i] = f
                finished.add(digest)
                if cache is not None:
                    cache.put(digest, key, f)  # the driver alone writes the cache
                bar.update(len(rows[digest]))
            featurizer.n_computed += len(chunk)
    finally:
        bar.close()
    shrunk.report(featurizer.notes)
    return featurizer.assemble(out)
