"""doggos.base.units: the one way doggos writes counts, durations, rates, shares and sizes for people."""

import math

import pytest

from doggos.base import units

UNKNOWN = (None, math.nan, math.inf, -math.inf)


@pytest.mark.parametrize("write", [units.count, units.duration, units.rate, units.share, units.points, units.size,
                                   units.factor, units.score])
def test_an_unknown_figure_is_a_dash_never_none_nan_or_zero(write):
    assert {write(value) for value in UNKNOWN} == {units.DASH}


def test_numpy_and_pandas_unknowns_are_dashes_too():
    import numpy as np
    import pandas as pd

    assert units.share(np.float32("nan")) == units.count(pd.NA) == units.rate(np.float64("inf")) == units.DASH
    assert units.share(np.float32(0.25)) == "25 %" and units.count(np.int64(2_880), "image") == "2,880 images"


def test_counts_agree_with_their_noun_and_group_thousands():
    assert [units.count(n, "label") for n in (0, 1, 2, 2_880)] == ["0 labels", "1 label", "2 labels", "2,880 labels"]
    assert units.count(1_234_567) == "1,234,567" and units.count(3.0, "file") == "3 files"
    assert units.count(1, "batch", "batches") == "1 batch" and units.count(2, "batch", "batches") == "2 batches"
    assert units.plural(1, "pair") == "pair" and units.plural(0, "pair") == "pairs"


def test_progress_out_of_a_whole_reads_with_the_wholes_noun():
    assert units.out_of(126, 300, "image") == "126 / 300 images"
    assert units.out_of(1, 1, "label") == "1 / 1 label" and units.out_of(1_383, 2_880) == "1,383 / 2,880"
    assert units.out_of(5, None, "image") == "5 / – images"


@pytest.mark.parametrize("seconds, text", [
    (0, "0 s"), (0.84, "0.8 s"), (4.0, "4 s"), (4.25, "4.3 s"), (9.94, "9.9 s"), (9.96, "10 s"), (10.4, "10 s"),
    (59.4, "59 s"), (59.6, "1 min 00 s"), (66.4, "1 min 06 s"), (66.5, "1 min 07 s"), (75, "1 min 15 s"),
    (3599.4, "59 min 59 s"), (3725, "1 h 02 min"), (-3, "0 s"),
])
def test_durations_round_once_halves_up(seconds, text):
    assert units.duration(seconds) == text


def test_a_duration_difference_is_signed():
    assert units.duration(4.2, signed=True) == "+4.2 s" and units.duration(-66.5, signed=True) == "-1 min 07 s"
    assert units.duration(0.01, signed=True) == "±0 s" and units.duration(None, signed=True) == units.DASH


def test_rates_keep_three_figures_below_one():
    assert [units.rate(r) for r in (14.0, 0.25, 0.0, 1_204.46)] == ["14.0", "0.25", "0.0", "1,204.5"]
    assert units.rate(8.94, "images/s") == "8.9 images/s"
    assert units.rate(12.5, signed=True) == "+12.5" and units.rate(-0.5, signed=True) == "-0.50"
    assert units.rate(-3.0) == "-3.0"


@pytest.mark.parametrize("fraction, digits, text", [
    (0.2767, 0, "28 %"), (0.2767, 1, "27.7 %"), (0.23, 0, "23 %"), (0.285, 0, "28 %"), (0.125, 0, "13 %"),
    (0.0, 0, "0 %"), (1.0, 0, "100 %"), (0.005, 0, "1 %"), (0.004, 0, "< 1 %"), (0.995, 0, "> 99 %"),
    (0.9949, 0, "99 %"), (0.0004, 1, "< 0.1 %"), (0.9996, 1, "> 99.9 %"),
])
def test_shares_never_round_a_part_to_nothing_or_to_the_whole(fraction, digits, text):
    assert units.share(fraction, digits) == text


def test_a_difference_of_shares_is_in_points():
    assert [units.points(d) for d in (0.052, -0.01, 0.001, 0.0)] == ["+5 points", "-1 point", "±0 points", "±0 points"]
    assert units.points(0.0523, digits=1) == "+5.2 points"


def test_a_table_column_of_shares_reads_as_share_does():
    # Streamlit formats the column with printf (sprintf-js); Python's % is the same printf for these two formats.
    for fraction in (0.2767, 0.23, 0.0, 1.0, 0.5):
        assert (units.SHARE_COLUMN % units.percent(fraction)) == units.share(fraction)
    assert units.POINTS_COLUMN % units.percent(0.05) + " points" == units.points(0.05)
    assert units.percent(None) is None and units.percent(math.nan) is None
    import numpy as np
    import pandas as pd

    column = units.percent(pd.Series([0.25, None, 1.0]))
    assert column.iloc[0] == 25.0 and math.isnan(column.iloc[1]) and column.iloc[2] == 100.0
    assert units.percent(np.array([0.5])).tolist() == [50.0]


def test_sizes_factors_and_scores():
    assert [units.size(b) for b in (0, 1023, 12 * 1024, int(3.4 * 2**20), int(1.2 * 2**30))] == [
        "0 B", "1023 B", "12.0 KB", "3.4 MB", "1.2 GB"]
    assert units.factor(2) == "2.00×" and units.factor(0.5, digits=1) == "0.5×"
    assert units.score(0.92345) == "0.923" and units.score(0.9, digits=4) == "0.9000"
    assert units.score(0.05, signed=True) == "+0.050" and units.score(-0.05, signed=True) == "-0.050"


def test_ordinals():
    assert [units.ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111, 112)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st", "111th", "112th"]


def test_a_long_path_keeps_its_tail():
    long = "/home/workshop/datasets/stanford-dogs/train/border_collie"
    assert units.path_tail("/tmp/dk/digits") == "/tmp/dk/digits" and units.path_tail(None) == ""
    tail = units.path_tail(long, width=30)
    assert tail == "…/train/border_collie" and len(tail) <= 30
    no_slash = units.path_tail("x" * 50, width=20)
    assert no_slash == "…" + "x" * 19 and len(no_slash) == 20
