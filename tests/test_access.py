"""The operator's rules for paths and architectures (analytics.access), and the engine's use of them:
data roots, symbolic links, devices, size caps, and model classes named by a user."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analytics.access import AccessError, Policy, check_architecture, resolve_data_path
from analytics.datasets import DatasetError, load_dataset, peek_columns
from analytics.dynamics import DynamicsError, read_reference_dynamics
from analytics.embeddings import EmbeddingError, EmbeddingSpec, compute_embeddings


@pytest.fixture
def layout(tmp_path):
    """A data root holding a dataset, and a secrets file outside it with a link to it from inside."""
    root = tmp_path / "data"
    root.mkdir()
    outside = tmp_path / "private"
    outside.mkdir()
    secrets = outside / "secrets.csv"
    pd.DataFrame({"id": ["a", "b"], "label": ["x", "y"], "text": ["password=hunter2", "token=abc"]}).to_csv(
        secrets, index=False)
    dataset = root / "reviews.csv"
    pd.DataFrame({"id": ["1", "2", "3", "4"], "label": ["x", "y", "x", "y"],
                  "text": ["good", "bad", "fine", "poor"]}).to_csv(dataset, index=False)
    (root / "link.csv").symlink_to(secrets)
    return {"root": root, "secrets": secrets, "dataset": dataset, "link": root / "link.csv",
            "policy": Policy(data_roots=(root,))}


def refused(call, *args, match: str, **kwargs) -> str:
    """The message of the AccessError that ``call`` raises."""
    with pytest.raises(AccessError, match=match) as error:
        call(*args, **kwargs)
    return str(error.value)


# --- resolve_data_path -----------------------------------------------------------------------

def test_a_path_inside_a_root_resolves(layout):
    assert resolve_data_path(layout["dataset"], layout["policy"]) == layout["dataset"].resolve()
    assert resolve_data_path(layout["root"], layout["policy"]) == layout["root"].resolve()


def test_a_file_outside_the_roots_is_refused_naming_what_was_typed(layout):
    message = refused(resolve_data_path, str(layout["secrets"]), layout["policy"], match="outside the data folders")
    assert message.startswith(str(layout["secrets"]))
    assert "CARTOGRAPHER_DATA_ROOTS" in message


def test_a_link_inside_a_root_to_a_file_outside_is_refused_without_showing_its_target(layout):
    message = refused(resolve_data_path, layout["link"], layout["policy"], match="outside the data folders")
    assert str(layout["link"]) in message
    assert "private" not in message and "secrets" not in message


def test_dot_dot_cannot_climb_out_of_a_root(layout):
    climbing = f"{layout['root']}/../private/secrets.csv"
    refused(resolve_data_path, climbing, layout["policy"], match="outside the data folders")


def test_outside_the_roots_a_missing_path_gets_the_same_answer_as_an_existing_one(layout, tmp_path):
    """Otherwise the error would tell a browser user which server paths exist."""
    refused(resolve_data_path, tmp_path / "private" / "nope.csv", layout["policy"], match="outside the data folders")
    refused(resolve_data_path, layout["root"] / "nope.csv", layout["policy"], match="no such file or folder")


def test_a_system_folder_is_refused_without_listing_its_files(layout):
    message = refused(resolve_data_path, "/etc", layout["policy"], match="outside the data folders")
    assert "passwd" not in message and "hosts" not in message


@pytest.mark.parametrize("policy", [Policy(), Policy(data_roots=(Path("/dev"),))], ids=["local", "roots"])
def test_a_device_is_refused_in_every_mode(policy):
    refused(resolve_data_path, "/dev/zero", policy, what="vectors file", match="not a regular file")


def test_a_named_pipe_is_refused(tmp_path):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    refused(resolve_data_path, fifo, Policy(), match="not a regular file")


def test_a_file_over_the_size_cap_is_refused(tmp_path):
    big = tmp_path / "big.csv"
    big.write_bytes(b"x" * (2 * 2**20 + 1))
    refused(resolve_data_path, big, Policy(max_file_bytes=2 * 2**20), match=r"larger \(2,097,153 bytes\) than the 2 MB")
    assert resolve_data_path(big, Policy(max_file_bytes=3 * 2**20)) == big


def test_files_and_folders_only_where_expected(layout):
    refused(resolve_data_path, layout["root"], layout["policy"], what="vectors file", allow_dir=False,
            match="is a folder; a vectors file must be a file")
    refused(resolve_data_path, layout["dataset"], layout["policy"], what="folder of training dynamics",
            allow_file=False, match="must be a folder")


def test_local_mode_keeps_any_readable_path(layout):
    assert resolve_data_path(layout["secrets"], Policy()) == layout["secrets"]


def test_roots_come_from_the_environment(layout):
    policy = Policy.from_env({"CARTOGRAPHER_DATA_ROOTS": f"{layout['root']}{os.pathsep}/nonexistent"})
    assert resolve_data_path(layout["dataset"], policy) == layout["dataset"].resolve()
    refused(resolve_data_path, layout["secrets"], policy, match="outside")


# --- the engine uses it ------------------------------------------------------------------------

def test_load_dataset_refuses_the_secrets_file_and_the_link(layout):
    for path in (layout["secrets"], layout["link"]):
        with pytest.raises(DatasetError, match="outside the data folders") as error:
            load_dataset(path, policy=layout["policy"])
        assert "hunter2" not in str(error.value)
        assert path == layout["secrets"] or "private" not in str(error.value)  # a link's target is not shown
        with pytest.raises(DatasetError, match="outside the data folders"):
            peek_columns(path, policy=layout["policy"])
    assert load_dataset(layout["dataset"], policy=layout["policy"]).n_examples == 4


def test_a_system_folder_is_not_loaded_as_a_dataset(layout):
    with pytest.raises(DatasetError, match="outside the data folders") as error:
        load_dataset("/etc", policy=layout["policy"])
    assert "passwd" not in str(error.value)


def within_seconds(seconds: float, call, *args, **kwargs):
    """Run ``call`` in a thread and fail (instead of hanging) if it has not returned in time."""
    outcome = {}

    def target():
        try:
            outcome["value"] = call(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{call.__name__} still running after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_the_zero_device_is_refused_at_once_as_a_dataset():
    with pytest.raises(DatasetError, match="not a regular file"):
        within_seconds(10, load_dataset, "/dev/zero")


def test_the_zero_device_is_refused_at_once_as_a_vectors_file(layout):
    dataset = load_dataset(layout["dataset"])
    spec = EmbeddingSpec(source="file", path="/dev/zero")
    with pytest.raises(EmbeddingError, match="/dev/zero: is not a regular file"):
        within_seconds(10, spec.cache_params)  # the cache key hashed the device forever
    with pytest.raises(EmbeddingError, match="not a regular file"):
        within_seconds(10, compute_embeddings, dataset, spec)


def test_an_image_path_linked_to_a_device_is_skipped_not_read(tmp_path):
    from PIL import Image

    Image.new("RGB", (4, 4), (10, 20, 30)).save(tmp_path / "cat.png")
    Image.new("RGB", (4, 4), (200, 0, 0)).save(tmp_path / "dog.png")
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    pd.DataFrame({"id": ["1", "2", "3"], "label": ["cat", "dog", "cat"],
                  "image": ["cat.png", "dog.png", "zero.png"]}).to_csv(tmp_path / "images.csv", index=False)
    dataset = within_seconds(20, load_dataset, tmp_path / "images.csv")
    assert dataset.n_examples == 2
    assert any(s.path.endswith("zero.png") and "not a regular file" in s.reason for s in dataset.skipped)


def test_a_vectors_file_outside_the_roots_is_refused(layout, monkeypatch):
    vectors = layout["secrets"].with_suffix(".npy")
    np.save(vectors, np.zeros((4, 3), dtype=np.float32))
    monkeypatch.setenv("CARTOGRAPHER_DATA_ROOTS", str(layout["root"]))
    dataset = load_dataset(layout["dataset"])
    with pytest.raises(EmbeddingError, match="outside the data folders"):
        compute_embeddings(dataset, EmbeddingSpec(source="file", path=str(vectors)))
    inside = layout["root"] / "vectors.npy"
    np.save(inside, np.eye(4, 3, dtype=np.float32))
    assert compute_embeddings(dataset, EmbeddingSpec(source="file", path=str(inside))).shape == (4, 3)


def test_dynamics_outside_the_roots_or_linked_out_are_refused(layout):
    inside = layout["root"] / "dynamics"
    inside.mkdir()
    (inside / "dynamics_epoch_0.jsonl").symlink_to(layout["secrets"])
    with pytest.raises(DynamicsError, match="outside the data folders") as error:
        read_reference_dynamics(inside, ["1"], policy=layout["policy"])
    assert "private" not in str(error.value)
    with pytest.raises(DynamicsError, match="outside the data folders"):
        read_reference_dynamics(layout["secrets"].parent, ["1"], policy=layout["policy"])


# --- check_architecture ------------------------------------------------------------------------

def test_an_imported_model_class_and_its_arguments():
    import torch

    model_class, kwargs = check_architecture('torch.nn:Linear{"in_features": 2, "out_features": 3}', Policy())
    assert model_class is torch.nn.Linear and kwargs == {"in_features": 2, "out_features": 3}


@pytest.mark.parametrize("spec", ["subprocess:run", "os:system", "builtins:eval", "subprocess:Popen",
                                  "os.path:join", "torch.nn:functional"])
def test_anything_but_a_module_subclass_is_refused(spec):
    refused(check_architecture, spec + '{"args": ["true"]}', Policy(), trust=True,
            match="not a subclass of torch.nn.Module")


def test_a_module_not_imported_is_not_imported(tmp_path, monkeypatch):
    (tmp_path / "loud_module.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("loud_module", None)
    refused(check_architecture, "loud_module:Net", Policy(), match="not loaded, and importing it would run")
    refused(check_architecture, "loud_module:Net", Policy(architectures=("other:*",)), match="not on this server")
    assert not (tmp_path / "ran").exists() and "loud_module" not in sys.modules


def test_the_allow_list_refuses_other_classes_even_when_imported():
    policy = Policy(architectures=("torch.nn:Linear",))
    assert check_architecture("torch.nn:Linear", policy)[0].__name__ == "Linear"
    refused(check_architecture, "torch.nn:Conv2d", policy, match="not on this server's list")
    refused(check_architecture, "torch.nn:Conv2d", policy, trust=True, match="not on this server's list")


def test_arguments_must_be_a_json_object():
    refused(check_architecture, "torch.nn:Linear[1, 2]", Policy(), match="not of the form")
    refused(check_architecture, "torch.nn:Linear{1: 2}", Policy(), match="not valid JSON")


def test_by_default_the_environment_rules_and_the_samples_stay_readable(layout, monkeypatch):
    """The app's loader passes no policy: roots come from the environment, images named in a table
    are read only inside them, and the bundled samples still open."""
    from PIL import Image

    from analytics.samples import sample_by_key

    Image.new("RGB", (4, 4), (1, 2, 3)).save(layout["root"] / "cat.png")
    Image.new("RGB", (4, 4), (200, 0, 0)).save(layout["root"] / "dog.png")
    Image.new("RGB", (4, 4), (0, 0, 9)).save(layout["secrets"].parent / "private.png")
    table = layout["root"] / "images.csv"
    pd.DataFrame({"id": ["1", "2", "3"], "label": ["cat", "dog", "cat"],
                  "image": ["cat.png", "dog.png", str(layout["secrets"].parent / "private.png")]}).to_csv(
        table, index=False)
    monkeypatch.setenv("CARTOGRAPHER_DATA_ROOTS", str(layout["root"]))
    dataset = load_dataset(table)
    assert dataset.n_examples == 2
    assert [s.reason for s in dataset.skipped] == ["row 3 of images.csv: not a regular file inside the data folders, "
                                                    "or over the size cap"]
    with pytest.raises(DatasetError, match="outside the data folders"):
        load_dataset(layout["secrets"])
    assert load_dataset(sample_by_key("digits").path).n_examples > 0


def test_a_lazily_loaded_module_provides_its_classes(monkeypatch):
    """Packages such as transformers hand out their classes through a module __getattr__."""
    import types

    import torch

    lazy = types.ModuleType("lazy_arch")
    lazy.__getattr__ = lambda name: torch.nn.Linear if name == "Lazy" else (_ for _ in ()).throw(AttributeError(name))
    monkeypatch.setitem(sys.modules, "lazy_arch", lazy)
    assert check_architecture("lazy_arch:Lazy", Policy())[0] is torch.nn.Linear
    refused(check_architecture, "lazy_arch:Missing", Policy(), match="has no 'Missing'")
