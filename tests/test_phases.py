import math

import pytest

from zoo.phases.rules import PHASES, classify

T = dict(loss_threshold=0.2, mc_epsilon=0.05, cka_threshold=0.93)


@pytest.mark.parametrize(
    "row, phase",
    [
        ({"train_loss": 1.5, "mc": -0.4, "cka": 0.5}, "I"),  # poorly trained, barrier
        ({"train_loss": 1.5, "mc": 0.3, "cka": 0.5}, "II"),  # poorly trained, valley
        ({"train_loss": 0.01, "mc": -0.3, "cka": 0.99}, "III"),  # well trained, barrier
        ({"train_loss": 0.01, "mc": -0.01, "cka": 0.80}, "IV-A"),  # connected, dissimilar seeds
        ({"train_loss": 0.01, "mc": 0.02, "cka": 0.97}, "IV-B"),  # connected, similar seeds
        ({"train_loss": 0.2, "mc": -0.05, "cka": 0.93}, "IV-B"),  # thresholds are inclusive on the well side
    ],
)
def test_each_phase(row, phase):
    assert classify(row, **T) == phase


def test_labels_are_exactly_the_five():
    assert PHASES == ("I", "II", "III", "IV-A", "IV-B")


def test_thresholds_are_arguments():
    row = {"train_loss": 0.3, "mc": 0.1, "cka": 0.95}
    assert classify(row, **T) == "II"
    assert classify(row, **{**T, "loss_threshold": 0.5}) == "IV-B"


def test_missing_and_nan_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="needs 'mc'"):
        classify({"train_loss": 0.1, "cka": 0.9}, **T)
    with pytest.raises(ValueError, match="train_loss is NaN"):
        classify({"train_loss": math.nan, "mc": 0.0, "cka": 0.9}, **T)
    with pytest.raises(ValueError, match="needs 'cka'"):
        classify({"train_loss": 0.1, "mc": 0.0}, **T)
    assert classify({"train_loss": 0.9, "mc": -1.0}, **T) == "I"  # CKA only matters in phase IV
