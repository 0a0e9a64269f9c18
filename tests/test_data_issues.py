"""Data-issue checks (analytics.data_issues): each kind of issue planted in a bundled sample and
found, the clean samples left nearly unflagged, and the definitions checked against cleanlab
Datalab's own issue managers on the same graph."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFilter

from analytics.data_issues import IMAGE_PROPERTIES, ISSUE_TYPES, IssueOptions, check_dataset, issue_columns, leak_free_split
from analytics.data_issues.columns import class_imbalance, cross_validated_accuracy
from analytics.data_issues.duplicates import radius_edges
from analytics.data_issues.images import measure_image, property_scores, read_images
from analytics.data_issues.order import non_iid_scores, non_iid_test
from analytics.data_issues.splits import split_leaks
from analytics.datasets import load_dataset
from analytics.embeddings import compute_embeddings, tabular_features
from analytics.neighbors import build_knn
from analytics.samples import sample_by_key

ONLY_DUPLICATES = IssueOptions(non_iid=False, columns=False, images=False)


def text_vectors(texts) -> np.ndarray:
    """L2-normalised TF-IDF: a real text embedding that costs well under a second (MiniLM would
    take minutes on the test machine; the checks only see the graph it gives)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    tfidf = TfidfVectorizer(sublinear_tf=True, min_df=2, dtype=np.float32).fit_transform(list(texts))
    return tfidf.toarray()


def pixel_vectors(dataset) -> np.ndarray:
    """The images' own 8×8 grey pixels (the digits' native size) as vectors."""
    from analytics.images import load_image_batch

    return load_image_batch(dataset.table["image"].tolist(), size=8)[..., 0].reshape(dataset.n_examples, -1) / 255.0


def run(dataset, vectors, metric="cosine", options=None):
    graph = build_knn(vectors, k=15, metric=metric)
    return check_dataset(dataset, knn_indices=graph.indices, knn_distances=graph.distances, metric=metric,
                         options=options)


def with_rows(dataset, extra: pd.DataFrame):
    table = pd.concat([dataset.table, extra], ignore_index=True)
    return replace(dataset, table=table.astype({c: dataset.table[c].dtype for c in extra.columns}))


@pytest.fixture(scope="module")
def debian():
    return load_dataset(sample_by_key("debian-packages").path)


@pytest.fixture(scope="module")
def debian_vectors(debian):
    return text_vectors(debian.table["text"])


@pytest.fixture(scope="module")
def digits():
    return load_dataset(sample_by_key("digits").path)


@pytest.fixture(scope="module")
def breast_cancer():
    sample = sample_by_key("breast-cancer")
    return load_dataset(sample.path, roles=sample.roles)


class _Datalab:
    """What cleanlab's issue managers read from their Datalab: no stored statistics."""

    def get_info(self, name):
        return {}


def _csr(graph):
    from scipy.sparse import csr_matrix

    n, k = graph.indices.shape
    return csr_matrix((graph.distances.ravel().astype(np.float64), graph.indices.ravel(), np.arange(0, n * k + 1, k)),
                      shape=(n, n))


# ----------------------------------------------------------------------------- duplicates and leaks


def test_copies_with_small_edits_are_found_and_their_leaks_counted(debian):
    rng = np.random.default_rng(0)
    table = debian.table
    sources = rng.choice(np.flatnonzero(table["split"] == "train"), size=30, replace=False)
    edits = {
        "exact": lambda t: t,
        "whitespace": lambda t: "  " + t.replace(" ", "   ", 4) + "\n",
        "typo": lambda t: t.replace("e", "ee", 1).replace("a", "", 1),
    }
    kinds = [list(edits)[i % 3] for i in range(30)]
    copies = pd.DataFrame({
        "id": [f"copy-{i}" for i in range(30)],
        "label": table["label"].to_numpy()[sources],
        "text": [edits[kind](table["text"].iloc[s]) for s, kind in zip(sources, kinds)],
        "split": "test",  # every copy crosses from train to test
    })
    copies.loc[0, "label"] = next(c for c in debian.classes if c != copies.loc[0, "label"])  # one conflict
    planted = with_rows(debian, copies)
    issues = run(planted, text_vectors(planted.table["text"]), options=ONLY_DUPLICATES)
    columns = issues.columns
    n = debian.n_examples
    copy_rows = n + np.arange(30)
    assert list(columns.columns) == list(issue_columns(images=False)[:5])
    # each copy sits in its source's set, and every member is flagged
    assert (columns["duplicate_set"].to_numpy()[copy_rows] == columns["duplicate_set"].to_numpy()[sources]).all()
    assert (columns["duplicate_set"].to_numpy()[copy_rows] >= 0).all()
    assert columns["near_duplicate"].to_numpy()[np.concatenate([sources, copy_rows])].all()
    kind = columns["duplicate_kind"].to_numpy()
    hashed = np.array([k in ("exact", "whitespace") for k in kinds])
    assert (kind[copy_rows[hashed]] == "exact").all() and (kind[sources[hashed]] == "exact").all()
    assert (kind[copy_rows[~hashed]] == "near").all()
    # the planted label conflict, and only sets holding two labels
    conflict = columns["duplicate_label_conflict"].to_numpy()
    assert conflict[copy_rows[0]] and conflict[sources[0]]
    assert conflict.sum() <= 2 + issues.summary["duplicates"]["conflicting_sets"] * 3
    # leaks: every copy and its source leak, counted for the pair (test, train)
    leak = columns["split_leak"].to_numpy()
    assert leak[copy_rows].all() and leak[sources].all()
    pair = next(p for p in issues.summary["split_leaks"]["pairs"] if p["splits"] == ["test", "train"])
    assert pair["sets"] >= 30 and pair["examples_in"]["test"] >= 30 and pair["examples_in"]["train"] >= 30
    assert issues.summary["issues"]["split_leak"]["count"] == int(leak.sum())
    assert issues.summary["issues"]["split_leak"]["severity"] in ("medium", "high")
    # the leak-free split moves whole sets, and no set spans two splits any more
    new_split, moved = leak_free_split(planted.table["split"], columns["duplicate_set"].to_numpy())
    sets = columns["duplicate_set"].to_numpy()
    assert all(len(set(new_split[sets == s])) == 1 for s in np.unique(sets[sets >= 0]))
    assert moved == int((new_split != planted.table["split"].to_numpy()).sum()) >= 30
    assert moved == issues.summary["split_leaks"]["leak_free_split"]["moved"]
    assert not split_leaks(new_split, sets)[0].any()
    json.dumps(issues.summary)


def test_the_leak_free_split_moves_sets_to_their_majority_split():
    split = np.array(["train", "test", "test", "train", "test", "train", "train", None, "val"], dtype=object)
    sets = np.array([0, 0, 0, 1, 1, -1, -1, 1, 2])
    new, moved = leak_free_split(split, sets)
    # set 0: two in test, one in train -> test; set 1: a tie -> train (the largest split); set 2 stays
    assert list(new) == ["test", "test", "test", "train", "train", "train", "train", None, "val"]
    assert moved == 2
    leak, pairs = split_leaks(split, sets)
    assert list(leak) == [True, True, True, True, True, False, False, False, False]
    assert pairs == [{"splits": ["test", "train"], "sets": 2, "examples": 5, "examples_in": {"test": 3, "train": 2}}]


def test_near_copies_are_datalabs_on_the_same_graph(breast_cancer):
    from cleanlab.datalab.internal.issue_manager.duplicate import NearDuplicateIssueManager

    vectors = tabular_features(breast_cancer)
    rng = np.random.default_rng(1)
    jittered = vectors[:40] + rng.normal(scale=0.02, size=(40, vectors.shape[1])).astype(np.float32)
    graph = build_knn(np.vstack([vectors, jittered]), k=10, metric="euclidean")
    manager = NearDuplicateIssueManager(_Datalab(), k=10)
    manager.find_issues(knn_graph=_csr(graph))
    rows, cols, median, radius = radius_edges(graph.indices, graph.distances)
    ours = np.zeros(len(graph.indices), bool)
    ours[rows] = ours[cols] = True
    assert ours.sum() >= 80
    assert (ours == manager.issues["is_near_duplicate_issue"].to_numpy()).all()
    assert median == pytest.approx(manager.info["median_distance_to_nearest_neighbor"])


@pytest.mark.parametrize("sample", ["debian-packages", "digits", "breast-cancer"])
def test_clean_samples_raise_few_flags(sample, request):
    dataset = request.getfixturevalue({"debian-packages": "debian", "digits": "digits",
                                       "breast-cancer": "breast_cancer"}[sample])
    if dataset.kind == "text":
        vectors, metric = request.getfixturevalue("debian_vectors"), "cosine"
    elif dataset.kind == "image":
        vectors, metric = pixel_vectors(dataset), "euclidean"
    else:
        vectors, metric = tabular_features(dataset), "euclidean"
    issues = run(dataset, vectors, metric)
    found = issues.summary["issues"]
    n = dataset.n_examples
    # The Debian sample holds genuine near copies (template descriptions of plugin families,
    # "transitional dummy package" texts, some of them in different sections): a few percent.
    assert found["near_duplicate"]["count"] <= 0.05 * n
    assert found["split_leak"]["count"] <= 0.02 * n
    assert found["duplicate_label_conflict"]["count"] <= 0.01 * n
    for name in ("class_imbalance", "null", "null_or_constant_column", "identifier_column", "spurious_cue"):
        assert found[name]["count"] == 0, name
    if dataset.kind == "image":
        for name in IMAGE_PROPERTIES:
            assert found[name]["prevalent"] or found[name]["count"] <= 0.01 * n, name
        assert found["grayscale"]["prevalent"] and found["grayscale"]["severity"] == "none"
        assert "skipped" in issues.summary["non_iid"]  # an image folder's order is its folders'
    assert set(issues.summary["issues"]) <= set(ISSUE_TYPES)
    json.dumps(issues.summary)


# ----------------------------------------------------------------------------- order (non-IID)


def test_non_iid_finds_drift_along_the_rows_and_the_dates_but_not_in_a_shuffle(breast_cancer):
    rng = np.random.default_rng(0)
    shuffled = breast_cancer.table.sample(frac=1, random_state=3).reset_index(drop=True)
    shuffled["created"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.permutation(len(shuffled)), unit="D")
    # dates written as text, in the order of the diagnosis: a drift in time, not in the file
    by_label = np.argsort(np.argsort(shuffled["label"].to_numpy(), kind="stable"))
    shuffled["updated"] = (pd.Timestamp("2020-01-01") + pd.to_timedelta(by_label, unit="h")).strftime("%Y-%m-%d %H:%M")
    dataset = replace(breast_cancer, table=shuffled)
    vectors = tabular_features(replace(breast_cancer, table=shuffled.drop(columns=["created", "updated"])))
    options = IssueOptions(duplicates=False, columns=False)
    issues = run(dataset, vectors, "euclidean", options)
    assert issues.summary["non_iid"]["p_value"] > 0.05
    assert issues.summary["non_iid"]["time_columns"]["created"]["p_value"] > 0.05
    assert issues.summary["non_iid"]["time_columns"]["updated"]["p_value"] < 1e-3
    entry = issues.summary["issues"]["non_iid"]
    assert entry["count"] == 0 and entry["time_columns"] == ["updated"] and entry["severity"] == "medium"
    shuffled = shuffled.drop(columns=["updated"])
    # drift: the rows sorted by the first feature, and dates that follow the label
    drifting = shuffled.sort_values("mean_radius", kind="stable").reset_index(drop=True)
    drifting["created"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(
        np.argsort(np.argsort(drifting["label"].to_numpy(), kind="stable")), unit="D")
    dataset = replace(breast_cancer, table=drifting)
    issues = run(dataset, tabular_features(replace(dataset, table=drifting.drop(columns=["created"]))), "euclidean",
                 options)
    assert issues.summary["non_iid"]["p_value"] < 1e-3
    assert issues.summary["non_iid"]["time_columns"]["created"]["p_value"] < 1e-3
    entry = issues.summary["issues"]["non_iid"]
    assert entry["count"] > 0 and entry["severity"] in ("medium", "high")
    scores = issues.columns["non_iid_score"].to_numpy()
    assert entry["count"] == int((scores < entry["select"]["below"]).sum())
    assert sorted(scores[entry["examples"]]) == sorted(np.sort(scores)[:3])  # the lowest scores shown
    assert scores.mean() < run(replace(breast_cancer, table=shuffled), vectors, "euclidean",
                               options).columns["non_iid_score"].mean()


def test_non_iid_test_and_scores_are_datalabs(breast_cancer):
    from cleanlab.datalab.internal.issue_manager.noniid import NonIIDIssueManager

    vectors = tabular_features(breast_cancer)
    for order in (np.arange(len(vectors)), np.random.default_rng(0).permutation(len(vectors))):
        graph = build_knn(vectors[order], k=10, metric="euclidean")
        manager = NonIIDIssueManager(_Datalab(), k=10)
        manager.find_issues(knn_graph=_csr(graph))
        ours = non_iid_test(graph.indices)
        assert ours["statistic"] == pytest.approx(manager.statistics["ks"], abs=1e-12)
        assert ours["p_value"] == pytest.approx(manager.p_value, abs=1e-9)
        assert np.allclose(non_iid_scores(graph.indices, block=97), manager.issues["non_iid_score"], atol=1e-12)


# ----------------------------------------------------------------------------- classes and columns


def test_identifier_columns_that_give_away_the_label_are_leaks(debian, debian_vectors):
    table = debian.table.copy()
    by_label = np.argsort(table["label"].to_numpy(), kind="stable")
    table["row_number"] = np.argsort(by_label) + 1000  # numbered after sorting by label: a leak
    table["ticket"] = np.random.default_rng(0).permutation(len(table))  # an identifier, no leak
    table["id"] = [f"{label[:3]}-{i:05d}" for i, label in enumerate(table["label"])]  # the label in the name
    dataset = replace(debian, table=table)
    issues = run(dataset, debian_vectors, options=IssueOptions(duplicates=False, non_iid=False))
    leaks = {row["column"]: row for row in issues.summary["identifier_columns"]}
    assert leaks["row_number"]["leak"] and leaks["row_number"]["accuracy"] > 0.9
    assert leaks["id"]["leak"] and leaks["id"]["part"] == "prefix" and leaks["id"]["accuracy"] > 0.95
    assert not leaks["ticket"]["leak"] and leaks["ticket"]["score"] > 0.9
    assert sorted(issues.summary["issues"]["identifier_column"]["columns"]) == ["id", "row_number"]
    assert issues.summary["issues"]["identifier_column"]["severity"] == "high"
    described = {row["column"]: row for row in issues.summary["columns"]}
    assert described["row_number"]["identifier_like"] and described["row_number"]["sequential_integers"]
    # identifiers are not spurious cues: they are tested as leaks
    assert {"row_number", "ticket"}.isdisjoint(row["property"] for row in issues.summary["spurious_cues"])


def test_a_spurious_metadata_cue_is_found(debian, debian_vectors):
    rng = np.random.default_rng(0)
    table = debian.table.copy()
    codes = debian.label_codes
    honest = rng.random(len(table)) < 0.9
    table["camera"] = np.where(honest, np.array([f"cam-{c}" for c in codes]), rng.choice(["cam-x", "cam-y"], len(table)))
    table["batch"] = rng.choice(["a", "b", "c"], len(table))
    dataset = replace(debian, table=table)
    issues = run(dataset, debian_vectors, options=IssueOptions(duplicates=False, non_iid=False))
    cues = pd.DataFrame(issues.summary["spurious_cues"]).set_index("property")
    assert cues.index[0] == "camera" and cues.loc["camera", "cue"]
    assert cues.loc["camera", "score"] < 0.3 and cues.loc["camera", "accuracy"] > 0.85
    assert not cues.loc["batch", "cue"] and cues.loc["batch", "score"] > 0.95
    assert cues.loc["text_length", "kind"] == "text_length" and not cues.loc["text_length", "cue"]
    assert issues.summary["issues"]["spurious_cue"]["properties"] == ["camera"]


def test_cross_validated_accuracy_of_a_lookup_classifier():
    labels = np.repeat([0, 1, 2], 100)
    assert cross_validated_accuracy(labels.copy(), labels) == 300  # the column is the label
    assert cross_validated_accuracy(np.zeros(300, np.int64), labels) == 100  # the majority (a tie: class 0)
    noise = np.random.default_rng(0).integers(0, 50, 300)
    assert cross_validated_accuracy(noise, labels) < 140


def test_class_imbalance_for_the_dataset_and_per_class(debian):
    table = debian.table
    rare = table.index[table["label"] == "mail"][:5]
    keep = table.index.difference(table.index[table["label"] == "mail"]).union(rare)
    dataset = replace(debian, table=table.loc[keep].reset_index(drop=True))
    flagged, info = class_imbalance(dataset.label_codes, dataset.classes)
    assert info["under_represented"] == ["mail"] and info["rarest_class"] == "mail"
    assert flagged.sum() == 5 and info["imbalance_ratio"] == pytest.approx(200 / 5)
    per_class = {row["class"]: row for row in info["classes"]}
    assert per_class["mail"]["count"] == 5 and per_class["mail"]["share_of_uniform"] < 0.1
    balanced = class_imbalance(debian.label_codes, debian.classes)[1]
    assert balanced["under_represented"] == [] and balanced["evenness"] > 0.99


def test_null_rows_and_empty_or_constant_columns(breast_cancer):
    table = breast_cancer.table.copy()
    table["empty"] = np.nan
    table["version"] = "v1"
    features = [c for c in table.columns if c not in ("id", "label", "split")]
    table.loc[[3, 7], features] = np.nan
    dataset = replace(breast_cancer, table=table)
    issues = run(dataset, tabular_features(breast_cancer), "euclidean", IssueOptions(non_iid=False))
    found = issues.summary["issues"]
    assert sorted(found["null_or_constant_column"]["columns"]) == ["empty", "version"]
    assert found["null"]["count"] == 2 and found["null"]["select"]["rows"] == [3, 7]
    # two all-missing rows hash alike, but empty content is never an exact copy
    assert (issues.columns["duplicate_kind"].to_numpy()[[3, 7]] != "exact").all()


# ----------------------------------------------------------------------------- images


def _png(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_image_property_formulas_on_hand_made_images():
    black = measure_image(_png(Image.new("L", (40, 40), 0)))[2]
    strip = measure_image(_png(Image.new("RGB", (30, 10), (200, 40, 40))))[2]
    grey_rgb = measure_image(_png(Image.new("RGB", (40, 40), (90, 90, 90))))[2]
    raw = pd.DataFrame([black, strip, grey_rgb], columns=read_images([]).raw.columns)
    scores = property_scores(raw)
    assert scores.loc[0, "dark_score"] == 0 and scores.loc[0, "is_dark"] and scores.loc[0, "is_low_information"]
    assert scores.loc[1, "odd_aspect_ratio_score"] == pytest.approx(1 / 3) and scores.loc[1, "is_odd_aspect_ratio"]
    # brightness of (200, 40, 40): sqrt(0.241·200² + 0.691·40² + 0.068·40²) / 255
    assert scores.loc[1, "dark_score"] == pytest.approx(np.sqrt(0.241 * 200**2 + 0.759 * 40**2) / 255)
    assert not scores.loc[1, "is_grayscale"] and scores.loc[2, "is_grayscale"] and scores.loc[0, "is_grayscale"]


def test_a_dark_and_a_blurred_image_are_flagged(digits, tmp_path):
    """Digits drawn at 64×64 over a tonal gradient with a little sensor noise (photo-like: many
    grey levels, sharp strokes); one underexposed, one out of focus."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:64, 0:64]
    rows = []
    for i, path in enumerate(digits.table["image"].tolist()[::30]):
        with Image.open(path) as image:
            ink = np.asarray(image.convert("L").resize((64, 64), Image.Resampling.BILINEAR)) / 255.0
        pixels = (x + y) * 2.0 * ink + rng.normal(0, 6, size=ink.shape)
        if i == 5:
            pixels = pixels * 0.2  # underexposed
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        if i == 9:
            image = image.filter(ImageFilter.GaussianBlur(3))  # out of focus
        target = tmp_path / f"img_{i}.png"
        image.save(target)
        rows.append({"id": f"img-{i}", "label": digits.table["label"].iloc[i * 30], "image": str(target)})
    csv = tmp_path / "images.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    dataset = load_dataset(csv)
    issues = run(dataset, compute_embeddings(dataset), "euclidean", IssueOptions(non_iid=False, columns=False))
    columns = issues.columns
    assert set(issue_columns(images=True)) - {"non_iid_score"} == set(columns.columns)
    assert np.flatnonzero(columns["is_dark"]).tolist() == [5]
    assert np.flatnonzero(columns["is_blurry"]).tolist() == [9]
    for name in ("light", "low_information", "odd_size", "odd_aspect_ratio"):
        assert not columns[f"is_{name}"].any(), name
    assert issues.summary["issues"]["dark"]["examples"] == [5]
    assert issues.summary["issues"]["dark"]["select"] == {"column": "is_dark"}
    assert issues.summary["issues"]["blurry"]["severity"] == "medium"  # 1 of 60 images


# ----------------------------------------------------------------------------- options


def test_checks_can_be_skipped(breast_cancer):
    vectors = tabular_features(breast_cancer)
    issues = run(breast_cancer, vectors, "euclidean", IssueOptions(duplicates=False, non_iid=False))
    assert issues.columns.shape == (breast_cancer.n_examples, 0)
    assert "near_duplicate" not in issues.summary["issues"] and "class_imbalance" in issues.summary["issues"]
    issues = run(breast_cancer, vectors, "euclidean", IssueOptions(columns=False))
    assert list(issues.columns.columns) == list(issue_columns(images=False))
    assert "class_imbalance" not in issues.summary["issues"]
    with pytest.raises(ValueError, match="neighbour graph has 10 rows"):
        check_dataset(breast_cancer, knn_indices=np.zeros((10, 3), np.int32), knn_distances=np.zeros((10, 3)),
                      metric="cosine")
