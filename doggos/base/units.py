"""How doggos writes numbers for people: counts, durations, rates, shares and sizes, one way everywhere.

Every page, the CLI and the reports call these, so one run's figures read the same on every screen (the same
rounding, the same units, "1 label" and "2 labels")."""

from __future__ import annotations

import math

DASH = "–"  # a figure not known (yet): never "None", "nan" or 0


def _missing(value) -> bool:
    """None, NaN or ±inf, whatever its type (numpy's float32 is no Python float), or pandas' NA."""
    if value is None or type(value).__name__ == "NAType":  # pd.NA, without importing pandas for it
        return True
    return not math.isfinite(value)


def plural(number: int, noun: str, nouns: str | None = None) -> str:
    """The noun that goes with `number`: label for 1, labels otherwise (`nouns` for irregular ones)."""
    return noun if number == 1 else (nouns or noun + "s")


def count(number, noun: str | None = None, nouns: str | None = None) -> str:
    """A count with thousands separators, and its noun agreeing: '1 label', '2,880 images', '0 files'; a dash if
    unknown."""
    if _missing(number):
        return DASH
    number = int(number)
    return f"{number:,}" if noun is None else f"{number:,} {plural(number, noun, nouns)}"


def out_of(done, total, noun: str | None = None, nouns: str | None = None) -> str:
    """Progress through a known whole: '126 / 300 images' (the noun agrees with the whole); '126 / –' if the whole is
    not known yet."""
    text = f"{count(done)} / {count(total)}"
    if noun is None:
        return text
    return f"{text} {plural(int(total) if not _missing(total) else 2, noun, nouns)}"


def duration(seconds, signed: bool = False) -> str:
    """Seconds as people read them: 4 s, 1 min 06 s, 1 h 02 min; under 10 s with a tenth (0.8 s); a dash if unknown.

    Rounded once, here: two screens given the same seconds never differ by one. `signed`: a difference of two
    durations, '+4.2 s', '-1 min 06 s', '±0 s' (a plain duration below 0 reads 0 s: a clock that went backwards)."""
    if _missing(seconds):
        return DASH
    if signed:
        text = duration(abs(seconds))
        return "±" + text if text == "0 s" else ("-" if seconds < 0 else "+") + text
    if seconds < 0:
        seconds = 0.0
    if seconds < 9.95:  # a tenth matters for short steps; "4.0 s" reads "4 s"
        return f"{_round_half_up(seconds, 1):.1f}".removesuffix(".0") + " s"
    seconds = math.floor(seconds + 0.5)  # halves up, not to even: 66.5 s is 1 min 07 s on every screen
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes} min {seconds:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def rate(per_second, unit: str | None = None, signed: bool = False) -> str:
    """A rate with one decimal (three figures at least below 1): '14.0', '0.25', '1,204.5 images/s'; a dash if unknown.

    `signed`: a difference of two rates, '+12.5' or '-0.50' (an ASCII minus: st.metric reads it as a fall)."""
    if _missing(per_second):
        return DASH
    text = f"{abs(per_second):,.2f}" if 0 < abs(per_second) < 1 else f"{abs(per_second):,.1f}"
    text = _sign(per_second, signed) + text
    return f"{text} {unit}" if unit else text


def share(fraction, digits: int = 0) -> str:
    """A fraction of a whole as a percentage: 0.2767 → '28 %' (digits=1: '27.7 %'); a dash if unknown.

    Halves round up, as `duration`'s do. Never rounds a part to the whole or to nothing: 0.999 reads '> 99 %',
    0.001 '< 1 %'."""
    if _missing(fraction):
        return DASH
    percent = fraction * 100
    rounded = _round_half_up(percent, digits)
    smallest = 10 ** -digits
    if 0 < percent and rounded == 0:
        return f"< {smallest:g} %"
    if percent < 100 and rounded >= 100:
        return f"> {100 - smallest:.{digits}f} %"
    return f"{rounded:.{digits}f} %"


def points(difference, digits: int = 0) -> str:
    """A difference of two shares in percentage points: 0.052 → '+5 points', -0.01 → '-1 point'; a dash if unknown.

    Points, not '%': '+5 %' would read as five percent more of the first share."""
    if _missing(difference):
        return DASH
    rounded = _round_half_up(abs(difference) * 100, digits)
    if rounded == 0:
        return "±0 points"
    sign = "-" if difference < 0 else "+"
    return f"{sign}{rounded:.{digits}f} {plural(rounded, 'point')}"


def percent(fraction):
    """A fraction as the number of percent a table column holds (0.2767 → 27.67), for `SHARE_COLUMN`; None if unknown.
    A whole column (a pandas Series, a numpy array) is multiplied as one: its NaNs stay NaN, and show empty.

    Streamlit's printf column formats cannot multiply, and its "percent" format shows '27.67%': a column of shares
    holds percents and is formatted with SHARE_COLUMN, so it reads as `share` does."""
    if getattr(fraction, "ndim", 0):
        return fraction * 100
    return None if _missing(fraction) else fraction * 100


SHARE_COLUMN = "%.0f %%"  # st.column_config format of a column of `percent`s: '28 %', as `share` writes it
POINTS_COLUMN = "%+.0f"  # ... of a column of differences of `percent`s, headed '(points)': a format has no plural


def factor(ratio, digits: int = 2) -> str:
    """How many times another figure one is: '2.00×'; a dash if unknown."""
    return DASH if _missing(ratio) else f"{ratio:,.{digits}f}×"


def score(value, digits: int = 3, signed: bool = False) -> str:
    """A score that is not a share (a cosine similarity, a search score): '0.923'; a dash if unknown."""
    if _missing(value):
        return DASH
    return f"{_sign(value, signed)}{abs(value):.{digits}f}"


def _sign(value, signed: bool) -> str:
    if value < 0:
        return "-"
    return "+" if signed else ""


def _round_half_up(value: float, digits: int) -> float:
    # Not round(): it rounds halves to even (28.5 → 28, 27.5 → 28), and so two neighbours would round apart.
    scale = 10 ** digits
    return math.floor(value * scale + 0.5) / scale


def size(count_bytes) -> str:
    """Bytes as people read them: 0 B, 12.0 KB, 3.4 MB, 1.2 GB; a dash if unknown."""
    if _missing(count_bytes):
        return DASH
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if count_bytes >= scale:
            return f"{count_bytes / scale:.1f} {unit}"
    return f"{int(count_bytes)} B"


def ordinal(number: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 21st…"""
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def path_tail(path: str, width: int = 40) -> str:
    """A long path or URI cut at its start, where it says least: '…/train/border_collie' keeps what tells runs apart."""
    text = str(path or "")
    if len(text) <= width:
        return text
    tail = text[-(width - 1):]
    cut = tail.find("/")
    return "…" + (tail[cut:] if 0 <= cut < width // 2 else tail)
