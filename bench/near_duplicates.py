"""Benchmark: near-duplicate precision, recall and time on copies planted in real data, and the
cost of every data-issue check at 1M examples.

**Quality** (``--part quality``). Two bundled datasets: the Debian package descriptions (text,
MiniLM embeddings, cosine) and the digits (8×8 images, the default ``pixels`` embedding,
euclidean). The kNN graph (k = 15, exact) of the unplanted data is built first, and sources are
drawn (seeded) from the examples that neither our check nor Datalab flags there, so that a
planted copy's true set is exactly {copy, source}. One copy of each source is planted, with
one edit from each kind in turn:

- text: ``exact`` (same string), ``whitespace`` (spaces and newlines added), ``typo`` (two
  swapped letters), ``word_swap`` (10% of the words replaced by random words of the corpus),
  ``sentence_dropped`` (a sentence other than the first removed), ``appended`` (a few words
  added at both ends);
- images: ``exact_bytes`` (the file copied), ``re_encoded`` (same pixels, other PNG
  compression), ``brighter`` (brightness × 1.15), ``noise`` (uniform ±12 grey levels),
  ``blur`` (Gaussian, radius 0.5), ``shifted`` (rolled by one pixel).

Embeddings and the graph are then recomputed on the planted dataset, and every method gets
the same inputs:

- **ours**: ``analytics.data_issues.check_dataset`` with only the duplicate check (content
  hash, kNN radius at Datalab's 0.13 × median, text shingles / perceptual hashes), timed from
  the dataset and the graph (for images this includes reading every file once);
- **ours, graph only**: the same without the text-shingle and perceptual-hash edges;
- **Datalab**: cleanlab's ``Datalab.find_issues(features=…, knn_graph=<the same graph>,
  issue_types={"near_duplicate": {}})`` (needs the ``datasets`` package:
  ``make bench-peers``);
- **FiftyOne-style exact hashing**: MD5 of the raw content (the text's UTF-8 bytes, the image
  file), equal digests grouped, as FiftyOne Brain's ``compute_exact_duplicates`` does with
  file hashes;
- text: **MinHash LSH** (``datasketch``, 128 permutations, Jaccard threshold 0.8, the same
  character 5-gram shingles) over all texts, when datasketch is installed;
- images: **CleanVision-style perceptual hashing**: equal ``imagehash.phash`` (CleanVision's
  near-duplicate rule).

Metrics, on the planted copies: **recall** = share of copies whose predicted set holds their
source; **precision** = share of predicted pairs involving a planted copy that are (copy,
source) (pairs: all pairs within a predicted set; Datalab's per-example lists as it gives
them); recall per edit kind; and **base flags**, the untouched examples flagged (genuine near
copies of the original data or false alarms: not scored).

**Scale** (``--part scale``), in a child process so that its peak memory is its own: a
synthetic 1M-example text dataset (60-word texts from the Debian vocabulary, 1% exact and 1%
edited copies, a split, two metadata columns and a date) and a 1M-row table (10 numeric
columns, one categorical, 1% duplicated rows), each with a synthetic 1M × 15 graph (each
example's neighbours drawn from its cluster of about 1,000, sorted log-normal distances, the
planted copies linked to their sources). Time of ``check_dataset`` with every check, and the
resident memory it adds above what the data and the graph already hold (sampled every 0.05 s).
Images are measured apart (``--images``, 20,000 by default): every check on 32×32 RGB PNG
files, and the one pass over the files projected to 1M (it reads and decodes every file, so
it grows with the files, not with the graph).

Results: ``bench/results/near_duplicates.json``; a Markdown summary on stdout.

Usage::

    .venv/bin/python bench/near_duplicates.py                 # both parts
    .venv/bin/python bench/near_duplicates.py --part quality
    .venv/bin/python bench/near_duplicates.py --part scale --n 1000000 --images 20000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.map_speed import machine_info  # noqa: E402

TEXT_KINDS = ("exact", "whitespace", "typo", "word_swap", "sentence_dropped", "appended")
IMAGE_KINDS = ("exact_bytes", "re_encoded", "brighter", "noise", "blur", "shifted")
K = 15
SOURCES = 150


# ----------------------------------------------------------------------------- planting


def edit_text(text: str, kind: str, rng: np.random.Generator, vocabulary: list[str]) -> str:
    words = text.split()
    if kind == "exact":
        return text
    if kind == "whitespace":
        return "  " + text.replace(". ", ".\n\n").replace(" ", "  ", 3) + " \n"
    if kind == "typo":
        for _ in range(2):
            long_words = [i for i, w in enumerate(words) if len(w) > 3]
            i = long_words[rng.integers(len(long_words))]
            w = words[i]
            j = int(rng.integers(1, len(w) - 2))
            words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
        return " ".join(words)
    if kind == "word_swap":
        for i in rng.choice(len(words), size=max(1, len(words) // 10), replace=False):
            words[i] = vocabulary[rng.integers(len(vocabulary))]
        return " ".join(words)
    if kind == "sentence_dropped":
        sentences = re.split(r"(?<=\.)\s+", text)
        if len(sentences) > 1:
            del sentences[int(rng.integers(1, len(sentences)))]
        else:
            del words[-max(1, len(words) // 5):]
            return " ".join(words)
        return " ".join(sentences)
    if kind == "appended":
        return "Package: " + text + " See the homepage for details."
    raise ValueError(kind)


def edit_image(source: Path, target: Path, kind: str, rng: np.random.Generator) -> None:
    from PIL import Image, ImageEnhance, ImageFilter

    if kind == "exact_bytes":
        shutil.copyfile(source, target)
        return
    with Image.open(source) as opened:
        image = opened.convert("L")
    if kind == "re_encoded":
        image.save(target, compress_level=1)
        return
    if kind == "brighter":
        image = ImageEnhance.Brightness(image).enhance(1.15)
    elif kind == "noise":
        pixels = np.asarray(image).astype(np.int64) + rng.integers(-12, 13, size=(image.height, image.width))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    elif kind == "blur":
        image = image.filter(ImageFilter.GaussianBlur(0.5))
    elif kind == "shifted":
        image = Image.fromarray(np.roll(np.asarray(image), 1, axis=1))
    else:
        raise ValueError(kind)
    image.save(target)


# ----------------------------------------------------------------------------- methods


def _pairs_from_sets(sets: np.ndarray, rows: np.ndarray) -> set[tuple[int, int]]:
    """All pairs within the predicted sets of ``rows`` (set ids, −1 none)."""
    pairs = set()
    for row in rows:
        s = sets[row]
        if s < 0:
            continue
        for other in np.flatnonzero(sets == s):
            if other != row:
                pairs.add((min(row, int(other)), max(row, int(other))))
    return pairs


def _sets_from_pairs(n: int, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    from analytics.data_issues.duplicates import duplicate_sets

    return duplicate_sets(n, np.asarray(first, np.int64), np.asarray(second, np.int64))


def _sets_from_keys(keys: list) -> np.ndarray:
    codes, _ = pd.factorize(pd.Series(keys, dtype=object))
    counts = np.bincount(codes[codes >= 0])
    return np.where((codes >= 0) & (counts[np.maximum(codes, 0)] > 1), codes, -1)


def run_ours(dataset, graph, *, content_checks: bool) -> tuple[np.ndarray, float]:
    from analytics.data_issues import IssueOptions, check_dataset
    from analytics.data_issues.duplicates import find_duplicates, row_hashes, text_hashes

    start = time.perf_counter()
    if content_checks:
        options = IssueOptions(non_iid=False, columns=False, images=False)
        issues = check_dataset(dataset, knn_indices=graph.indices, knn_distances=graph.distances,
                               metric=graph.metric, options=options)
        sets = issues.columns["duplicate_set"].to_numpy()
    else:
        table = dataset.table
        if dataset.kind == "image":
            from analytics.data_issues.images import read_images

            readout = read_images(table["image"].tolist(), phash=False)
            content = (readout.byte_hashes, readout.readable)
        elif "text" in table.columns:
            content = text_hashes(table["text"])
        else:
            content = row_hashes(table[dataset.feature_columns])
        sets = find_duplicates(dataset.label_codes, graph.indices, graph.distances,
                               content_hashes=content).duplicate_set
    return sets, time.perf_counter() - start


def run_datalab(dataset, graph) -> tuple[np.ndarray, list, float] | None:
    try:
        from cleanlab import Datalab
        from scipy.sparse import csr_matrix

        start = time.perf_counter()
        n, k = graph.indices.shape
        knn_graph = csr_matrix((graph.distances.ravel().astype(np.float64), graph.indices.ravel(),
                                np.arange(0, n * k + 1, k)), shape=(n, n))
        lab = Datalab(data={"label": dataset.label_codes}, label_name="label", verbosity=0)
        lab.find_issues(knn_graph=knn_graph, issue_types={"near_duplicate": {}})
        flagged = lab.issues["is_near_duplicate_issue"].to_numpy()
        lists = lab.get_info("near_duplicate")["near_duplicate_sets"]
        return flagged, lists, time.perf_counter() - start
    except ImportError as error:
        print(f"Datalab not run: {error}", file=sys.stderr)
        return None


def _content_bytes(dataset) -> list[bytes]:
    if dataset.kind == "image":
        out = []
        for path in dataset.table["image"]:
            with open(path, "rb") as handle:
                out.append(handle.read())
        return out
    return [str(t).encode("utf-8") for t in dataset.table["text"]]


def run_exact_hashing(dataset) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    digests = [hashlib.md5(data).hexdigest() for data in _content_bytes(dataset)]
    return _sets_from_keys(digests), time.perf_counter() - start


def run_minhash_lsh(dataset) -> tuple[np.ndarray, float] | None:
    try:
        from datasketch import MinHash, MinHashLSH
    except ImportError:
        return None
    def shingles(text: str) -> list[bytes]:
        text = " ".join(str(text).lower().split())
        return list({text[i:i + 5].encode() for i in range(max(1, len(text) - 4))})

    start = time.perf_counter()
    texts = dataset.table["text"].tolist()
    signatures = MinHash.bulk([shingles(t) for t in texts], num_perm=128)
    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    for i, signature in enumerate(signatures):
        lsh.insert(i, signature)
    first, second = [], []
    for i, signature in enumerate(signatures):
        for j in lsh.query(signature):
            if j != i:
                first.append(i)
                second.append(j)
    sets = _sets_from_pairs(len(texts), np.array(first), np.array(second))
    return sets, time.perf_counter() - start


def run_phash_equal(dataset) -> tuple[np.ndarray, float]:
    import imagehash
    from PIL import Image

    start = time.perf_counter()
    keys = []
    for path in dataset.table["image"]:
        with Image.open(path) as image:
            keys.append(str(imagehash.phash(image)))
    return _sets_from_keys(keys), time.perf_counter() - start


# ----------------------------------------------------------------------------- scoring


def score(name: str, n_base: int, sources: np.ndarray, kinds: list[str], seconds: float,
          sets: np.ndarray | None = None, lists: list | None = None, flagged: np.ndarray | None = None) -> dict:
    """Recall, precision and base flags of one method (sets, or Datalab's per-example lists)."""
    copies = n_base + np.arange(len(sources))
    truth = {(int(s), int(c)) for s, c in zip(sources, copies)}
    planted = set(copies.tolist())
    if sets is not None:
        flagged = sets >= 0
        predicted = _pairs_from_sets(sets, copies)
    else:
        predicted = set()
        for i, neighbours in enumerate(lists):
            for j in neighbours:
                if i in planted or int(j) in planted:
                    predicted.add((min(i, int(j)), max(i, int(j))))
    found = np.array([(int(s), int(c)) in predicted for s, c in zip(sources, copies)])
    involved = [p for p in predicted if p[0] in planted or p[1] in planted]
    correct = sum(p in truth for p in involved)
    untouched = np.ones(len(flagged), bool)
    untouched[copies] = False
    untouched[sources] = False
    per_kind = {kind: float(found[[k == kind for k in kinds]].mean()) for kind in dict.fromkeys(kinds)}
    return {"method": name, "recall": float(found.mean()),
            "precision": float(correct / len(involved)) if involved else None,
            "predicted_pairs_with_copies": len(involved), "base_flags": int(flagged[untouched].sum()),
            "flagged": int(flagged.sum()), "seconds": round(seconds, 3), "recall_by_kind": per_kind}


# ----------------------------------------------------------------------------- quality


def compare_methods(dataset, graph, n_base: int, sources: np.ndarray, kinds: list[str]) -> list[dict]:
    """The methods every dataset gets: ours (with and without the content checks), Datalab and
    exact hashing, scored on the planted copies."""
    results = []
    sets, seconds = run_ours(dataset, graph, content_checks=True)
    results.append(score("ours", n_base, sources, kinds, seconds, sets=sets))
    sets, seconds = run_ours(dataset, graph, content_checks=False)
    results.append(score("ours, graph only", n_base, sources, kinds, seconds, sets=sets))
    datalab = run_datalab(dataset, graph)
    if datalab is not None:
        flagged, lists, seconds = datalab
        results.append(score("Datalab near_duplicate", n_base, sources, kinds, seconds, lists=lists, flagged=flagged))
    sets, seconds = run_exact_hashing(dataset)
    results.append(score("FiftyOne-style exact hashing (MD5)", n_base, sources, kinds, seconds, sets=sets))
    return results


def _graph(vectors: np.ndarray, metric: str):
    from analytics.neighbors import build_knn

    return build_knn(vectors, k=K, metric=metric)


def _base_flags(dataset, graph) -> np.ndarray:
    sets, _ = run_ours(dataset, graph, content_checks=True)
    flagged = sets >= 0
    datalab = run_datalab(dataset, graph)
    if datalab is not None:
        flagged |= datalab[0]
    return flagged


def quality_text(work: Path, seed: int) -> dict:
    from analytics.datasets import load_dataset
    from analytics.embeddings import encode_texts
    from analytics.samples import sample_by_key

    base = load_dataset(sample_by_key("debian-packages").path)
    texts = base.table["text"].tolist()
    cache = work / "debian_minilm.npy"
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    if cache.exists() and (work / "debian_minilm.sha").read_text() == digest:
        base_vectors = np.load(cache)
    else:
        base_vectors = encode_texts(texts)
        np.save(cache, base_vectors)
        (work / "debian_minilm.sha").write_text(digest)
    clean = ~_base_flags(base, _graph(base_vectors, "cosine"))
    rng = np.random.default_rng(seed)
    sources = np.sort(rng.choice(np.flatnonzero(clean), size=SOURCES, replace=False))
    kinds = [TEXT_KINDS[i % len(TEXT_KINDS)] for i in range(SOURCES)]
    vocabulary = sorted({w for t in texts for w in t.split() if w.isalpha()})
    copies = [edit_text(texts[s], kind, rng, vocabulary) for s, kind in zip(sources, kinds)]
    table = pd.concat([base.table[["id", "text", "label", "split"]],
                       pd.DataFrame({"id": [f"copy-{i}" for i in range(SOURCES)], "text": copies,
                                     "label": base.table["label"].to_numpy()[sources],
                                     "split": base.table["split"].to_numpy()[sources]})], ignore_index=True)
    path = work / "debian_planted.csv"
    table.to_csv(path, index=False)
    dataset = load_dataset(path)
    vectors = np.vstack([base_vectors, encode_texts(copies)])
    graph = _graph(vectors, "cosine")
    n_base = base.n_examples
    results = compare_methods(dataset, graph, n_base, sources, kinds)
    minhash = run_minhash_lsh(dataset)
    if minhash is not None:
        results.append(score("MinHash LSH (datasketch, J ≥ 0.8)", n_base, sources, kinds, minhash[1], sets=minhash[0]))
    return {"dataset": "debian-packages", "embedding": "minilm (cosine)", "n_base": n_base, "copies": SOURCES,
            "kinds": list(TEXT_KINDS), "methods": results}


def quality_images(work: Path, seed: int) -> dict:
    from analytics.datasets import load_dataset
    from analytics.embeddings import compute_embeddings
    from analytics.samples import sample_by_key

    base = load_dataset(sample_by_key("digits").path)
    base_table = base.table[["id", "label", "image"]]
    base_csv = work / "digits_base.csv"
    base_table.to_csv(base_csv, index=False)
    base_dataset = load_dataset(base_csv)  # the same images as a table: rows as the folder gives them
    clean = ~_base_flags(base_dataset, _graph(compute_embeddings(base_dataset), "euclidean"))
    rng = np.random.default_rng(seed)
    sources = np.sort(rng.choice(np.flatnonzero(clean), size=SOURCES, replace=False))
    kinds = [IMAGE_KINDS[i % len(IMAGE_KINDS)] for i in range(SOURCES)]
    folder = work / "digits_copies"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    paths = []
    for i, (s, kind) in enumerate(zip(sources, kinds)):
        target = folder / f"copy_{i:03d}.png"
        edit_image(Path(base_table["image"].iloc[s]), target, kind, rng)
        paths.append(str(target))
    table = pd.concat([base_table, pd.DataFrame({"id": [f"copy-{i}" for i in range(SOURCES)],
                                                 "label": base_table["label"].to_numpy()[sources],
                                                 "image": paths})], ignore_index=True)
    path = work / "digits_planted.csv"
    table.to_csv(path, index=False)
    dataset = load_dataset(path)
    graph = _graph(compute_embeddings(dataset), "euclidean")
    n_base = base.n_examples
    results = compare_methods(dataset, graph, n_base, sources, kinds)
    sets, seconds = run_phash_equal(dataset)
    results.append(score("CleanVision-style equal perceptual hash", n_base, sources, kinds, seconds, sets=sets))
    return {"dataset": "digits", "embedding": "pixels (euclidean)", "n_base": n_base, "copies": SOURCES,
            "kinds": list(IMAGE_KINDS), "methods": results}


# ----------------------------------------------------------------------------- scale


def synthetic_graph(n: int, rng: np.random.Generator, sources: np.ndarray, copies: np.ndarray,
                    copy_distance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each example's K neighbours drawn from its cluster (~1,000 members), log-normal sorted
    distances (median first-neighbour distance 0.4); each copy and its source linked first."""
    cluster = rng.integers(0, max(1, n // 1000), size=n)
    order = np.argsort(cluster, kind="stable")
    sizes = np.bincount(cluster)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    position = np.empty(n, np.int64)
    position[order] = np.arange(n) - starts[cluster[order]]
    size = sizes[cluster][:, None]
    offsets = rng.integers(1, np.maximum(size, 2), size=(n, K))
    indices = order[starts[cluster][:, None] + (position[:, None] + offsets) % size].astype(np.int32)
    distances = np.sort(rng.lognormal(np.log(0.4), 0.4, size=(n, K)).astype(np.float32), axis=1)
    indices[copies, 0], indices[sources, 0] = sources, copies
    distances[copies, 0] = distances[sources, 0] = copy_distance
    return indices, distances


def _text_dataset(n: int, rng: np.random.Generator):
    from analytics.datasets import ColumnRoles, Dataset
    from analytics.samples import sample_by_key

    vocabulary = np.array(sorted({w for t in pd.read_csv(sample_by_key("debian-packages").path)["text"]
                                  for w in t.split()}), dtype=object)
    words = rng.choice(vocabulary, size=(n, 60))
    texts = np.array([" ".join(row) for row in words], dtype=object)
    del words
    n_copies = n // 100
    sources, copies = rng.permutation(n)[:4 * n_copies].reshape(2, -1)
    texts[copies[:n_copies]] = texts[sources[:n_copies]]
    texts[copies[n_copies:]] = [t.replace(" ", "  ", 3)[:-3] for t in texts[sources[n_copies:]]]
    labels = rng.integers(0, 8, size=n)
    labels[copies] = labels[sources]
    table = pd.DataFrame({
        "id": pd.array([f"doc-{i}" for i in range(n)], dtype="string"),
        "label": pd.array([f"class_{c}" for c in labels], dtype="string"),
        "text": pd.array(texts, dtype="string"),
        "split": pd.array(rng.choice(["train", "validation", "test"], size=n, p=[0.8, 0.1, 0.1]), dtype="string"),
        "source": pd.array(rng.choice([f"site_{i}" for i in range(20)], size=n), dtype="string"),
        "created": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 365 * 86400, size=n), unit="s"),
    })
    dataset = Dataset(name="synthetic-text", source=Path("synthetic.parquet"), table=table,
                      classes=tuple(f"class_{c}" for c in range(8)), kind="text",
                      roles=ColumnRoles(), fingerprint="synthetic")
    distance = np.concatenate([np.zeros(n_copies), np.full(n_copies, 0.01)]).astype(np.float32)
    return dataset, sources, copies, distance


def _table_dataset(n: int, rng: np.random.Generator):
    from analytics.datasets import ColumnRoles, Dataset

    features = {f"x{i}": rng.normal(size=n).round(3) for i in range(10)}
    n_copies = n // 100
    sources, copies = rng.permutation(n)[:2 * n_copies].reshape(2, -1)
    for values in features.values():
        values[copies] = values[sources]
    labels = rng.integers(0, 2, size=n)
    labels[copies] = labels[sources]
    table = pd.DataFrame({"id": pd.array([f"row-{i}" for i in range(n)], dtype="string"),
                          "label": pd.array([f"class_{c}" for c in labels], dtype="string"),
                          "split": pd.array(rng.choice(["train", "test"], size=n, p=[0.8, 0.2]), dtype="string"),
                          **features,
                          "region": pd.array(rng.choice(list("abcdef"), size=n), dtype="string")})
    dataset = Dataset(name="synthetic-table", source=Path("synthetic.parquet"), table=table,
                      classes=("class_0", "class_1"), kind="tabular", roles=ColumnRoles(), fingerprint="synthetic")
    return dataset, sources, copies, np.zeros(n_copies, np.float32)


def scale_child(n: int, kind: str, seed: int) -> dict:
    """Build one synthetic dataset and graph, then time ``check_dataset`` and sample its memory."""
    import psutil

    from analytics.data_issues import check_dataset

    rng = np.random.default_rng(seed)
    dataset, sources, copies, distance = (_text_dataset if kind == "text" else _table_dataset)(n, rng)
    indices, distances = synthetic_graph(n, rng, sources, copies, distance)
    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = [baseline]
    running = threading.Event()
    running.set()

    def sample() -> None:
        while running.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start, cpu = time.perf_counter(), time.process_time()
    issues = check_dataset(dataset, knn_indices=indices, knn_distances=distances, metric="cosine")
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    running.clear()
    sampler.join()
    summary = issues.summary
    found = issues.columns["near_duplicate"].to_numpy()[copies].mean()
    return {"kind": kind, "n": n, "k": K, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
            "load_average_before": os.getloadavg(), "timings_s": summary["timings_s"],
            "rss_before_gb": round(baseline / 1e9, 2), "rss_peak_gb": round(peak[0] / 1e9, 2),
            "added_peak_gb": round((peak[0] - baseline) / 1e9, 2),
            "planted_copies_found": float(found),
            "counts": {name: entry["count"] for name, entry in summary["issues"].items()},
            "non_iid_p_value": summary["non_iid"]["p_value"],
            "text_pairs_compared": (summary["duplicates"].get("text_shingles") or {}).get("compared_pairs")}


def image_scale_child(n: int, seed: int, folder: Path) -> dict:
    """Time the image pass (bytes hash, perceptual hash, CleanVision properties) on ``n`` 32×32
    RGB PNG files (a CIFAR-sized image), with every check on a synthetic graph, and project
    the image pass to 1M files."""
    from PIL import Image

    from analytics.datasets import ColumnRoles, Dataset
    from analytics.data_issues import check_dataset

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img_{i:06d}.png"
        if not path.exists():
            pixels = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8).repeat(4, 0).repeat(4, 1)
            Image.fromarray(pixels).save(path)
        paths.append(str(path))
    table = pd.DataFrame({"id": pd.array([f"img-{i}" for i in range(n)], dtype="string"),
                          "label": pd.array([f"class_{c}" for c in rng.integers(0, 10, size=n)], dtype="string"),
                          "image": pd.array(paths, dtype="string")})
    dataset = Dataset(name="synthetic-images", source=Path("synthetic.csv"), table=table,
                      classes=tuple(f"class_{c}" for c in range(10)), kind="image", roles=ColumnRoles(),
                      fingerprint="synthetic")
    indices, distances = synthetic_graph(n, rng, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    start, cpu = time.perf_counter(), time.process_time()
    issues = check_dataset(dataset, knn_indices=indices, knn_distances=distances, metric="euclidean")
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    read = issues.summary["timings_s"]["read_images"]
    return {"kind": "images", "n": n, "image": "32×32 RGB PNG", "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
            "load_average_before": os.getloadavg(), "timings_s": issues.summary["timings_s"],
            "ms_per_image_read": round(1000 * read / n, 3),
            "projected_1m_image_pass_s": round(read * 1_000_000 / n, 1)}


def scale(n: int, seed: int, n_images: int, work: Path) -> list[dict]:
    out = []
    for kind in ("text", "table", "images"):
        size = n_images if kind == "images" else n
        result = subprocess.run([sys.executable, __file__, "--scale-child", kind, "--n", str(size), "--seed", str(seed),
                                 "--out", str(work.parent.parent)],
                                capture_output=True, text=True, cwd=REPO)
        if result.returncode != 0:
            raise RuntimeError(f"scale child ({kind}) failed:\n{result.stderr[-4000:]}")
        out.append(json.loads(result.stdout.strip().splitlines()[-1]))
    return out


# ----------------------------------------------------------------------------- report


def markdown(results: dict) -> str:
    lines = []
    for block in results.get("quality", []):
        lines += [f"\n**{block['dataset']}** ({block['n_base']:,} examples + {block['copies']} planted copies, "
                  f"{block['embedding']}, k = {K})\n",
                  "| method | recall | precision | base flags | time (s) | recall by edit |", "|---|---|---|---|---|---|"]
        for m in block["methods"]:
            by_kind = ", ".join(f"{k} {v:.2f}" for k, v in m["recall_by_kind"].items())
            precision = "–" if m["precision"] is None else f"{m['precision']:.3f}"
            lines.append(f"| {m['method']} | {m['recall']:.3f} | {precision} | {m['base_flags']} | "
                         f"{m['seconds']:.2f} | {by_kind} |")
    if results.get("scale"):
        lines += ["\n| data (× 15 graph) | all checks, wall (s) | CPU (s) | per check, wall (s) | added peak RSS (GB) "
                  "| copies found |", "|---|---|---|---|---|---|"]
        for s in results["scale"]:
            if s["kind"] == "images":
                lines.append(f"| images ({s['n']:,} × {s['image']}) | {s['seconds']} | {s['cpu_seconds']} | "
                             f"{', '.join(f'{k} {v}' for k, v in s['timings_s'].items())} | – | – |")
                continue
            lines.append(f"| {s['kind']} ({s['n']:,}) | {s['seconds']} | {s['cpu_seconds']} | "
                         f"{', '.join(f'{k} {v}' for k, v in s['timings_s'].items())} | {s['added_peak_gb']} | "
                         f"{s['planted_copies_found']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["quality", "scale", "both"], default="both")
    parser.add_argument("--n", type=int, default=1_000_000, help="examples for the scale part")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    parser.add_argument("--images", type=int, default=20_000, help="image files for the scale part's image pass")
    parser.add_argument("--scale-child", choices=["text", "table", "images"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    work = args.out / "data" / "near_duplicates"
    if args.scale_child == "images":
        print(json.dumps(image_scale_child(args.n, args.seed, work / f"images_{args.n}")))
        return 0
    if args.scale_child:
        print(json.dumps(scale_child(args.n, args.scale_child, args.seed)))
        return 0
    out_file = args.out / "near_duplicates.json"
    results = json.loads(out_file.read_text()) if out_file.exists() else {}
    results["machine"] = {**machine_info(), "load_average": os.getloadavg()}
    work.mkdir(parents=True, exist_ok=True)
    if args.part in ("quality", "both"):
        results["quality"] = [quality_text(work, args.seed), quality_images(work, args.seed)]
    if args.part in ("scale", "both"):
        results["scale"] = scale(args.n, args.seed, args.images, work)
    args.out.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps(results, indent=2))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
