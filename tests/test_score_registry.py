"""The score registry's common test (after scikit-learn's common metric tests): every registered
column declares when it is harder, is described, and is checked against a hand-computed example;
every direction in the engine and the app is read from those declarations."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import tests.test_scores as hand_tests
from analytics.hardness import HARDER_IS_HIGHER, hardest, numeric_scores
from analytics.scores import HARDER, HIGHER, LOWER, NEITHER, SCORES, Score, ScoreInputs, UnknownScoreError
from analytics.scores import harder_is_higher, numeric_score_columns, score_columns


def _hand_computed_tests() -> dict[str, list[str]]:
    """For each column, the tests of tests/test_scores.py marked ``@hand_computed`` for it."""
    found: dict[str, list[str]] = {}
    for name, test in vars(hand_tests).items():
        for column in getattr(test, "hand_computed", ()):
            found.setdefault(column, []).append(name)
    return found


HAND_COMPUTED = _hand_computed_tests()
COLUMNS = list(score_columns())


def test_the_hand_computed_tests_cover_exactly_the_registered_columns():
    assert set(HAND_COMPUTED) <= set(COLUMNS), "a test is marked for a column no score registers"
    missing = [c for c in COLUMNS if c not in HAND_COMPUTED]
    assert not missing, f"no test in tests/test_scores.py is marked @hand_computed for {missing}"


@pytest.mark.parametrize("column", COLUMNS)
def test_every_column_has_a_direction_a_description_and_a_hand_computed_test(column):
    [score] = [s for s in SCORES.values() if column in s.columns]
    assert score.harder[column] in HARDER
    assert score.description.strip() and score.reference.strip() and score.direction.strip()
    tests = HAND_COMPUTED.get(column, [])
    assert tests and all(name.startswith("test_") and callable(getattr(hand_tests, name)) for name in tests), \
        f"tests/test_scores.py has no test marked @hand_computed({column!r})"


def _words_for(score: Score, column: str) -> str:
    """The part of ``score.direction`` about ``column``: "a, b: higher = harder", "c is a flag", or a
    part naming no column (then it is about the columns no other part names)."""
    parts = [p.strip() for p in score.direction.split(";")]

    def named(part: str) -> list[str]:
        if part.endswith("is a flag"):
            return [part.split()[0]]
        names = [n.strip() for n in part.split(":")[0].split(",")] if ":" in part else []
        return names if names and all(n in score.columns for n in names) else []

    return next((p for p in parts if column in named(p)), None) or next(p for p in parts if not named(p))


@pytest.mark.parametrize("column", COLUMNS)
def test_the_words_agree_with_the_declared_direction(column):
    """``direction`` (for people) says the column's declared direction, or that it is a flag."""
    [score] = [s for s in SCORES.values() if column in s.columns]
    words = _words_for(score, column)
    if score.harder[column] == NEITHER:
        assert words.endswith("is a flag"), words
    else:
        said = words.split(":", 1)[1] if ":" in words.split("=")[0] else words
        assert said.strip().startswith(f"{score.harder[column]} ="), (column, words)


def test_directions_everywhere_come_from_the_registry():
    numeric = [c for c, h in score_columns().items() if h != NEITHER]
    assert numeric_score_columns() == numeric == list(HARDER_IS_HIGHER)
    assert dict(HARDER_IS_HIGHER) == {c: score_columns()[c] == HIGHER for c in numeric}
    assert numeric_scores(["label_issue", "vog", "aum", "id"]) == ["aum", "vog"]  # registry order, no flags
    assert harder_is_higher("loss") and not harder_is_higher("aum") and not harder_is_higher("knn_shapley")
    assert "label_issue" not in HARDER_IS_HIGHER and "never_learned" not in HARDER_IS_HIGHER


def test_an_unknown_score_raises_an_error_naming_it():
    with pytest.raises(UnknownScoreError, match="'lossy' is not a registered score column"):
        harder_is_higher("lossy")
    with pytest.raises(KeyError, match="lossy"):
        HARDER_IS_HIGHER["lossy"]
    with pytest.raises(ValueError, match="label_issue' is a flag"):
        harder_is_higher("label_issue")
    import pandas as pd

    with pytest.raises(UnknownScoreError, match="'noise'"):
        hardest(pd.DataFrame({"noise": [1.0, 2.0]}), "noise", n=1)


def _score(**changes) -> Score:
    fields = dict(name="demo", columns=("demo",), harder={"demo": HIGHER}, requires=("labels",),
                  direction="higher = harder", reference="a paper", description="what it is",
                  compute=lambda inputs: {"demo": np.zeros(len(inputs.labels))})
    return Score(**{**fields, **changes})


def test_score_takes_keyword_arguments_and_checks_its_declaration():
    assert _score().harder == {"demo": HIGHER}
    with pytest.raises(TypeError):
        Score("demo", ("demo",), {"demo": HIGHER}, ("labels",), "higher = harder", "a paper", "what", print)
    with pytest.raises(ValueError, match="harder must name each of its columns"):
        _score(columns=("demo", "other"))
    with pytest.raises(ValueError, match="harder must be one of higher, lower, neither"):
        _score(harder={"demo": "up"})
    with pytest.raises(ValueError, match="requires unknown inputs"):
        _score(requires=("labels", "pixels"))
    with pytest.raises(ValueError, match="description must not be empty"):
        _score(description=" ")
    with pytest.raises(dataclasses.FrozenInstanceError):
        _score().name = "other"
    assert LOWER in HARDER


def test_score_inputs_check_their_shapes():
    labels = np.zeros(5, dtype=int)
    ScoreInputs(labels=labels, logits_by_epoch=np.zeros((2, 3, 5, 4)), heldout_probs=np.zeros((5, 4)),
                knn_indices=np.zeros((5, 2), dtype=int), knn_distances=np.zeros((5, 2)),
                hidden_norms=np.zeros((2, 5)), vog_raw=np.zeros(5))
    with pytest.raises(ValueError, match=r"heldout_probs has shape \(4, 4\), whose n \(4\) differs from labels's \(5\)"):
        ScoreInputs(labels=labels, heldout_probs=np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"logits_by_epoch must have shape \(seeds, epochs, n, classes\), not \(3, 5, 4\)"):
        ScoreInputs(labels=labels, logits_by_epoch=np.zeros((3, 5, 4)))
    with pytest.raises(ValueError, match=r"knn_distances has shape \(5, 3\), whose k \(3\) differs from knn_indices's \(2\)"):
        ScoreInputs(labels=labels, knn_indices=np.zeros((5, 2), dtype=int), knn_distances=np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"hidden_norms has shape \(3, 5\), whose seeds \(3\) differs"):
        ScoreInputs(labels=labels, logits_by_epoch=np.zeros((2, 3, 5, 4)), hidden_norms=np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"classes \(3\) differs from logits_by_epoch's \(4\)"):
        ScoreInputs(labels=labels, logits_by_epoch=np.zeros((2, 3, 5, 4)), heldout_probs=np.zeros((5, 3)))
