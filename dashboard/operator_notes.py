"""What each operator of the doggos pipeline does, in a few sentences for a workshop's learners (the live view)."""

from __future__ import annotations

from doggos.pipeline.operators import KINDS, OperatorSnapshot

EXPLANATIONS: dict[str, str] = {
    "read": "Reading is **tasks**: each lists a slice of the files and reads their bytes. Tasks are stateless and "
            "start in milliseconds, so Ray runs as many as there are free CPUs. On a small machine doggos keeps a "
            "CPU free of embedder actors for them: if the actors held every core, no read could run and nothing "
            "would ever reach the model.",
    "label": "Labeling is a cheap per-row map (an image's label is its folder's name). Ray fuses it into the "
             "operator next to it, so no block is handed over just for it.",
    "decode": "Decoding turns image bytes into resized pixel arrays, as tasks beside the embedder actors, so a GPU "
              "never waits for pixels.",
    "embed": "The model is an **actor pool**: each actor loads CLIP once and keeps it in memory, then embeds batch "
             "after batch (a task would load the model again every time). The batch size trades memory for speed: "
             "bigger batches spread each call's overhead over more images but hold more pixels at once (16 on CPU, "
             "64 on GPU). On CPU the actors also decode the images, rather than decode tasks fighting the model's "
             "threads for the same cores.",
    "write": "Writing is **tasks** that turn embedded blocks into Parquet files in the run's staging folder; the run "
             "publishes them with one rename at the end, so a half-written run is never visible.",
    "map": "A per-row or per-batch function that Ray runs as tasks.",
}
EMBED_COUNT_NOTE = ("Its count is Ray's: a row counts once its task's output block is complete. Embedded, above, "
                    "is doggos' count, made as the model returns each batch, so this one trails it by up to a block "
                    "and catches up at the end.")
BACKPRESSURE_NOTE = ("Backpressured: Ray Data holds this operator back because what comes after it cannot keep up, or "
                     "its output would overfill the object store. Normal for the operators before the bottleneck.")


def explain(operator: OperatorSnapshot) -> str:
    """The one-line explanation of an operator for a learner, saying what Ray fused into it."""
    text = EXPLANATIONS[operator.kind]
    fused = [k for k in dict.fromkeys(operator.kinds) if k in KINDS and k != operator.kind]
    if fused:
        steps = f"the {' and '.join(fused)} step{'s' if len(fused) > 1 else ''}"
        text += f" Ray fused {steps} into it: they run in the same workers, with no hand-off between them."
    if operator.kind == "embed":
        text += " " + EMBED_COUNT_NOTE
    return text
