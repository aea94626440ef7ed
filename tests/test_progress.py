"""doggos.pipeline.progress: the tracker's counts, per-node shares, rate and phase, without Ray."""

from doggos.pipeline.progress import ProgressCounter


def test_phase_says_loading_model_until_the_first_image_is_through():
    counter = ProgressCounter(found=10)
    assert counter.snapshot().phase == "loading model"
    counter.add_decoded(2)
    assert counter.snapshot().phase == "embedding"
    assert counter.snapshot("writing").phase == "writing"


def test_a_failure_alone_also_ends_loading():
    counter = ProgressCounter(found=3)
    counter.add_decoded(0, [("a.jpg", "not an image")])
    snapshot = counter.snapshot()
    assert (snapshot.phase, snapshot.failed) == ("embedding", 1)


def test_counts_are_clamped_and_shared_out_by_node():
    counter = ProgressCounter(found=4)
    counter.add_decoded(4)
    counter.add_embedded(3, "node-a")
    counter.add_embedded(3, "node-b")  # a retried batch reported twice
    assert counter.snapshot().embedded == 4  # never past the total
    assert counter.rows_by_node() == {"node-a": 3, "node-b": 3}
    counter.add_embedded(1)  # a stand-in tracker without a node counts in the total only
    assert counter.rows_by_node() == {"node-a": 3, "node-b": 3}


def test_only_the_first_actor_to_ask_embeds_the_prompts():
    counter = ProgressCounter(found=3)
    assert [counter.claim_prompts() for _ in range(3)] == [True, False, False]
