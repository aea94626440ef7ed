"""Checks before launch: every bad source, model, device, output or Ray address is refused naming its field, all at once."""

import os
import socket

import pytest

from doggos.base.config import ConfigErrors, RunConfig, validate
from doggos.pipeline import preflight


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


def test_every_problem_is_reported_at_once(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(preflight, "cuda_available", lambda: False)
    too_many = (os.cpu_count() or 1) + 1
    error = refused(RunConfig(source=str(tmp_path / "missing"), model=str(tmp_path / "no-model"), output="/proc/out",
                              device="cuda", concurrency=too_many))
    assert isinstance(error, ConfigErrors)
    assert set(error.errors) == {"source", "model", "output", "device", "concurrency"}
    assert {p.hint for p in error.problems if p.field in ("source", "model")} == {"demo_kit"}


def test_checks_that_read_a_bad_setting_are_skipped_and_the_others_run(tmp_path):
    settings, problems = validate({"source": str(tmp_path / "missing"), "model": str(tmp_path / "no-model"),
                                   "limit": "abc", "concurrency": "0", "ray_address": "nowhere"})
    assert sorted(p.field for p in problems) == ["concurrency", "limit", "ray_address"]
    # A bad limit hides no source problem; the concurrency and address checks had nothing valid to read.
    assert sorted(p.field for p in preflight.problems(settings)) == ["model", "source"]


def test_more_actors_than_cores_is_refused_on_the_local_ray(image_tree, tiny_clip, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    too_many = (os.cpu_count() or 1) + 1
    error = refused(RunConfig(source=str(image_tree[0]), model=tiny_clip, concurrency=too_many))
    assert error.field == "concurrency" and "copy of the model" in str(error)
    with socket.create_server(("127.0.0.1", 0)) as cluster:  # stands in for a cluster's head: it accepts connections
        address = f"127.0.0.1:{cluster.getsockname()[1]}"
        preflight.check(RunConfig(source=str(image_tree[0]), model=tiny_clip, concurrency=too_many, ray_address=address))
