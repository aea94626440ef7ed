"""Checks before launch: every bad source, model, device or output is refused naming its field."""

import pytest

from doggos import preflight
from doggos.config import RunConfig


def refused(config: RunConfig) -> ValueError:
    with pytest.raises(ValueError) as raised:
        preflight.check(config)
    return raised.value


def test_a_good_config_passes_and_reports_what_it_found(image_tree, tiny_clip, tmp_path):
    root, labels = image_tree
    listing = preflight.check(RunConfig(source=str(root), output=str(tmp_path / "new" / "out"), model=tiny_clip))
    assert len(listing.paths) == len(labels)


def test_cuda_without_a_gpu_is_refused_naming_device(image_tree, tiny_clip, monkeypatch):
    monkeypatch.setattr(preflight, "cuda_available", lambda: False)
    error = refused(RunConfig(source=str(image_tree[0]), model=tiny_clip, device="cuda"))
    assert error.field == "device" and "no CUDA GPU" in str(error)


def test_this_machines_cuda_answer_is_used(image_tree, tiny_clip):
    import torch

    config = RunConfig(source=str(image_tree[0]), model=tiny_clip, device="cuda")
    if torch.cuda.is_available():
        preflight.check(config)
    else:
        assert refused(config).field == "device"


@pytest.mark.parametrize("output", ["/proc/doggos-out", "/dev/null/out"])
def test_an_unwritable_output_is_refused_naming_output(image_tree, tiny_clip, output):
    error = refused(RunConfig(source=str(image_tree[0]), model=tiny_clip, output=output))
    assert error.field == "output"


def test_source_and_model_errors_name_their_fields(image_tree, tiny_clip, tmp_path):
    assert refused(RunConfig(source=str(tmp_path / "missing"), model=tiny_clip)).field == "source"
    assert refused(RunConfig(source=str(image_tree[0]), model=str(tmp_path / "no-model"))).field == "model"


def test_more_actors_than_cores_is_refused_on_the_local_ray(image_tree, tiny_clip):
    import os

    too_many = (os.cpu_count() or 1) + 1
    error = refused(RunConfig(source=str(image_tree[0]), model=tiny_clip, concurrency=too_many))
    assert error.field == "concurrency" and "copy of the model" in str(error)
    preflight.check(RunConfig(source=str(image_tree[0]), model=tiny_clip, concurrency=too_many, ray_address="auto"))
