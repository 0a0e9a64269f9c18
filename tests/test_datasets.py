"""The dataset contract: every loader, role detection, ids, fingerprint, and every bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from analytics.datasets import (
    NO_COLUMN,
    ColumnRoles,
    DatasetError,
    MissingLabelsError,
    load_dataset,
    peek_columns,
    source_stamp,
)

ROWS = [
    {"id": "a1", "text": "the cat sat on the mat today", "label": "pets", "split": "train", "stars": 4},
    {"id": "a2", "text": "a dog chased the ball in the park", "label": "pets", "split": "train", "stars": 5},
    {"id": "a3", "text": "stocks fell sharply in early trading", "label": "finance", "split": "test", "stars": 2},
    {"id": "a4", "text": "the central bank raised interest rates", "label": "finance", "split": "train", "stars": 3},
]


def write_csv(path, rows=ROWS, sep=","):
    pd.DataFrame(rows).to_csv(path, index=False, sep=sep)
    return path


def make_image(path, colour=0, size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, color=colour).save(path)
    return path


# --------------------------------------------------------------------------- loaders


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".jsonl", ".json"])
def test_every_table_format_loads_the_same_table(tmp_path, suffix):
    path = tmp_path / f"data{suffix}"
    frame = pd.DataFrame(ROWS)
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_json(path, orient="records")
    dataset = load_dataset(path)
    assert dataset.kind == "text"
    assert list(dataset.table.columns) == ["id", "label", "text", "split", "stars"]
    assert dataset.table["id"].tolist() == ["a1", "a2", "a3", "a4"]
    assert dataset.classes == ("finance", "pets")
    assert dataset.label_codes.tolist() == [1, 1, 0, 0]
    assert dataset.roles == ColumnRoles(id="id", label="label", text="text", image=NO_COLUMN, split="split")
    assert dataset.feature_columns == ["stars"]


def test_same_content_gives_same_fingerprint_across_formats_of_a_file_and_reloads(tmp_path):
    first = load_dataset(write_csv(tmp_path / "a.csv"))
    again = load_dataset(write_csv(tmp_path / "b.csv"))
    assert first.fingerprint == again.fingerprint
    changed = [dict(r) for r in ROWS]
    changed[2]["label"] = "pets"
    assert load_dataset(write_csv(tmp_path / "c.csv", changed)).fingerprint != first.fingerprint


def test_image_folder_one_subfolder_per_class(tmp_path):
    root = tmp_path / "imgs"
    for i in range(3):
        make_image(root / "cat" / f"{i}.png", colour=10 * i)
        make_image(root / "dog" / f"{i}.jpg", colour=200 - i)
    dataset = load_dataset(root)
    assert dataset.kind == "image"
    assert dataset.classes == ("cat", "dog")
    assert dataset.n_examples == 6
    assert dataset.table["id"].tolist()[:2] == ["cat/0.png", "cat/1.png"]
    assert all(p.startswith(str(root.resolve())) for p in dataset.table["image"])
    assert dataset.skipped == ()
    assert "split" not in dataset.table.columns


def test_image_folder_with_split_folders(tmp_path):
    root = tmp_path / "imgs"
    for split in ("train", "test"):
        for label in ("a", "b"):
            make_image(root / split / label / "x.png")
    dataset = load_dataset(root)
    assert sorted(dataset.table["split"].unique()) == ["test", "train"]
    assert dataset.table["id"].is_unique
    assert dataset.classes == ("a", "b")


def test_image_fingerprint_follows_image_bytes(tmp_path):
    root = tmp_path / "imgs"
    make_image(root / "a" / "1.png", colour=0)
    make_image(root / "b" / "1.png", colour=255)
    before = load_dataset(root).fingerprint
    make_image(root / "a" / "1.png", colour=128)
    assert load_dataset(root).fingerprint != before


def test_image_column_in_a_table_resolves_relative_paths(tmp_path):
    make_image(tmp_path / "pics" / "x.png")
    make_image(tmp_path / "pics" / "y.png", colour=255)
    (tmp_path / "pics" / "broken.png").write_bytes(b"not really a png")
    path = write_csv(tmp_path / "meta.csv", [
        {"image_path": "pics/x.png", "label": "a"},
        {"image_path": "pics/y.png", "label": "b"},
        {"image_path": "pics/broken.png", "label": "b"},
        {"image_path": "pics/gone.png", "label": "a"},
    ])
    dataset = load_dataset(path)
    assert dataset.kind == "image"
    assert dataset.n_examples == 2
    assert {s.reason.split(": ", 1)[1].split(" (")[0] for s in dataset.skipped} == {
        "not a readable image", "file not found"}
    assert any("row 3" in s.reason for s in dataset.skipped)


def test_tabular_dataset_with_explicit_label_and_generated_ids(tmp_path):
    frame = pd.DataFrame({"f1": [1.0, 2.0, 3.0, 1.0], "f2": [0.5, 0.1, 0.3, 0.5],
                          "diagnosis": ["m", "b", "b", "m"]})
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    dataset = load_dataset(path, roles=ColumnRoles(label="diagnosis"))
    assert dataset.kind == "tabular"
    assert dataset.ids_generated
    ids = dataset.table["id"].tolist()
    assert len(set(ids)) == 4
    # Rows 1 and 4 have identical content: the second copy gets a suffix.
    assert ids[3] == ids[0] + "-2"
    # Stable: reordering the rows keeps each row's id.
    frame.iloc[[2, 1, 0, 3]].to_csv(path, index=False)
    reordered = load_dataset(path, roles=ColumnRoles(label="diagnosis")).table
    assert dict(zip(reordered["f1"].astype(str) + reordered["f2"].astype(str), reordered["id"]))[
        "3.00.3"] == ids[2]


def test_generated_id_survives_a_relabel(tmp_path):
    rows = [{"x": 1, "label": "a"}, {"x": 2, "label": "b"}]
    first = load_dataset(write_csv(tmp_path / "a.csv", rows)).table["id"].tolist()
    rows[0]["label"] = "b"
    rows[1]["label"] = "a"
    assert load_dataset(write_csv(tmp_path / "b.csv", rows)).table["id"].tolist() == first


def test_numeric_labels_and_ids_are_text_and_sorted_numerically(tmp_path):
    rows = [{"id": f"{i:03d}", "label": lab, "v": i} for i, lab in enumerate([10, 2, 2, 10, 1])]
    dataset = load_dataset(write_csv(tmp_path / "n.csv", rows))
    assert dataset.classes == ("1", "2", "10")
    assert dataset.table["id"].tolist()[:2] == ["000", "001"]  # leading zeros kept


def test_explicit_roles_override_detection(tmp_path):
    rows = [dict(r, topic=r["label"], other=f"row {i}") for i, r in enumerate(ROWS)]
    dataset = load_dataset(write_csv(tmp_path / "r.csv", rows),
                           roles=ColumnRoles(label="topic", text=NO_COLUMN))
    assert dataset.kind == "tabular"
    assert dataset.roles.label == "topic"
    # The file's own 'label' column is not the label now: it is kept under another name.
    assert "label_original" in dataset.table.columns
    assert any("label_original" in n for n in dataset.notes)


def test_text_column_detected_by_content(tmp_path):
    rows = [{"utterance_raw": r["text"], "label": r["label"], "n": i} for i, r in enumerate(ROWS)]
    dataset = load_dataset(write_csv(tmp_path / "t.csv", rows))
    assert dataset.roles.text == "utterance_raw"
    assert dataset.kind == "text"


def test_missing_text_is_kept_empty_with_a_note(tmp_path):
    rows = [dict(r) for r in ROWS]
    rows[1]["text"] = None
    dataset = load_dataset(write_csv(tmp_path / "t.csv", rows))
    assert dataset.table.loc[1, "text"] == ""
    assert any("no text" in n and "rows 2" in n for n in dataset.notes)


def test_peek_columns_and_source_stamp(tmp_path):
    path = write_csv(tmp_path / "p.csv")
    assert peek_columns(path) == ["id", "text", "label", "split", "stars"]
    stamp = source_stamp(path)
    assert source_stamp(path) == stamp
    write_csv(path, ROWS + [dict(ROWS[0], id="a5")])
    assert source_stamp(path) != stamp


# --------------------------------------------------------------------------- bad input


def test_path_that_does_not_exist(tmp_path):
    with pytest.raises(DatasetError, match=r"nope\.csv: no such file"):
        load_dataset(tmp_path / "nope.csv")


def test_unsupported_file_type(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(DatasetError, match=r"data\.xlsx: unsupported file type '\.xlsx'"):
        load_dataset(path)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".jsonl"])
def test_empty_file(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    path.write_bytes(b"")
    with pytest.raises(DatasetError, match=rf"empty{suffix}: the file is empty"):
        load_dataset(path)


def test_header_only_csv(tmp_path):
    path = tmp_path / "header.csv"
    path.write_text("id,text,label\n")
    with pytest.raises(DatasetError, match=r"header\.csv: the file has columns \('id', 'text', 'label'\) but no rows"):
        load_dataset(path)


def test_header_only_parquet(tmp_path):
    path = tmp_path / "header.parquet"
    pd.DataFrame({"id": pd.Series([], dtype=str), "label": pd.Series([], dtype=str)}).to_parquet(path)
    with pytest.raises(DatasetError, match="but no rows"):
        load_dataset(path)


def test_no_label_column_lists_the_columns(tmp_path):
    path = write_csv(tmp_path / "nolabel.csv", [{"id": i, "body": "x y z", "kind": i % 2} for i in range(6)])
    with pytest.raises(DatasetError) as error:
        load_dataset(path)
    message = str(error.value)
    assert "nolabel.csv: no label column found" in message
    assert "'id', 'body', 'kind'" in message
    assert "Likely candidates: 'kind'" in message


def test_explicit_role_that_does_not_exist(tmp_path):
    with pytest.raises(DatasetError, match=r"the label column 'topic' does not exist; columns are 'id', 'text'"):
        load_dataset(write_csv(tmp_path / "x.csv"), roles=ColumnRoles(label="topic"))


def test_duplicate_ids_are_shown(tmp_path):
    rows = [dict(r) for r in ROWS] + [dict(ROWS[0]), dict(ROWS[2])]
    with pytest.raises(DatasetError) as error:
        load_dataset(write_csv(tmp_path / "dupes.csv", rows))
    message = str(error.value)
    assert "dupes.csv: column 'id' must be unique but 2 ids repeat" in message
    assert "'a1' (rows 1, 5)" in message and "'a3' (rows 3, 6)" in message


def test_empty_ids_are_refused(tmp_path):
    rows = [dict(r) for r in ROWS]
    rows[2]["id"] = None
    with pytest.raises(DatasetError, match=r"column 'id' has 1 empty ids \(rows 3\)"):
        load_dataset(write_csv(tmp_path / "ids.csv", rows))


def test_missing_labels_are_counted_and_can_be_dropped(tmp_path):
    rows = [dict(r) for r in ROWS] + [dict(ROWS[0], id="b1", label=None), dict(ROWS[1], id="b2", label=" ")]
    path = write_csv(tmp_path / "missing.csv", rows)
    with pytest.raises(MissingLabelsError) as error:
        load_dataset(path)
    assert error.value.count == 2 and error.value.rows == [5, 6]
    assert "missing.csv: column 'label' has 2 rows with no label (rows 5, 6)" in str(error.value)
    dataset = load_dataset(path, drop_missing_labels=True)
    assert dataset.n_examples == 4
    assert any("Dropped 2 rows" in n for n in dataset.notes)


def test_single_class(tmp_path):
    rows = [dict(r, label="pets") for r in ROWS]
    with pytest.raises(DatasetError, match=r"single\.csv: column 'label' has a single class \('pets'\)"):
        load_dataset(write_csv(tmp_path / "single.csv", rows))


def test_non_utf8_bytes_name_the_line(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("id,text,label\n1,plain words here,a\n2,caf\u00e9 au lait,b\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"latin\.csv: not valid UTF-8 text: byte 0xe9 at line 3"):
        load_dataset(path)
    # The user can say what the encoding is.
    dataset = load_dataset(path, encoding="latin-1")
    assert dataset.table.loc[1, "text"] == "café au lait"


def test_non_utf8_jsonl(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": "ok", "label": "a"}\n{"text": "caf\xe9", "label": "b"}\n')
    with pytest.raises(DatasetError, match=r"bad\.jsonl: not valid UTF-8 text: byte 0xe9 at line 2"):
        load_dataset(path)


def test_truncated_parquet(tmp_path):
    good = tmp_path / "good.parquet"
    pd.DataFrame(ROWS).to_parquet(good)
    data = good.read_bytes()
    path = tmp_path / "truncated.parquet"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"truncated\.parquet: not a readable Parquet file \(it may be truncated or corrupt\)"):
        load_dataset(path)


def test_malformed_csv_names_the_line(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text("id,text,label\n1,hello,a\n2,too,many,fields,b\n3,bye,b\n")
    with pytest.raises(DatasetError, match=r"ragged\.csv: malformed CSV: .*line 3"):
        load_dataset(path)


def test_malformed_jsonl_names_the_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"text": "a b", "label": "x"}\n{"text": "c d", "label": \n')
    with pytest.raises(DatasetError, match=r"broken\.jsonl: line 2 is not valid JSON"):
        load_dataset(path)


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text('{"text": "a b", "label": "x"}\n[1, 2]\n')
    with pytest.raises(DatasetError, match=r"list\.jsonl: line 2 holds a list, not a JSON object"):
        load_dataset(path)


def test_image_folder_skips_and_lists_unreadable_files(tmp_path):
    root = tmp_path / "imgs"
    make_image(root / "cat" / "ok.png")
    make_image(root / "dog" / "ok.png", colour=255)
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "dog" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (root / "dog" / "empty.jpg").write_bytes(b"")
    (root / "readme.md").write_text("loose file")
    (root / "cat" / ".DS_Store").write_bytes(b"\x00")
    dataset = load_dataset(root)
    assert dataset.n_examples == 2
    reasons = {s.path.rsplit("/", 1)[1]: s.reason for s in dataset.skipped}
    assert set(reasons) == {"notes.txt", "corrupt.png", "empty.jpg", "readme.md"}
    assert reasons["notes.txt"].startswith("not an image file type")
    assert reasons["corrupt.png"].startswith("not a readable image")
    assert reasons["empty.jpg"] == "empty file"
    assert reasons["readme.md"] == "not inside a class folder"


def test_image_folder_without_class_folders(tmp_path):
    make_image(tmp_path / "flat" / "a.png")
    with pytest.raises(DatasetError, match="one sub-folder per class"):
        load_dataset(tmp_path / "flat")


def test_image_folder_with_only_broken_files(tmp_path):
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.png").write_bytes(b"nope")
    with pytest.raises(DatasetError, match="no readable images"):
        load_dataset(root)


def test_image_folder_with_a_single_class(tmp_path):
    make_image(tmp_path / "imgs" / "only" / "a.png")
    with pytest.raises(DatasetError, match="single class"):
        load_dataset(tmp_path / "imgs")


def test_repeated_column_names_in_parquet(tmp_path):
    frame = pd.DataFrame([[1, 2, "a"], [3, 4, "b"]], columns=["x", "x", "label"])
    parquet = tmp_path / "twice.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_arrays([pa.array(frame.iloc[:, i]) for i in range(3)],
                                        names=["x", "x", "label"]), parquet)
    with pytest.raises(DatasetError, match=r"column names repeat: 'x'"):
        load_dataset(parquet)


def test_nan_features_load_and_are_reported_missing(tmp_path):
    rows = [{"a": np.nan if i == 2 else float(i), "label": "x" if i % 2 else "y"} for i in range(6)]
    dataset = load_dataset(write_csv(tmp_path / "nan.csv", rows))
    assert dataset.table["a"].isna().sum() == 1


@pytest.mark.parametrize("bad_id, shown", [("a\nb", r"'a\nb'"), ("a\x00b", r"'a\x00b'"),
                                            ("tab\there", r"'tab\there'"), ("x\u2028y", r"'x\u2028y'")])
@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_ids_with_control_characters_are_refused_naming_the_row(tmp_path, bad_id, shown, suffix):
    rows = [dict(row) for row in ROWS]
    rows[2]["id"] = bad_id
    path = tmp_path / f"data{suffix}"
    if suffix == ".csv":
        write_csv(path, rows)
    else:
        pd.DataFrame(rows).to_json(path, orient="records", lines=True)
    with pytest.raises(DatasetError, match=r"data\.\w+: column 'id' has 1 ids with control characters") as error:
        load_dataset(path)
    assert "(rows 3;" in str(error.value) and f"row 3 is {shown}" in str(error.value)


def wide_csv(path, columns: int):
    header = ",".join(["id", "label"] + [f"c{i}" for i in range(columns - 2)])
    path.write_text(header + "\n" + "1,x" + ",0" * (columns - 2) + "\n" + "2,y" + ",1" * (columns - 2) + "\n")
    return path


def test_a_table_over_the_column_cap_is_refused_from_its_header_quickly(tmp_path):
    import time

    path = wide_csv(tmp_path / "wide.csv", 100_000)
    started = time.perf_counter()
    with pytest.raises(DatasetError, match=r"wide\.csv: has 100,000 columns, more than the 10,000"):
        load_dataset(path)
    with pytest.raises(DatasetError, match=r"wide\.csv: has 100,000 columns"):
        peek_columns(path)
    assert time.perf_counter() - started < 10


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_the_column_cap_is_a_keyword_and_a_policy_setting(tmp_path, suffix):
    from analytics.access import Policy

    frame = pd.DataFrame([{"id": "1", "label": "x", "a": 1, "b": 2}, {"id": "2", "label": "y", "a": 3, "b": 4}])
    path = tmp_path / f"four{suffix}"
    {".csv": lambda: frame.to_csv(path, index=False), ".parquet": lambda: frame.to_parquet(path),
     ".jsonl": lambda: frame.to_json(path, orient="records", lines=True)}[suffix]()
    with pytest.raises(DatasetError, match=r"four\.\w+: has 4 columns, more than the 3"):
        load_dataset(path, max_columns=3)
    with pytest.raises(DatasetError, match="has 4 columns, more than the 3"):
        load_dataset(path, policy=Policy(max_columns=3))
    assert load_dataset(path, max_columns=4).n_examples == 2


def test_an_image_folder_over_the_image_cap_is_refused(tmp_path):
    from analytics.datasets import count_images

    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(3):
            Image.new("RGB", (4, 4), (i * 40, 0, 0)).save(tmp_path / label / f"{i}.png")
    assert count_images(tmp_path) == 6 and count_images(tmp_path, stop_after=2) == 3
    with pytest.raises(DatasetError, match="holds more than 5 images"):
        load_dataset(tmp_path, max_images=5)
    assert load_dataset(tmp_path, max_images=6).n_examples == 6


# --------------------------------------------------------------------------- several annotators


def write_columns(path, **columns):
    pd.DataFrame(columns).to_csv(path, index=False)
    return path


def test_the_loader_keeps_a_label_column_and_checks_the_annotators_against_its_classes(tmp_path):
    path = write_columns(tmp_path / "a.csv", text=[f"text number {i}" for i in range(4)],
                         label=["cat", "dog", "cat", "dog"], ann_a=["cat", "dog", None, "dog"],
                         ann_b=["cat", "cat", "cat", ""])
    dataset = load_dataset(path, roles=ColumnRoles(annotator=["ann_a", "ann_b"]))
    assert dataset.roles.annotator == ("ann_a", "ann_b") and dataset.roles.label == "label"
    assert dataset.table["label"].tolist() == ["cat", "dog", "cat", "dog"]  # kept as it is
    assert dataset.table["ann_a"].tolist() == ["cat", "dog", None, "dog"]
    assert dataset.table["ann_b"].tolist() == ["cat", "cat", "cat", None]
    assert dataset.feature_columns == []  # annotators' labels are never features
    assert not any("majority vote" in note for note in dataset.notes)

    write_columns(path, label=["cat", "dog", "cat", "dog"], ann_a=["cat", "dog", "cat", "dog"],
                  ann_b=["cat", "bird", "cow", "dog"])
    with pytest.raises(DatasetError, match=r"a\.csv: annotator column 'ann_b' has 2 labels that are not among the "
                                           r"classes \('cat', 'dog'\): row 2 'bird', row 3 'cow'"):
        load_dataset(path, roles=ColumnRoles(annotator=("ann_a", "ann_b")))


def test_without_a_label_column_the_label_is_the_annotators_majority_vote(tmp_path):
    path = write_columns(tmp_path / "votes.csv", text=[f"a text {i}" for i in range(5)],
                         a=[1, 0, 1, np.nan, 0], b=[1, 1, 0, np.nan, 0], c=[1, 1, np.nan, np.nan, 1])
    with pytest.raises(MissingLabelsError, match=r"majority vote of the annotator columns 'a', 'b', 'c' has 1 rows "
                                                 r"with no label \(rows 4\)"):
        load_dataset(path, roles=ColumnRoles(annotator=("a", "b", "c")))
    dataset = load_dataset(path, roles=ColumnRoles(annotator=("a", "b", "c")), drop_missing_labels=True)
    assert dataset.classes == ("0", "1")  # 1.0 read from a column with gaps is "1"
    # row 3 ties 1 against 0: class 1 is chosen more often overall
    assert dataset.table["label"].tolist() == ["1", "1", "1", "0"]
    assert dataset.roles.label == NO_COLUMN
    assert any("majority vote of the 3 annotators" in note for note in dataset.notes)
    # an annotator's changed label keeps the ids (derived from content, as a relabel keeps them)
    write_columns(path, text=[f"a text {i}" for i in range(5)], a=[0, 0, 1, np.nan, 0], b=[1, 1, 0, np.nan, 0],
                  c=[1, 1, np.nan, np.nan, 1])
    again = load_dataset(path, roles=ColumnRoles(annotator=("a", "b", "c")), drop_missing_labels=True)
    assert again.table["id"].tolist() == dataset.table["id"].tolist()
    assert again.fingerprint != dataset.fingerprint


def test_annotator_roles_that_cannot_work_are_refused(tmp_path):
    path = write_columns(tmp_path / "r.csv", text=["one", "two"], label=["x", "y"], a=["x", "y"], b=["y", "y"])
    with pytest.raises(DatasetError, match=r"the annotator column 'zz' does not exist"):
        load_dataset(path, roles=ColumnRoles(annotator=("a", "zz")))
    with pytest.raises(DatasetError, match=r"column 'a' cannot be both the label column and an annotator column"):
        load_dataset(path, roles=ColumnRoles(label="a", annotator=("a", "b")))
    with pytest.raises(DatasetError, match=r"the annotator column 'label' has the name of a role column"):
        load_dataset(path, roles=ColumnRoles(label=NO_COLUMN, annotator=("label", "b")))
    with pytest.raises(DatasetError, match=r"Annotator columns repeat: 'a'"):
        ColumnRoles(annotator=("a", "b", "a"))
    folder = tmp_path / "images"
    make_image(folder / "cat" / "1.png")
    with pytest.raises(DatasetError, match="an image folder has no annotator columns"):
        load_dataset(folder, roles=ColumnRoles(annotator=("a", "b")))


def test_column_roles_take_a_list_or_a_name_and_survive_a_json_round_trip():
    assert ColumnRoles(annotator=["a", "b"]).annotator == ("a", "b")
    assert ColumnRoles(annotator="a").annotator == ("a",)
    assert ColumnRoles(annotator=None).annotator == ColumnRoles().annotator == ()
    roles = ColumnRoles(label="y", annotator=("a", "b"))
    assert ColumnRoles(**json.loads(json.dumps(roles.as_dict()))) == roles  # as a run's manifest stores them
    assert hash(roles) == hash(ColumnRoles(**json.loads(json.dumps(roles.as_dict()))))
    assert "annotator" not in roles.single_columns()
