"""The command line: the demo kit offline, a foreground embed end to end, and errors that name the field."""

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from doggos.cli import build_parser, config_from_args, format_progress, main
from doggos.pipeline.progress import Progress


def doggos(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "doggos", *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.mark.ray
@pytest.mark.slow
def test_demo_kit_then_embed_end_to_end(tmp_path):
    kit = doggos("demo-kit", tmp_path / "kit", "--per-class", 3)
    assert kit.returncode == 0, kit.stderr
    assert "RANDOM WEIGHTS" in kit.stdout
    source, model = tmp_path / "kit" / "digits", tmp_path / "kit" / "clip-random-weights-tiny"
    assert sorted(p.name for p in source.iterdir()) == sorted(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])

    out = tmp_path / "run"
    result = doggos("embed", "--source", source, "--model", model, "--out", out, "--batch-size", 4)
    assert result.returncode == 0, result.stderr
    assert "done: 30 images embedded" in result.stdout and "RANDOM WEIGHTS" in result.stdout
    assert "ray: local; embedded on 1 node: " in result.stdout and " 30 images" in result.stdout
    assert "30/30 images embedded" in result.stderr  # the terminal progress line
    table = pq.read_table(out / "embeddings")
    assert table.num_rows == 30 and len(set(table.column("class").to_pylist())) == 10
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["rows"] == 30

    # The default map was made as the run's last step, so the Map page opens at once.
    assert manifest["steps"]["map"] is not None and list((out / "projections").glob("*.parquet"))
    assert "map: ready in" in result.stdout
    # ... and so was the label-quality report, on the run's Ray: `quality` reads it without computing again.
    assert manifest["steps"]["quality"] is not None and list((out / "quality").glob("*.json"))
    report = doggos("quality", out, "--json")
    assert report.returncode == 0, report.stderr
    found = json.loads(report.stdout)
    assert {"suspects", "duplicates", "labels"} <= set(found) and "checking labels" not in report.stderr
    assert {"path", "class", "suggested", "agreement"} <= set(found["suspects"][0])
    assert sorted(label["label"] for label in found["labels"]) == sorted(p.name for p in source.iterdir())
    assert found["zero_shot"]["available"]  # the demo kit's model has a text tower and a tokenizer
    # The embedder actors embedded the prompts while they held the model: the step loaded no text tower of its own.
    embedded = pq.read_table(out / "quality" / "prompt_features.parquet").column("prompt").to_pylist()
    assert sorted(embedded) == sorted(f"a photo of a {label.name}." for label in source.iterdir())
    assert "zero-shot: 10 prompts embedded by the run's embedder actors" in (out / "log.txt").read_text()

    hits = doggos("search", out, "--row", 0, "-k", 5, "--json")
    assert hits.returncode == 0, hits.stderr
    rows = json.loads(hits.stdout)
    assert [h["rank"] for h in rows] == [1, 2, 3, 4, 5] and all({"path", "class", "score"} <= set(h) for h in rows)
    assert rows == sorted(rows, key=lambda h: -h["score"]) and "RANDOM WEIGHTS" in hits.stderr
    words = doggos("search", out, "--text", "a handwritten seven", "--label", "seven", "-k", 3, "--json")
    assert words.returncode == 0 and {h["class"] for h in json.loads(words.stdout)} == {"seven"}
    bad = doggos("search", out, "--row", 999)
    assert bad.returncode == 2 and "error: row: " in bad.stderr

    again = doggos("embed", "--source", source, "--model", model, "--out", out, "--no-map")
    assert again.returncode == 2 and "already holds a run" in again.stderr


@pytest.mark.parametrize(
    "args, field",
    [
        (["--batch-size", "0"], "batch_size"),
        (["--batch-size", "many"], "batch_size"),
        (["--concurrency", "-2"], "concurrency"),
        (["--limit", "0"], "limit"),
        (["--s3-endpoint", "minio:9000"], "s3_endpoint"),
    ],
)
def test_bad_settings_exit_2_naming_the_field(args, field, capsys, tmp_path):
    assert main(["embed", "--source", str(tmp_path), "--out", str(tmp_path / "o"), *args]) == 2
    assert f"error: {field}:" in capsys.readouterr().err


def test_bad_paths_and_models_are_refused_before_launch(capsys, tmp_path, tiny_clip):
    assert main(["embed", "--source", str(tmp_path / "missing"), "--model", tiny_clip, "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "imgs" / "pug").mkdir(parents=True)
    (tmp_path / "imgs" / "pug" / "a.jpg").write_bytes(b"x")
    assert main(["embed", "--source", str(tmp_path / "imgs"), "--model", str(tmp_path / "nomodel"), "--out", str(tmp_path / "o")]) == 2
    assert "error: " in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_auto_means_default():
    args = build_parser().parse_args(["runs", "start", "--source", "x", "--concurrency", "auto", "--batch-size", "auto"])
    config = config_from_args(args, None)
    assert (config.concurrency, config.batch_size) == (None, None)


def test_the_progress_line_names_any_phase_but_embedding():
    loading = format_progress(Progress(found=2880, phase="loading model"))
    assert loading == "  loading model · 0/2880 images embedded"  # no rate before one is known
    embedding = format_progress(Progress(found=2880, embedded=960, images_per_s=16.0, eta_s=120.0, phase="embedding"))
    assert embedding == "  960/2880 images embedded · 16.0 images/s (last 5 s), ETA 2 min 00 s"


def test_a_finished_progress_line_gives_the_run_rate_the_summary_gives():
    """The last line of `embed` and `runs status` names the run rate (the manifest's), not the last 5 s's."""
    done = format_progress(Progress(found=300, embedded=300, images_per_s=25.1, run_images_per_s=14.0, phase="done"))
    assert done == "  done · 300/300 images embedded · 14.0 images/s (start to Parquet)"
