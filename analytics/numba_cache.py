"""Compiled numba code cached on disk, so a second process does not compile UMAP and NN-descent again.

umap-learn and pynndescent compile their numba functions on first use in every process: about
25–50 s on 2 cores before a cold ``cartographer analyze`` does any work. pynndescent marks most
of its functions ``cache=True``, umap-learn few of them. :func:`enable` points numba's cache at
the workspace (``<workspace>/numba-cache``, or ``$NUMBA_CACHE_DIR`` when the user set one) and
turns caching on for every numba function of the two packages, before any of them compiles.

numba keys each cached function by its source file and that file's modification time and
checks the CPU, so an upgrade of either package or a different machine compiles afresh instead
of loading stale code. A few functions cannot be cached (numba refuses functions that use
"dynamic globals", e.g. pynndescent's ``nn_descent``); they still compile in each process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

__all__ = ["Prewarm", "enable", "cache_dir", "cache_stats", "compiled", "prewarm"]

_PACKAGES = ("umap", "pynndescent")
_lock = threading.Lock()
_enabled: Path | None = None


def cache_dir() -> Path:
    """Where compiled code goes: ``$NUMBA_CACHE_DIR`` if set, else ``<workspace>/numba-cache``."""
    from analytics.workspace import default_root

    configured = os.environ.get("NUMBA_CACHE_DIR")
    return Path(configured) if configured else default_root() / "numba-cache"


def enable() -> Path | None:
    """Cache umap-learn's and pynndescent's compiled code on disk; returns the cache folder.

    Call it before the first use of either package (:mod:`analytics.neighbors` and
    :mod:`analytics.projection` do). Idempotent; returns None when the folder cannot be
    created (the packages then compile in memory as before).
    """
    global _enabled
    with _lock:
        if _enabled is not None:
            return _enabled
        folder = cache_dir()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            return None
        os.environ["NUMBA_CACHE_DIR"] = str(folder)
        import numba

        numba.config.CACHE_DIR = str(folder)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning)
            import pynndescent  # noqa: F401
            import umap  # noqa: F401
        for dispatcher in _dispatchers():
            if not _caches(dispatcher):
                try:
                    dispatcher.enable_caching()
                except Exception:  # noqa: BLE001 - a function numba cannot cache compiles as before
                    continue
        # numba warns once per function it cannot cache ("dynamic globals"); that is expected.
        warnings.filterwarnings("ignore", message=r"Cannot cache compiled function", module=r"numba\..*")
        warnings.filterwarnings("ignore", message=r"Cannot cache compiled function")
        _enabled = folder
        return folder


def cache_stats() -> dict[str, int]:
    """Cache hits and misses so far in this process, summed over the two packages' functions
    (a miss is a compilation whose result was not found on disk)."""
    hits = misses = 0
    for dispatcher in _dispatchers():
        stats = getattr(dispatcher, "stats", None)
        if stats is None or not _caches(dispatcher):
            continue
        hits += sum(stats.cache_hits.values())
        misses += sum(stats.cache_misses.values())
    return {"hits": hits, "misses": misses}


def _dispatchers():
    from numba.core.registry import CPUDispatcher

    seen: set[int] = set()
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in _PACKAGES:
            continue
        for value in list(vars(module).values()):
            if isinstance(value, CPUDispatcher) and id(value) not in seen:
                seen.add(id(value))
                yield value


def _caches(dispatcher) -> bool:
    return type(dispatcher._cache).__name__ != "NullCache"


# ----------------------------------------------------------------------------- warming up ahead

_UMAP_LAYOUT = "umap_*/layouts._optimize_layout_euclidean_single_epoch-*.nbi"


class Prewarm:
    """A process compiling into the cache while this one does other work (:func:`prewarm`).
    :meth:`wait` before the compiled code is used: it is then loaded, not compiled again."""

    def __init__(self, process: subprocess.Popen):
        self.process = process

    def running(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float = 600.0) -> bool:
        """Until the process has finished (True when it compiled everything), at most ``timeout``
        seconds; past that it is stopped and the caller compiles as it would have. Returns at
        once when it has finished already."""
        try:
            return self.process.wait(timeout=timeout) == 0
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return False


def compiled(folder: Path | None = None) -> bool:
    """Whether umap-learn's layout is in the cache already (compiled by an earlier process)."""
    folder = folder or _enabled or cache_dir()
    return any(folder.glob(_UMAP_LAYOUT))


def prewarm(*, metric: str, n_neighbors: int, seed: int | None, init: str) -> Prewarm | None:
    """On a cold cache, compile umap-learn's layout in a second process, for these options (the
    compiled code depends on them: a seed makes the layout serial, none parallel). None when it
    is cached already (:func:`compiled`), or there is no cache.

    :meth:`Prewarm.wait` before using what it compiles. A cold analysis of 100k points compiles
    for about 30 s while it builds its kNN graph (on one core of two) and about 8 s more for its
    map: the map's part then compiles on the other core meanwhile. This process imports and
    caches the two packages first (:func:`enable`), so that the second one loads what they
    compile on import instead of compiling it at the same time.

    Tried and not kept: starting the second process before those imports (both compiled the
    same functions at once: 90 s instead of 84-86 s at 100k), and compiling NN-descent ahead
    while the probe trains (the probe's two threads and the compiler slowed each other down on
    two cores: 49 s instead of 15 s for the probe). What works is the other way round: the
    probe and the clusters in second processes at a lower priority, their OpenMP threads
    sleeping while they wait, while this one compiles (:mod:`analytics.ahead`)."""
    folder = enable()
    if folder is None or compiled(folder):
        return None
    command = [sys.executable, "-m", "analytics.numba_prewarm", "--metric", metric, "--n-neighbors", str(n_neighbors),
               "--init", init] + ([] if seed is None else ["--seed", str(seed)])
    env = {**os.environ, "NUMBA_CACHE_DIR": str(folder)}
    root = Path(__file__).resolve().parent.parent
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    try:
        process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
    except OSError:
        return None
    return Prewarm(process)
