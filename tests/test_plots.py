"""Figures a reader understands without the code: words for column names, no rounding noise,
all-equal maps drawn in a visible colour, phase definitions on the phase map."""

import matplotlib.image

from zoo.phases.plots import describe, heatmap, number, phase_definitions, phase_map

ROWS = [
    {"model.width": w, "data.batch_size": b, "phase": "II" if w < 8 else "IV-B"}
    for w in (2, 4, 8, 16)
    for b in (32, 128)
]


def test_column_names_in_words_with_units():
    assert describe("barrier_err_test_aligned") == "barrier error on the test set after weight matching [fraction]"
    assert describe("hessian_top") == "Hessian top eigenvalue" and "CKA" in describe("cka")
    assert describe("mc_err_train") == "mode connectivity error on the train set [fraction]"
    assert describe("mc_loss_train") == "mode connectivity loss on the train set [cross-entropy]"
    assert number(1.1102230246251565e-16, 0.5) == "0" and number(0.0123456, 0.5) == "0.0123"


def test_all_equal_map_is_drawn_visibly(tmp_path):
    rows = [{**r, "gain": 1.1102230246251565e-16 * (i % 2)} for i, r in enumerate(ROWS)]
    path = heatmap(rows, "model.width", "data.batch_size", "gain", tmp_path / "gain.png", diverging=True)
    pixels = matplotlib.image.imread(path)[..., :3]
    centre = pixels[pixels.shape[0] // 2, pixels.shape[1] // 2]
    assert centre.min() < 0.9, "the cells are not white on white"


def test_phase_map_states_its_thresholds(tmp_path):
    text = phase_definitions(loss_threshold=0.2, mc_epsilon=0.05, cka_threshold=0.93)
    assert "L > 0.2" in text and "mc < −0.05" in text and "CKA ≥ 0.93" in text
    assert "mc = mode connectivity loss on the train set [cross-entropy]" in text
    reference = phase_definitions(loss_threshold=0.2, mc_epsilon=1, cka_threshold=0.93, mc="mc_err_train", mc_scale=100)
    assert "mc = mode connectivity error on the train set [%]" in reference and "mc < −1;" in reference
    phase_map(
        ROWS,
        "model.width",
        "data.batch_size",
        tmp_path / "map.png",
        thresholds={"loss_threshold": 0.2, "mc_epsilon": 0.05, "cka_threshold": 0.93},
    )
    assert (tmp_path / "map.png").stat().st_size > 10_000
