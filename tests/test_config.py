"""RunConfig: every default is valid, every bad value is refused with the field's name, all of them at once."""

import pickle

import pytest

from doggos.base.config import (DEFAULT_MODEL, ConfigError, ConfigErrors, RunConfig, split_ray_address, user_message,
                                user_messages, validate)


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


def test_every_bad_setting_is_reported_at_once():
    with pytest.raises(ConfigErrors) as raised:
        RunConfig(source=" ", batch_size=0, concurrency="abc", ray_address="http://head:8265")
    error = raised.value
    assert isinstance(error, ConfigError) and isinstance(error, ValueError)
    assert set(error.errors) == {"source", "batch_size", "concurrency", "ray_address"}
    assert error.errors["batch_size"] == "must be at least 1 (got 0)"
    assert str(error) == "; ".join(f"{field}: {message}" for field, message in error.errors.items())
    assert f"{error.field}: {error.message}" == str(error)  # code that knows only ConfigError still shows them all
    assert user_messages(error) == [f"{field}: {message}" for field, message in error.errors.items()]


def test_validate_returns_the_good_settings_beside_the_problems():
    settings, problems = validate({"source": " /data ", "batch_size": "0", "limit": "5", "ray_address": "  "})
    assert [p.field for p in problems] == ["batch_size"]
    assert "batch_size" not in settings
    assert (settings["source"], settings["limit"], settings["ray_address"], settings["model"]) == ("/data", 5, None, DEFAULT_MODEL)


@pytest.mark.parametrize("address, kept", [("auto", "auto"), (" AUTO ", "auto"), ("10.0.0.5:6379", "10.0.0.5:6379"),
                                           ("ray://head", "ray://head"), ("ray://head:10001", "ray://head:10001"),
                                           ("[::1]:6379", "[::1]:6379")])
def test_ray_addresses_in_every_form_ray_takes_are_accepted(address, kept):
    assert RunConfig(source="data", ray_address=address).ray_address == kept


@pytest.mark.parametrize("address, says", [("local", "leave it empty"), ("http://head:8265", "dashboard"),
                                           ("head", "names no port"), ("head:0", "is not a port"),
                                           ("head:abc", "is not a port"), (":6379", "names no host")])
def test_malformed_ray_addresses_are_refused_saying_what_one_looks_like(address, says):
    with pytest.raises(ConfigError, match=f"^ray_address: .*{says}") as raised:
        RunConfig(source="data", ray_address=address)
    assert raised.value.field == "ray_address"


def test_split_ray_address_gives_the_kind_host_and_port():
    assert split_ray_address("auto") == ("auto", None, None)
    assert split_ray_address("ray://head") == ("client", "head", 10001)  # Ray Client's own default port
    assert split_ray_address("[::1]:6379") == ("gcs", "::1", 6379)


def test_advice_is_worded_for_each_surface_and_given_once():
    problems = ConfigErrors([ConfigError("source", "missing", hint="demo_kit"), ConfigError("model", "offline", hint="demo_kit")])
    cli = user_messages(problems)
    assert cli[0].startswith("source: missing. Offline? ") and "python -m doggos demo-kit demo" in cli[0]
    assert cli[1] == "model: offline"  # the same advice is not repeated
    ui = user_message(problems, surface="ui")
    assert "**Prepare demo kit** above" in ui and "python -m" not in ui and "`" not in ui
    assert user_message(problems, surface=None) == "source: missing; model: offline"


def test_errors_survive_pickling_as_ray_ships_them():
    from doggos.pipeline.models import ModelError
    from doggos.pipeline.sources import SourceError

    for error in (ModelError("offline", "demo_kit"), SourceError("gone"), ConfigError("limit", "bad"),
                  ConfigErrors([ConfigError("limit", "bad"), SourceError("gone", "demo_kit")])):
        copy = pickle.loads(pickle.dumps(error))
        assert (type(copy), str(copy), copy.field, copy.message, copy.hint) == (type(error), str(error), error.field, error.message, error.hint)
    assert pickle.loads(pickle.dumps(error)).errors == {"limit": "bad", "source": "gone"}
