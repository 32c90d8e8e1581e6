from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from skyfuse.errors import BadInputError
from skyfuse.training.metrics import classification_metrics


def test_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    t = rng.integers(0, 5, 200)
    p = np.where(rng.random(200) < 0.7, t, rng.integers(0, 5, 200))
    m = classification_metrics(t.tolist(), p.tolist(), list("abcde"))
    assert m["oa"] == pytest.approx(skm.accuracy_score(t, p))
    assert m["aa"] == pytest.approx(skm.balanced_accuracy_score(t, p))
    assert m["kappa"] == pytest.approx(skm.cohen_kappa_score(t, p), abs=1e-6)
    prec, rec, f1, sup = skm.precision_recall_fscore_support(t, p, zero_division=0)
    for i, name in enumerate("abcde"):
        assert m["per_class"][name]["precision"] == pytest.approx(prec[i], abs=1e-6)
        assert m["per_class"][name]["recall"] == pytest.approx(rec[i], abs=1e-6)
        assert m["per_class"][name]["f1"] == pytest.approx(f1[i], abs=1e-6)
        assert m["per_class"][name]["support"] == sup[i]
    assert np.array_equal(np.array(m["confusion"]), skm.confusion_matrix(t, p))


def test_aa_ignores_classes_absent_from_truth() -> None:
    m = classification_metrics([0, 0, 1, 1], [0, 0, 1, 2], ["a", "b", "c"])
    assert m["aa"] == pytest.approx((1.0 + 0.5) / 2)
    assert m["oa"] == pytest.approx(0.75)


def test_bad_inputs() -> None:
    with pytest.raises(BadInputError, match="lie in"):
        classification_metrics([0, 3], [0, 1], ["a", "b"])
    with pytest.raises(BadInputError, match="empty"):
        classification_metrics([], [], ["a", "b"])
    with pytest.raises(BadInputError, match="y_pred"):
        classification_metrics([0, 1], [0], ["a", "b"])


def test_kappa_is_defined_for_a_one_class_scored_part() -> None:
    from skyfuse.training.metrics import classification_metrics

    right = classification_metrics([1, 1, 1], [1, 1, 1], ["a", "b", "c"])
    assert right["kappa"] == 1.0 and right["oa"] == 1.0
    mixed = classification_metrics([1, 1, 1, 1], [1, 1, 0, 1], ["a", "b", "c"])
    assert mixed["kappa"] == mixed["kappa"]  # not NaN
    assert mixed["kappa"] == 0.0  # p_o = p_e = 0.75
