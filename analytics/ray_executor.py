"""Run a stage's independent units on a Ray cluster (``cartographer analyze ... --ray ADDRESS``).

:class:`RayExecutor` is the :class:`analytics.parallel.Executor` for datasets that outgrow one
machine. It connects to a cluster that is already running (it never starts one): every unit
(a probe seed or fold, a checkpoint, a chunk of texts to embed) becomes one Ray task, each
shared input goes into the object store once per stage, and Ray decides where each task runs.
Results come back as the tasks finish; the stage places them by unit index, so a run gives the
same artefacts as a local one, up to floating-point rounding (README, "On a Ray cluster").

Ray is an optional extra (``pip install 'data-cartographer[ray]'``); nothing imports it until a
:class:`RayExecutor` is made. Every node needs the same data-cartographer and torch installed,
and must see the dataset's files (images, checkpoints) at the same paths as the head.
"""

from __future__ import annotations

import logging
import socket
import warnings
from typing import Any, Callable, Sequence

from analytics.parallel import ExecutorError, Progress

__all__ = ["INSTALL_HINT", "RayExecutor"]

INSTALL_HINT = "pip install 'data-cartographer[ray]' (in a checkout: pip install -e '.[ray]')"


class RayExecutor:
    """Runs every unit of a stage as a Ray task on the cluster at ``address``.

    Parameters
    ----------
    address : str
        The cluster's head, ``HOST:PORT`` (the port ``ray start --head`` printed, 6379 by
        default), or ``"auto"`` on a node of a running cluster. Never ``"local"``: the app and
        the CLI do not start clusters.
    cpus_per_unit : int, optional
        CPUs Ray reserves for each task, and the torch threads the task uses. By default the
        cluster's CPUs are shared out among a stage's units (at least 1, at most one node's
        worth): a few probe seeds get many threads each, thousands of text chunks one each.
    connect_timeout : float, default 10
        Seconds to wait for the head to accept a connection before giving up.
    """

    name = "ray"

    def __init__(self, address: str, *, cpus_per_unit: int | None = None, connect_timeout: float = 10.0):
        address = (address or "").strip()
        if not address or address == "local":
            raise ExecutorError("--ray needs the address of a running Ray cluster: HOST:PORT of its head "
                                "node, or 'auto' on one of its nodes. Start one with `ray start --head`.")
        if cpus_per_unit is not None and cpus_per_unit < 1:
            raise ValueError(f"cpus_per_unit must be at least 1, not {cpus_per_unit}.")
        try:
            import ray
        except ImportError:
            raise ExecutorError(f"Cannot use the Ray cluster at {address}: Ray is not installed here. "
                                f"Install it with {INSTALL_HINT}.") from None
        _check_reachable(address, connect_timeout)
        self.address = address
        self.cpus_per_unit = cpus_per_unit
        self._ray = ray
        # Another executor (or the caller) may have connected this process already; only the
        # executor that opened the connection closes it.
        self._owns_connection = not ray.is_initialized()
        if self._owns_connection:
            try:
                ray.init(address=address, logging_level=logging.WARNING)
            except Exception as exc:  # ConnectionError, ValueError (bad address), RuntimeError...
                raise ExecutorError(f"Cannot connect to the Ray cluster at {address}: {exc}") from None
        else:
            connected = ray.get_runtime_context().gcs_address
            if _port(connected) != _port(address) and address != "auto":
                raise ExecutorError(f"This process is already connected to the Ray cluster at {connected}, "
                                    f"not {address}; use one cluster per process.")
        self._task = ray.remote(_run_unit)

    def describe(self) -> dict:
        """The cluster the units ran on, for the run manifest."""
        nodes = self._alive_nodes()
        return {"kind": "ray", "address": self.address, "nodes": len(nodes),
                "cpus": int(sum(node["Resources"].get("CPU", 0) for node in nodes)),
                "cpus_per_unit": self.cpus_per_unit or "auto", "ray": self._ray.__version__}

    def close(self) -> None:
        """Disconnect from the cluster (if this executor connected); the cluster keeps running."""
        if self._owns_connection and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns_connection = False

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def map(self, fn: Callable[..., Any], tasks: Sequence[dict], *, shared: dict | None = None,
            progress: Progress | None = None, label: str = "unit",
            on_result: Callable[[int, Any], None] | None = None) -> list:
        """``fn(**shared, **task)`` for each task, one Ray task each (see
        :meth:`analytics.parallel.Executor.map`). ``fn`` must be importable on the workers (a
        module-level function); each value of ``shared`` is put in the object store once."""
        ray = self._ray
        progress = progress or (lambda fraction, message: None)
        total = len(tasks)
        results: list = [None] * total
        if total == 0:
            progress(1.0, f"0 {label}s")
            return results
        shared = shared or {}
        keys = list(shared)
        values = [ray.put(value) for value in shared.values()]
        cpus = self._cpus_for(total)
        remote = self._task.options(num_cpus=cpus, name=getattr(fn, "__name__", "unit"))
        index_of = {remote.remote(fn, keys, task, cpus, *values): index for index, task in enumerate(tasks)}
        pending = list(index_of)
        progress(0.0, f"{label} 1 to {total} sent to the Ray cluster at {self.address} ({cpus} CPU each)")
        done = 0
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                if pending:  # collect every other unit that has finished meanwhile
                    more, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
                    ready += more
                for ref in ready:
                    index = index_of.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        raise _unit_failure(ray, exc, f"{label} {index + 1} of {total} (on the Ray "
                                                      f"cluster at {self.address})") from None
                    if on_result is not None:
                        on_result(index, result)
                    else:
                        results[index] = result
                    done += 1
                    progress(done / total, f"{label} {index + 1} of {total} done ({done} of {total} on Ray)")
        except BaseException:
            for ref in pending:  # nobody will read them: free the cluster
                ray.cancel(ref)
            raise
        return results

    def _alive_nodes(self) -> list[dict]:
        return [node for node in self._ray.nodes() if node.get("Alive")]

    def _cpus_for(self, units: int) -> int:
        node_cpus = [int(node["Resources"].get("CPU", 0)) for node in self._alive_nodes()]
        largest = max(node_cpus, default=0)
        if self.cpus_per_unit:
            if self.cpus_per_unit > largest:
                raise ExecutorError(f"Each unit asks for {self.cpus_per_unit} CPUs but the largest node of the "
                                    f"Ray cluster at {self.address} has {largest}; Ray could never run it.")
            return self.cpus_per_unit
        if largest < 1:
            raise ExecutorError(f"The Ray cluster at {self.address} has no node with a CPU to run units on.")
        return max(1, min(largest, sum(node_cpus) // units))


def _run_unit(fn: Callable[..., Any], keys: list[str], task: dict, threads: int, *values):
    """What a Ray task runs: one unit, on as many torch threads as CPUs Ray reserved for it.

    ``values`` are the shared inputs (Ray resolves the object references passed at the top
    level); numpy arrays among them are read-only views of the object store, which the units
    only read.
    """
    import torch

    torch.set_num_threads(threads)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return fn(**dict(zip(keys, values)), **task)


def _unit_failure(ray, exc: Exception, where: str) -> BaseException:
    """The error a unit raised on a worker, as the same exception type with the unit named
    (so ``except EmbeddingError`` and friends still work), or an ExecutorError when Ray itself
    failed (a worker died, an object was lost)."""
    cause = getattr(exc, "cause", None) if isinstance(exc, ray.exceptions.RayTaskError) else None
    if not isinstance(cause, BaseException):
        return ExecutorError(f"{where}: {exc}")
    message = f"{where}: {cause}"
    try:
        error = type(cause)(message)
    except Exception:  # an exception class that takes other arguments
        error = None
    if error is None or str(error) != message:
        cause.add_note(f"(raised by {where})")
        error = cause
    error.add_note(f"On the Ray worker: {exc}")  # Ray's text of the error holds the worker's traceback
    return error


def _check_reachable(address: str, timeout: float) -> None:
    """Fail fast, naming the address, when nothing listens there (ray.init would retry forever)."""
    target = address.split("://", 1)[-1]
    if target == "auto":
        return
    host, colon, port = target.rpartition(":")
    if not colon or not host or not port.isdigit():
        raise ExecutorError(f"{address} is not a Ray cluster address: give HOST:PORT of the head node "
                            "(e.g. 10.0.0.5:6379) or 'auto'.")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ExecutorError(f"Cannot reach the Ray cluster at {address} ({exc.strerror or exc}). Is it "
                            f"running? Start its head with `ray start --head --port {port}`, or check the "
                            "address and that this machine can reach it.") from None


def _port(address: str) -> str:
    return address.rpartition(":")[2]
