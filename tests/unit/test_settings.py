"""Settings precedence and validation."""

from __future__ import annotations

import pytest

from tasksync.cli import build_parser
from tasksync.settings import load_settings, setting_docs


def test_precedence_is_defaults_then_file_then_environment_then_flags(tmp_path):
    config = tmp_path / "tasksync.yaml"
    config.write_text("port: 9001\nheartbeat_interval: 5\nhistory_size: 10\n")
    env = {"TASKSYNC_HEARTBEAT_INTERVAL": "7", "TASKSYNC_HISTORY_SIZE": "20"}
    settings = load_settings({"history_size": 30}, environ=env, config_file=config)
    assert (settings.port, settings.heartbeat_interval, settings.history_size) == (9001, 7.0, 30)
    assert settings.outbox_size == 1000  # untouched default


def test_environment_lists_and_booleans():
    settings = load_settings(
        environ={
            "TASKSYNC_API_KEYS": "a, b,,c",
            "TASKSYNC_DEV": "1",
            "TASKSYNC_ALLOWED_ORIGINS": "https://a.test,https://*.b.test",
            "TASKSYNC_NOTIFIERS": "toast,webhook",
        }
    )
    assert settings.api_keys == ["a", "b", "c"] and settings.dev is True
    assert settings.allowed_origins == ["https://a.test", "https://*.b.test"]
    assert settings.notifiers == ["toast", "webhook"]


def test_config_file_from_the_environment(tmp_path):
    config = tmp_path / "tasksync.toml"
    config.write_text('broker = "memory"\nport = 9100\n')
    assert load_settings(environ={"TASKSYNC_CONFIG": str(config)}).port == 9100


@pytest.mark.parametrize(
    ("overrides", "says"),
    [({"port": 70000}, "port"), ({"heartbeat_interval": 0}, "heartbeat_interval"), ({"nonsense": 1}, "nonsense")],
)
def test_invalid_settings_name_the_setting(overrides, says):
    with pytest.raises(ValueError, match=says):
        load_settings(overrides, environ={})


def test_every_setting_has_a_description_and_a_flag():
    flags = build_parser()._subparsers._group_actions[0].choices["serve"].format_help()
    for doc in setting_docs():
        assert doc.description, doc.name
        assert "--" + doc.name.replace("_", "-") in flags


def test_configuration_doc_matches_the_settings():
    import importlib.util
    from pathlib import Path

    root = Path(__file__).parents[2]
    spec = importlib.util.spec_from_file_location("render_config_doc", root / "scripts" / "render_config_doc.py")
    renderer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(renderer)
    doc = (root / "docs" / "configuration.md").read_text()
    assert renderer.render_table() in doc, "run scripts/render_config_doc.py"
