"""Model checks: a bad folder, a non-CLIP model and an offline miss are refused with a pointer to the demo kit."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from doggos.base.config import user_message
from doggos.pipeline import models
from doggos.pipeline.models import ModelError

ROOT = Path(__file__).resolve().parent.parent


def test_a_saved_clip_folder_is_available_and_flagged_random(tiny_clip):
    models.check_available(tiny_clip)
    assert models.has_random_weights(tiny_clip)
    assert "RANDOM WEIGHTS" in models.describe(tiny_clip)
    assert models.describe("openai/clip-vit-base-patch32") == "openai/clip-vit-base-patch32"


def test_offline_and_not_cached_points_to_the_demo_kit_in_each_surfaces_words(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelError, match=r"^model: .*not in the Hugging Face cache") as raised:
        models.check_available("openai/clip-vit-base-patch32")
    assert raised.value.hint == "demo_kit"
    assert "python -m doggos demo-kit demo" in user_message(raised.value)  # the command line names the command
    ui = user_message(raised.value, surface="ui")  # the dashboard names its button, in Markdown that renders
    assert "Press **Prepare demo kit** above" in ui and "python -m" not in ui and "`" not in ui


def test_unreachable_hub_is_detected_without_long_retries(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:1")  # nothing listens there
    with pytest.raises(ModelError, match="cannot be reached"):
        models.check_available("openai/clip-vit-base-patch32")


def test_loading_a_missing_model_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelError, match="cannot be downloaded") as raised:
        models.load_model("openai/clip-vit-base-patch32")
    assert raised.value.hint == "demo_kit" and "demo-kit" in user_message(raised.value)


def test_folders_without_a_model_or_with_another_model_are_refused(tmp_path):
    with pytest.raises(ModelError, match="not a folder"):
        models.check_available(str(tmp_path / "nope"))
    with pytest.raises(ModelError, match="no config.json"):
        models.check_available(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelError, match="needs a CLIP model"):
        models.check_available(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="not a model config"):
        models.check_available(str(tmp_path))


def test_checking_a_saved_model_does_not_import_transformers(tiny_clip):
    """The check runs before every launch: reading config.json must not cost transformers' import (~2 s)."""
    code = ("import sys; from doggos.pipeline import models; models.check_available(sys.argv[1]); "
            "print(sorted(m for m in ('transformers', 'torch') if m in sys.modules))")
    found = subprocess.run([sys.executable, "-c", code, tiny_clip], capture_output=True, text=True, cwd=ROOT)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "[]"
