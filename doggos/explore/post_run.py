"""The post-run steps a run's config asks for, with their parameters: its default map, its label-quality report."""

from __future__ import annotations

from doggos.base.config import RunConfig
from doggos.runs.steps import Step


def steps_for(config: RunConfig) -> list[tuple[Step, object]]:
    """What the driver computes after publishing a run's embeddings, in order (handed to `doggos.runs.driver.run`)."""
    from doggos.explore import projection, quality, quality_step  # umap and the quality maths: only when a run asks

    steps: list[tuple[Step, object]] = []
    if config.projection:
        steps.append((projection.MAP, projection.DEFAULT_PARAMS))
    if config.quality:
        steps.append((quality_step.QUALITY, quality.DEFAULT_PARAMS))
    return steps
