"""Where the embarrassingly parallel stages run: this process, local processes, or Ray.

Two stages of robustsdd are many independent tasks: feature extraction (chunks
of cache-miss images → feature arrays, :meth:`Featurizer.transform`) and the
(level, seed) groups of a sweep (:func:`~robustsdd.experiments.sweep.run_sweep`).
Both hand their tasks to an *executor*:

* ``local`` (the default): ``jobs=1`` runs every task in this process;
  ``jobs > 1`` in that many spawned worker processes.
* ``ray``: tasks on a Ray cluster (PyPI ``ray``, the optional extra
  ``robustsdd[ray]``). With an ``address`` it connects to that cluster; without
  one it starts a Ray instance on this machine with ``jobs`` CPUs, no dashboard,
  no usage statistics, listening on 127.0.0.1 only (it contacts nothing on the
  network), and shuts it down when the executor closes. Every worker node must have
  robustsdd (and its backbone weights) installed.

Tasks are ``fn(item, shared)``: ``shared`` (e.g. the feature arrays of a sweep)
is sent to each worker once, not with every task. Workers only compute and
*return* results; the caller (the driver) writes every file — cache entries,
cell files — so no two workers ever write the same file. Results are yielded as
tasks finish (so the driver can save them at once) and do not depend on which
worker ran a task: each worker runs torch/ONNX Runtime with one thread.

A worker that dies mid-task (killed, out of memory, a lost node) does not lose
the run: Ray re-runs its tasks (``max_retries``); the local executor re-runs the
tasks of a broken process pool in a fresh pool, at most ``max_retries`` times.
An exception *raised* by a task is a bug or bad input, not bad luck: it is not
retried and reaches the caller.

Importing this module does not import ray.

>>> with make_executor("local", jobs=1) as ex:
...     sorted(r for _, r in ex.map_unordered(pow, [1, 2, 3], shared=2))
[1, 4, 9]
"""

from __future__ import annotations

import importlib.util
import logging
import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ._errors import ConfigError, RobustSDDError

__all__ = [
    "EXECUTORS",
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "make_executor",
    "WorkerLostError",
    "start_ray",
]

EXECUTORS = ("local", "ray")
#: Re-runs of the tasks of a dead worker before the run fails.
DEFAULT_RETRIES = 3

_END = object()


class WorkerLostError(RobustSDDError, RuntimeError):
    """Worker processes kept dying: the tasks were re-run ``max_retries`` times."""


class Executor:
    """Runs ``fn(item, shared)`` for many items; see :func:`make_executor`.

    An executor is a context manager; :meth:`close` releases its workers (and a
    Ray instance it started).
    """

    name = "?"

    def __init__(self, jobs: int = 1, max_retries: int = DEFAULT_RETRIES):
        jobs = int(jobs)
        if jobs < 1:
            raise ConfigError(f"jobs must be at least 1, got {jobs}")
        if int(max_retries) < 0:
            raise ConfigError(f"max_retries must be at least 0, got {max_retries}")
        self.jobs = jobs
        self.max_retries = int(max_retries)

    @property
    def serial(self) -> bool:
        """True when tasks run one after another in this process."""
        return False

    @property
    def parallelism(self) -> int:
        """How many tasks run at once."""
        return self.jobs

    def map_unordered(
        self, fn: Callable[[Any, Any], Any], items: Iterable, shared: Any = None
    ) -> Iterator[tuple[Any, Any]]:
        """Yield ``(item, fn(item, shared))`` for every item, in the order tasks finish.

        ``fn`` must be picklable (a module-level function, or a ``functools.partial``
        of one). ``items`` may be a lazy iterable: Ray consumes it as workers free
        up (a few tasks per worker queued at a time); local processes take it whole.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release what this executor holds (idempotent)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"{type(self).__name__}(jobs={self.jobs})"


def make_executor(
    executor: str | Executor = "local",
    jobs: int = 1,
    address: str | None = None,
    max_retries: int = DEFAULT_RETRIES,
) -> Executor:
    """The executor named ``executor`` (``"local"`` or ``"ray"``), or ``executor`` itself.

    Parameters
    ----------
    executor : "local", "ray" or Executor
        An :class:`Executor` instance is returned unchanged.
    jobs : int
        Local: worker processes (1 = this process). Ray without ``address``: the
        CPUs of the local Ray instance. Ray with ``address``: ignored (the
        cluster's CPUs decide).
    address : str or None
        A Ray cluster to connect to (``"auto"``, ``"HOST:PORT"``, ``"ray://HOST:PORT"``);
        only with ``executor="ray"``.
    max_retries : int
        Re-runs of the tasks of a worker that died.

    Raises
    ------
    ConfigError
        For an unknown name, ``jobs < 1``, an ``address`` without Ray, or
        ``"ray"`` when the ``ray`` package is not installed. Nothing is started here:
        processes and Ray start with the first task.
    """
    if isinstance(executor, Executor):
        return executor
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; choose one of: {', '.join(EXECUTORS)}")
    if executor == "local":
        if address:
            raise ConfigError("an address names a Ray cluster: use it with executor 'ray'")
        return LocalExecutor(jobs, max_retries)
    if importlib.util.find_spec("ray") is None:
        raise ConfigError(
            "executor 'ray' needs the ray package: pip install 'robustsdd[ray]' "
            "(or pip install 'ray>=2.9')"
        )
    return RayExecutor(jobs, address, max_retries)


# ---------------------------------------------------------------------------------------------
# worker side (both executors)
_WORKER: dict = {}


def _worker_setup():
    """Once per worker process: one torch (and so ONNX Runtime) thread, as ``jobs``
    workers share the cores."""
    if not _WORKER.get("ready"):
        import torch

        torch.set_num_threads(1)
        _WORKER["ready"] = True


def _init_pool_worker(shared):
    _worker_setup()
    _WORKER["shared"] = shared


def _pool_task(fn, item):
    return fn(item, _WORKER["shared"])


def _ray_task(fn, item, shared):
    _worker_setup()
    return fn(item, shared)


# ---------------------------------------------------------------------------------------------
# local
class LocalExecutor(Executor):
    """This process (``jobs=1``) or ``jobs`` spawned worker processes.

    Processes are spawned, not forked (forking a process that has run torch can
    deadlock in its thread pools); a new pool serves each :meth:`map_unordered`
    call and receives ``shared`` once per process. If a worker dies, the pool is
    broken: the tasks that had not returned are re-run in a fresh pool, at most
    ``max_retries`` times in one call. As with any spawned processes, a script
    that uses ``jobs > 1`` must do so under ``if __name__ == "__main__":``.
    """

    name = "local"

    @property
    def serial(self) -> bool:
        return self.jobs == 1

    def map_unordered(
        self, fn: Callable[[Any, Any], Any], items: Iterable, shared: Any = None
    ) -> Iterator[tuple[Any, Any]]:
        if self.jobs == 1:
            for item in items:
                yield item, fn(item, shared)
            return
        # All workers start first, then all tasks go to the pool at once: Python's pool is
        # not safe against a submit racing with a worker's death (a worker it spawns after
        # the pool broke is never stopped, and shutdown waits for it forever; a task it
        # queues after the break never completes).
        items = list(items)
        if len(items) < 2:  # no process to spawn for a single task
            for item in items:
                yield item, fn(item, shared)
            return
        # spawn, not fork: see the class docstring.
        context = multiprocessing.get_context("spawn")
        restarts = 0
        while items:
            pool = ProcessPoolExecutor(
                max_workers=min(self.jobs, len(items)),
                mp_context=context,
                initializer=_init_pool_worker,
                initargs=(shared,),
            )
            lost, broken = [], None
            try:
                _start_all_workers(pool)
                pending = {pool.submit(_pool_task, fn, item): item for item in items}
                while pending:
                    # FIRST_COMPLETED: each result is yielded (and so saved by the caller) as
                    # soon as it exists; an interrupted run keeps every finished task. Once
                    # the pool is broken, every unfinished task fails at once.
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        item = pending.pop(future)
                        try:
                            result = future.result()  # re-raises a task's own exception
                        except BrokenProcessPool as exc:
                            lost.append(item)
                            broken = exc
                            continue
                        yield item, result
            finally:
                # On error, interrupt or a break: drop queued tasks; finished ones were yielded.
                pool.shutdown(wait=True, cancel_futures=True)
            items = lost
            if broken is not None:
                restarts += 1
                if restarts > self.max_retries:
                    raise WorkerLostError(
                        f"worker processes died {restarts} times ({broken}); {len(lost)} "
                        "task(s) did not finish"
                    ) from broken


def _start_all_workers(pool: ProcessPoolExecutor) -> None:
    """Spawn every worker of a new pool now, before its manager thread exists.

    With the spawn start method, Python (3.9+) starts workers one per submit; a worker
    that dies while a later one is being spawned leaves the new one out of the broken
    pool's clean-up, and ``shutdown`` then hangs joining it. Started up front, the pool
    never spawns again.
    """
    launch = getattr(pool, "_launch_processes", None)
    if launch is not None and not getattr(pool, "_executor_manager_thread", True):
        launch()


# ---------------------------------------------------------------------------------------------
# Ray
def start_ray(jobs: int = 1, address: str | None = None) -> bool:
    """Connect to the Ray cluster at ``address``, or start a local instance with ``jobs`` CPUs.

    Returns True if this call started (or connected) Ray, False if Ray was
    already initialised in this process (then it is used as it is). A local
    instance has no dashboard, sends no usage statistics and, if ray was not
    imported before, listens on 127.0.0.1 only.
    """
    # Set before Ray starts (and inherited by its processes): no usage statistics
    # reported over the network.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not address and "ray" not in sys.modules:
        # A local instance on the loopback interface only. On Linux Ray otherwise looks
        # for the machine's outward IP address and listens there; this switch (read when
        # ray is imported) is what gives Windows and macOS their 127.0.0.1 default.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    else:
        # address="local": a new instance even if RAY_ADDRESS names a cluster.
        ray.init(
            address="local",
            num_cpus=int(jobs),
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
    return True


class RayExecutor(Executor):
    """Tasks on Ray; see the module docstring.

    Ray is started (or connected to) by the first :meth:`map_unordered` call and,
    if this executor started it, shut down by :meth:`close`. ``shared`` is put
    into Ray's object store once per call; tasks retry ``max_retries`` times when
    their worker dies (Ray's ``max_retries``; exceptions raised by a task are not
    retried).
    """

    name = "ray"

    def __init__(
        self, jobs: int = 1, address: str | None = None, max_retries: int = DEFAULT_RETRIES
    ):
        super().__init__(jobs, max_retries)
        self.address = address or None
        self._owns_ray = False
        self._task: Any = None  # the Ray remote function, once Ray is started

    def _start(self):
        if self._task is None:
            self._owns_ray = start_ray(self.jobs, self.address)
            import ray

            self._task = ray.remote(num_cpus=1)(_ray_task).options(
                max_retries=self.max_retries, retry_exceptions=False
            )
        import ray

        return ray

    @property
    def parallelism(self) -> int:
        if self.address and self._task is not None:
            import ray

            return max(1, int(ray.cluster_resources().get("CPU", self.jobs)))
        return self.jobs

    def map_unordered(
        self, fn: Callable[[Any, Any], Any], items: Iterable, shared: Any = None
    ) -> Iterator[tuple[Any, Any]]:
        items = iter(items)
        first = next(items, _END)
        if first is _END:
            return  # no task: Ray is not started
        ray = self._start()
        shared_ref = ray.put(shared)
        window = 2 * self.parallelism
        pending: dict = {}
        queue = deque([first])
        try:
            while True:
                while len(pending) < window:
                    item = queue.popleft() if queue else next(items, _END)
                    if item is _END:
                        break
                    # shared_ref as a top-level argument: Ray passes the worker its value,
                    # from the node's object store (no copy per task).
                    pending[self._task.remote(fn, item, shared_ref)] = item
                if not pending:
                    break
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    item = pending.pop(ref)
                    yield item, _ray_result(ray, ref)
        finally:
            for ref in pending:  # interrupted or failed: drop what has not run
                try:
                    ray.cancel(ref)
                except Exception:  # noqa: BLE001 - best effort
                    pass

    def close(self) -> None:
        if self._owns_ray:
            import ray

            ray.shutdown()
            self._owns_ray = False
        self._task = None

    def __repr__(self):
        return f"RayExecutor(jobs={self.jobs}, address={self.address!r})"


def _ray_result(ray, ref):
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        # The task's own exception, as its own type (e.g. ConfigError), not Ray's wrapper.
        cause = exc.as_instanceof_cause()
        raise cause from None
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as exc:
        raise WorkerLostError(
            f"a Ray worker died and the task failed after its retries: {exc}"
        ) from exc
