"""RunConfig: every default is valid, every bad value is refused with the field's name."""

import pytest

from doggos.config import DEFAULT_MODEL, ConfigError, RunConfig


def test_defaults_are_valid_and_documented_values():
    config = RunConfig(source="data", output="out")
    assert config.model == DEFAULT_MODEL == "openai/clip-vit-base-patch32"
    assert (config.device, config.batch_size, config.concurrency, config.limit) == ("auto", None, None, None)


@pytest.mark.parametrize(
    "field, value",
    [
        ("batch_size", 0),
        ("batch_size", -3),
        ("batch_size", "abc"),
        ("batch_size", 2.5),
        ("batch_size", True),
        ("batch_size", 10**9),
        ("concurrency", 0),
        ("concurrency", "-1"),
        ("concurrency", 100_000),
        ("limit", 0),
        ("device", "tpu"),
        ("source", ""),
        ("source", "   "),
        ("model", ""),
        ("s3_endpoint", "localhost:9000"),
        ("thumbnail_size", 4),
    ],
)
def test_bad_values_name_their_field(field, value):
    with pytest.raises(ConfigError) as raised:
        RunConfig(**{"source": "data", "output": "out", field: value})
    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}: ")


def test_text_numbers_from_forms_are_accepted():
    config = RunConfig(source=" data ", batch_size="32", concurrency=" 2 ", limit="", ray_address="  ")
    assert (config.source, config.batch_size, config.concurrency, config.limit, config.ray_address) == ("data", 32, 2, None, None)


def test_round_trips_through_json_dict():
    config = RunConfig(source="s3://b/p", output="/tmp/o", batch_size=8, s3_endpoint="http://127.0.0.1:9000")
    assert RunConfig.from_dict(config.to_dict()) == config


def test_unknown_settings_are_refused():
    with pytest.raises(ConfigError, match="colour"):
        RunConfig.from_dict({"source": "x", "colour": "red"})
