"""Label decisions in the dashboard: one image's actions (dialogs, the review queue) and a selection's bulk bar."""

from __future__ import annotations

from typing import Sequence


def image_actions(run, row: int, *, suggested: str | None = None, key: str = "dialog") -> None:
    """Draw Accept suggestion / Relabel… / Label is right / Exclude / Undo for one image; reruns the app on a decision."""


def bulk_bar(run, rows: Sequence[int], *, key: str) -> None:
    """Draw the bulk actions for `rows` ("relabel these 14 as …", label is right, exclude, undo); reruns on a decision."""
