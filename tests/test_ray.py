"""The Ray executor against a real cluster: one head node on loopback, started for this module.

A Ray run must write the artefacts a local run writes. Units on Ray run on as many torch threads
as CPUs Ray gave them (mostly 1 here) while a local run uses every core, and a matrix product summed
over a different number of threads can round differently; so float32 results are compared to
``ATOL_32``/``RTOL_32`` and the float16 ``dynamics.npy`` to one float16 step. Everything
discrete (ids, labels, regions, predictions, clusters) must be identical.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

ray = pytest.importorskip("ray", reason="the Ray extra is not installed (pip install -e '.[ray]')")

from analytics.cli import main  # noqa: E402
from analytics.datasets import load_dataset  # noqa: E402
from analytics.dynamics import ProbeConfig, checkpoint_dynamics, resolve_scheme  # noqa: E402
from analytics.embeddings import EmbeddingError, EmbeddingSpec, checkpoint_outputs, compute_embeddings  # noqa: E402
from analytics.parallel import LOCAL, ExecutorError  # noqa: E402
from analytics.pipeline import AnalysisConfig, load_run, run_analysis  # noqa: E402
from analytics.ray_executor import RayExecutor  # noqa: E402
from analytics.workspace import Workspace  # noqa: E402
from tests.conftest import epoch_checkpoints  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ATOL_32, RTOL_32 = 1e-5, 1e-5
FLOAT16_STEP = 2.0 ** -10  # relative spacing of float16: the stored dynamics may differ by one step
#: Largest differences seen between local and Ray results, printed at the end of the module (pytest -s).
OBSERVED: dict[str, float] = {}

pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM the cluster if pytest itself dies (Linux)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _session_processes(session: int) -> list[psutil.Process]:
    alive = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == session and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except (ProcessLookupError, psutil.Error):
            continue
    return alive


@pytest.fixture(scope="module")
def ray_address():
    """``ray start --head --block`` on 127.0.0.1 in a throwaway temp dir; yields its address.

    The cluster runs in its own process session, so teardown stops exactly this cluster (never
    `ray stop`, which would stop every Ray on the machine): SIGTERM to `ray start`, which stops
    what it started, then SIGKILL to whatever of the session is left, and a check that nothing is.
    """
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit AF_UNIX
    port = _free_port()
    # Ray swaps 127.0.0.1 for the machine's outward address unless it believes it is a one-machine
    # install; this keeps the cluster and this process's connection on loopback.
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0",
               RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
    command = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
               "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
               "--include-dashboard=false", "--disable-usage-stats", "--temp-dir", temp_dir,
               "--object-store-memory", str(200 * 2**20)]
    for option in ("node-manager-port", "object-manager-port", "metrics-export-port", "runtime-env-agent-port",
                   "dashboard-agent-grpc-port", "dashboard-agent-listen-port"):
        command += [f"--{option}", str(_free_port())]
    log_path = Path(temp_dir) / "ray-start.log"
    patch = pytest.MonkeyPatch()
    with log_path.open("w") as log:
        head = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                start_new_session=True, preexec_fn=_die_with_parent)
    try:
        patch.setattr(ray._private.ray_constants, "ENABLE_RAY_CLUSTER", False)
        deadline = time.monotonic() + 90
        while "Ray runtime started" not in log_path.read_text():
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start did not come up:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        if ray.is_initialized():
            ray.shutdown()
        head.terminate()
        try:
            head.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        leftovers = _session_processes(head.pid)
        for process in leftovers:
            process.kill()
        psutil.wait_procs(leftovers, timeout=10)
        patch.undo()
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not _session_processes(head.pid), "Ray processes were left behind"


@pytest.fixture(scope="module")
def executor(ray_address):
    with RayExecutor(ray_address) as connected:
        yield connected
    print("\nlargest local-vs-Ray differences:", json.dumps(OBSERVED, indent=1))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """300 examples in 3 noisy blobs: a CSV (6 numeric columns) and a 12-d embeddings file."""
    folder = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    n, d = 300, 12
    labels = rng.integers(0, 3, n)
    vectors = rng.normal(size=(3, d))[labels] * 2.0 + rng.normal(size=(n, d))
    labels = np.where(rng.random(n) < 0.08, (labels + 1) % 3, labels)  # label noise: every region occurs
    frame = pd.DataFrame(vectors[:, :6], columns=[f"f{i}" for i in range(6)])
    frame.insert(0, "id", [f"ex{i}" for i in range(n)])
    frame["label"] = np.array(["ant", "bee", "cat"])[labels]
    frame.to_csv(folder / "data.csv", index=False)
    np.save(folder / "embeddings.npy", vectors.astype(np.float32))
    return folder


def _close(name: str, local, remote, *, rtol: float = RTOL_32, atol: float = ATOL_32) -> None:
    local, remote = np.asarray(local, dtype=np.float64), np.asarray(remote, dtype=np.float64)
    assert local.shape == remote.shape, name
    OBSERVED[name] = max(OBSERVED.get(name, 0.0), float(np.abs(local - remote).max(initial=0.0)))
    np.testing.assert_allclose(remote, local, rtol=rtol, atol=atol, err_msg=name)


def _cached(workspace: Path, stage: str) -> np.ndarray:
    """The float32 array a stage cached (``<root>/<fingerprint>/<stage>/<key>.npy``)."""
    (path,) = workspace.glob(f"*/{stage}/*.npy")
    return np.load(path)


def assert_same_run(local_dir: Path, ray_dir: Path, name: str) -> None:
    local, remote = load_run(local_dir), load_run(ray_dir)
    assert local.manifest["executor"] == {"kind": "local"}
    assert remote.manifest["executor"]["kind"] == "ray" and remote.manifest["executor"]["nodes"] == 1
    assert list(remote.examples.columns) == list(local.examples.columns)
    for column in local.examples.columns:
        mine, theirs = local.examples[column], remote.examples[column]
        if pd.api.types.is_float_dtype(mine):
            _close(f"{name}: examples.{column}", mine, theirs)
        else:  # ids, labels, regions, predictions, flags, clusters: identical
            assert mine.tolist() == theirs.tolist(), column
    _close(f"{name}: heldout_probs.npy", np.load(local_dir / "heldout_probs.npy"),
           np.load(ray_dir / "heldout_probs.npy"))
    _close(f"{name}: dynamics.npy (float16)", np.load(local_dir / "dynamics.npy"),
           np.load(ray_dir / "dynamics.npy"), rtol=FLOAT16_STEP, atol=FLOAT16_STEP * 1e-2)
    for table in ("clusters.parquet", "slices.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(ray_dir / table), pd.read_parquet(local_dir / table),
                                      check_exact=False, rtol=RTOL_32, atol=ATOL_32)
    differ = {"created", "executor", "timings_s", "artefacts"}
    assert ({k: v for k, v in remote.manifest.items() if k not in differ}
            == {k: v for k, v in local.manifest.items() if k not in differ})


# --- whole runs ------------------------------------------------------------------------------

def test_cli_run_on_ray_writes_the_local_artefacts(executor, ray_address, data, tmp_path, monkeypatch, capsys):
    arguments = ["analyze", str(data / "data.csv"), "--embeddings", str(data / "embeddings.npy"),
                 "--projection", "pca", "--k", "10"]
    for name, extra in (("local", []), ("ray", ["--ray", ray_address])):
        monkeypatch.setenv("CARTOGRAPHER_WORKSPACE", str(tmp_path / f"ws-{name}"))  # no shared cache
        assert main([*arguments, *extra, "--out", str(tmp_path / name)]) == 0
    assert f"Ray cluster at {ray_address}: 1 node, 2 CPUs" in capsys.readouterr().err
    assert_same_run(tmp_path / "local", tmp_path / "ray", "independent")
    assert load_run(tmp_path / "ray").manifest["dynamics"]["scheme"] == "independent"
    _close("independent: dynamics logits (float32)", _cached(tmp_path / "ws-local", "dynamics_logits"),
           _cached(tmp_path / "ws-ray", "dynamics_logits"))
    _close("independent: GraNd norms", _cached(tmp_path / "ws-local", "dynamics_norms"),
           _cached(tmp_path / "ws-ray", "dynamics_norms"))
    assert ray.is_initialized()  # the CLI closed only a connection it opened itself


def test_cross_fitted_run_on_ray_writes_the_local_artefacts(executor, data, tmp_path):
    dataset = load_dataset(data / "data.csv")
    config = AnalysisConfig(embedding=EmbeddingSpec(source="file", path=str(data / "embeddings.npy")),
                            projection="pca", k=10, probe=ProbeConfig(scheme="cross-fit", epochs=6))
    messages = []
    for name, where in (("local", LOCAL), ("ray", executor)):
        run_analysis(dataset, config, out_dir=tmp_path / name, workspace=Workspace(tmp_path / f"ws-{name}"),
                     executor=where, progress=lambda stage, f, m: messages.append(m))
    assert any("Cross-fitted probe" in m and "sent to the Ray cluster" in m for m in messages)
    assert_same_run(tmp_path / "local", tmp_path / "ray", "cross-fit")
    assert load_run(tmp_path / "ray").manifest["dynamics"]["scheme"] == "cross-fit"
    _close("cross-fit: dynamics logits (float32)", _cached(tmp_path / "ws-local", "dynamics_logits"),
           _cached(tmp_path / "ws-ray", "dynamics_logits"))


# --- checkpoints -----------------------------------------------------------------------------

def test_checkpoint_inference_on_ray_matches_local(executor, data, tmp_path):
    dataset = load_dataset(data / "data.csv")
    paths, _ = epoch_checkpoints(dataset, tmp_path)
    run_one = functools.partial(checkpoint_outputs, dataset, output="logits")
    local = checkpoint_dynamics(paths, dataset.label_codes, run_one=run_one)
    remote = checkpoint_dynamics(paths, dataset.label_codes, run_one=run_one, executor=executor)
    assert remote.logits.shape == local.logits.shape == (1, 3, 300, 3)
    _close("checkpoint logits", local.logits, remote.logits)
    assert remote.early_epoch == local.early_epoch and (remote.gold == local.gold).all()
    # and through the pipeline, with the embeddings from a file
    config = AnalysisConfig(embedding=EmbeddingSpec(source="file", path=str(data / "embeddings.npy")),
                            projection="pca", k=10, checkpoints=tuple(map(str, paths)))
    for name, where in (("local", LOCAL), ("ray", executor)):
        run_analysis(dataset, config, out_dir=tmp_path / name, workspace=Workspace(tmp_path / f"ws-{name}"),
                     executor=where)
    assert_same_run(tmp_path / "local", tmp_path / "ray", "checkpoints")
    assert load_run(tmp_path / "ray").manifest["dynamics"]["source"] == "checkpoints"


@pytest.mark.parametrize("make, expected", [
    ("hostile", ["arbitrary code", "--trust-checkpoint"]),
    ("corrupt", ["not a PyTorch checkpoint"]),
])
def test_a_bad_checkpoint_on_ray_keeps_its_message(executor, data, tmp_path, make, expected):
    dataset = load_dataset(data / "data.csv")
    paths, _ = epoch_checkpoints(dataset, tmp_path)
    marker = tmp_path / "code_ran"
    bad = tmp_path / "epoch1.pt"
    if make == "hostile":
        class Hostile:  # unpickling it would call open(marker, "w")
            def __reduce__(self):
                return open, (str(marker), "w")

        bad.write_bytes(pickle.dumps(Hostile(), protocol=2))
    else:
        bad.write_bytes(b"definitely not a checkpoint " * 40)
    run_one = functools.partial(checkpoint_outputs, dataset, output="logits")
    with pytest.raises(EmbeddingError) as error:
        checkpoint_dynamics(paths, dataset.label_codes, run_one=run_one, executor=executor)
    message = str(error.value)
    assert "Checkpoint 2 of 3" in message and str(bad) in message, message
    assert all(part in message for part in expected), message
    assert not marker.exists()  # the worker refused the pickle without running it


# --- embeddings ------------------------------------------------------------------------------

def test_minilm_chunks_on_ray_match_local(executor, ray_address, tmp_path, monkeypatch):
    import analytics.embeddings as embeddings

    texts = ["the build fails with a linker error", "a kernel module for the wifi card", "python bindings",
             "documentation for the compiler", "fonts for the desktop", "a tool to back up files",
             "libraries for image decoding", "the shell and its completion scripts", "a mail server",
             "a game with puzzles", "headers for development", "a daemon that syncs the clock"]
    pd.DataFrame({"text": texts, "label": ["a", "b"] * 6}).to_csv(tmp_path / "t.csv", index=False)
    dataset = load_dataset(tmp_path / "t.csv")
    monkeypatch.setattr(embeddings, "_minilm_step", lambda batch_size: 5)  # 3 chunks (5, 5, 2)
    spec = EmbeddingSpec(source="minilm", batch_size=4)
    seen = []
    local = compute_embeddings(dataset, spec)
    # two CPUs a unit: one unit at a time, so one worker loads the encoder (once) for all chunks
    with RayExecutor(ray_address, cpus_per_unit=2) as whole_node:
        remote = compute_embeddings(dataset, spec, executor=whole_node, progress=lambda f, m: seen.append(m))
    assert remote.shape == local.shape == (12, 384) and remote.dtype == np.float32
    _close("MiniLM vectors", local, remote)
    assert any("MiniLM: chunk 1 to 3 sent to the Ray cluster" in m and "(2 CPU each)" in m for m in seen), seen
    assert ray.is_initialized()  # the second executor shared this process's connection


def test_checkpoint_embeddings_on_ray_match_local(executor, data, tmp_path, monkeypatch):
    """Chunks of features (a TorchScript model on a table) and chunks of rows (on images)."""
    import torch
    from PIL import Image

    import analytics.embeddings as embeddings

    monkeypatch.setattr(embeddings, "_checkpoint_step", lambda batch_size: 2 * batch_size)
    table = load_dataset(data / "data.csv")
    (path,), _ = epoch_checkpoints(table, tmp_path, epochs=1)
    spec = EmbeddingSpec(source="checkpoint", path=str(path), batch_size=64)  # 3 chunks of 128, 128, 44
    _close("checkpoint embeddings (table)", compute_embeddings(table, spec),
           compute_embeddings(table, spec, executor=executor))

    rng = np.random.default_rng(0)
    for index in range(10):
        (tmp_path / "images" / "ab"[index % 2]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 23, 3), dtype=np.uint8)).save(
            tmp_path / "images" / "ab"[index % 2] / f"{index}.png")
    images = load_dataset(tmp_path / "images")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(model), str(tmp_path / "vision.pt"))
    spec = EmbeddingSpec(source="checkpoint", path=str(tmp_path / "vision.pt"), batch_size=3)  # 2 chunks
    local, remote = compute_embeddings(images, spec), compute_embeddings(images, spec, executor=executor)
    assert remote.shape == local.shape == (10, 8)
    _close("checkpoint embeddings (images)", local, remote)


# --- failures --------------------------------------------------------------------------------

def test_a_failing_unit_is_named_and_keeps_its_type(executor):
    gold = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    tasks = [{"config": ProbeConfig(scheme="independent")}, {"config": ProbeConfig(scheme="bogus")}]
    with pytest.raises(ValueError, match=r"Scheme check 2 of 2 \(on the Ray cluster at 127\.0\.0\.1:\d+\): "
                                         r"scheme must be 'auto', 'independent' or 'cross-fit', not 'bogus'"):
        executor.map(resolve_scheme, tasks, shared={"gold": gold}, label="Scheme check")
    assert executor.map(resolve_scheme, tasks[:1], shared={"gold": gold}) == ["independent"]


def test_an_unreachable_cluster_is_a_clear_error(executor, data, tmp_path, capsys):
    address = f"127.0.0.1:{_free_port()}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(ExecutorError, match=f"Cannot reach the Ray cluster at {address}.*ray start --head"):
        RayExecutor(address)
    assert main(["analyze", str(data / "data.csv"), "--embeddings", str(data / "embeddings.npy"),
                 "--ray", address, "--out", str(tmp_path / "run")]) == 2
    assert f"error: Cannot reach the Ray cluster at {address}" in capsys.readouterr().err
    assert time.monotonic() - started < 15 and not (tmp_path / "run").exists()
    with pytest.raises(ExecutorError, match="not a Ray cluster address"):
        RayExecutor("my-cluster")
    with pytest.raises(ExecutorError, match="running Ray cluster"):
        RayExecutor("local")  # never start a cluster implicitly


def test_nothing_imports_ray_without_the_option():
    code = ("import sys, analytics.cli, analytics.pipeline, analytics.ray_executor; "
            "sys.exit('ray' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
