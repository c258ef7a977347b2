"""Configuration precedence and validation; job files, templates and requirements."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarm.config import BrokerUrl, load_config, parse_broker_url
from swarm.errors import ConfigError, InvalidSpec
from swarm.jobspec import load_job_file, parse_requirements, priority_index, render
from swarm.messages import Requirements


def test_flags_beat_environment_beat_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text(
        '[node]\ncluster = "file"\nbroker = "mqtt://file:1"\nslots = 3\n'
        "[tasks]\nallow_command = true\nallowed_paths = ['/srv']\n"
        "[timeouts]\nheartbeat_interval = 0.25\nfailure_timeout = 2.0\nelection_timeout = 3.0\n"
        "[placement]\nbattery = 5.0\n"
    )
    monkeypatch.setenv("SWARM_CLUSTER", "env")
    monkeypatch.delenv("SWARM_BROKER", raising=False)
    config = load_config(conf, broker="mqtt://flag:2", cluster=None)
    assert (config.cluster, config.broker, config.core.slots) == ("env", "mqtt://flag:2", 3)
    assert config.policy.allow_command and config.policy.allowed_paths == ("/srv",)
    assert config.core.heartbeat_interval == 0.25 and config.core.weights.battery == 5.0
    assert load_config(conf, slots=8).core.slots == 8


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "[timeouts]\nheartbeat_interval = 5.0\nfailure_timeout = 3.0\n",
            "heartbeat_interval < failure_timeout",
        ),
        ("[timeouts]\nbogus = 1\n", "unknown key"),
        ("[node]\nflavour = 'x'\n", "unknown key"),
        ("[tasks]\nallow_everything = true\n", "unknown key"),
        ("[node]\nbroker = 'http://x'\n", "mqtt://host:port"),
        ("not toml [", "config file"),
    ],
)
def test_invalid_config_is_refused_clearly(tmp_path: Path, text: str, needle: str) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text(text)
    with pytest.raises(ConfigError, match=None) as info:
        load_config(conf)
    assert needle in str(info.value)


def test_broker_urls() -> None:
    assert parse_broker_url("mqtt://10.0.0.2:1884") == BrokerUrl("10.0.0.2", 1884)
    assert parse_broker_url("pi.local") == BrokerUrl("pi.local", 1883)
    assert parse_broker_url("mqtts://n-1ad6b476:p%40ss@pi.local") == BrokerUrl(
        "pi.local", 8883, tls=True, username="n-1ad6b476", password="p@ss"
    )
    with pytest.raises(ConfigError) as info:
        parse_broker_url("https://u-3f2a9c01:secret@pi.local")
    assert "secret" not in str(info.value)


def test_requirements_and_priorities() -> None:
    assert parse_requirements(["min_cores=2", "gpu=true", "exclude=a,b"]) == Requirements(
        min_cores=2, gpu=True, exclude=("a", "b")
    )
    with pytest.raises(InvalidSpec, match="unknown requirement 'ram'"):
        parse_requirements(["ram=4"])
    with pytest.raises(InvalidSpec, match="expected int"):
        parse_requirements(["min_cores=many"])
    assert priority_index("urgent") == 0 and priority_index("background") == 4
    with pytest.raises(InvalidSpec):
        priority_index("asap")


def test_templates_render_and_missing_variables_fail() -> None:
    assert render({"a": ["x {{ who }}", 3]}, {"who": "me"}) == {"a": ["x me", 3]}
    with pytest.raises(InvalidSpec, match="'nobody' has no value"):
        render("{{nobody}}", {})


def test_chain_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "kind: chain\nvars: {n: 2}\ndefaults: {priority: high, max_retries: 1}\n"
        "tasks:\n  - {id: a, type: echo, payload: {v: '{{n}}'}}\n  - {id: b, type: echo}\n"
    )
    job = load_job_file(path, {"n": "5"}, job_id="J")
    a, b = job.tasks
    assert (a.task_id, a.payload, a.priority, a.retry.max_retries) == ("J.a", {"v": "5"}, 1, 1)
    assert (b.after, b.pipe) == (("J.a",), True)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("kind: chain\ntasks: [{type: echo, after: [x]}]\n", "only for kind batch"),
        ("kind: swarm\ntasks: []\n", "kind must be"),
        ("tasks: [{type: echo, colour: red}]\n", "unknown key"),
        ("tasks: [{payload: {}}]\n", "needs a 'type'"),
        ("tasks: [{id: a, type: echo, after: [a]}]\n", "cycle"),
        ("tasks: [oops]\n", "must be an object"),
        ("{not yaml: [\n", "not valid YAML"),
    ],
)
def test_bad_job_files(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "j.yaml"
    path.write_text(text)
    with pytest.raises(InvalidSpec) as info:
        load_job_file(path)
    assert needle in str(info.value)
