from __future__ import annotations

from pathlib import Path

import pytest

from device_agent.config import AgentConfig, ConfigError, load_config

GOOD = """
device_id = "pi-kitchen-01"
hardware_class = "pi-zero-2w"
model_dir = "chain"
server_url = "https://fleet.example.com"

[broker]
url = "mqtts://broker.example.com:8883"
username = "pi-kitchen-01"
password_file = "secret"

[loop]
sample_period_s = 0.5
window_s = 30

[fallback]
max_latency_us = 20000
min_battery_pct = 15

[energy]
min_battery_pct = 25
"""


BASE = 'device_id = "d1"\nhardware_class = "pi-4"\nmodel_dir = "m"\n'


def write(tmp_path: Path, text: str, name: str = "device.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_good_config_loads_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s3cret\n")
    cfg = load_config(write(tmp_path, GOOD))
    assert isinstance(cfg, AgentConfig)
    assert cfg.model_dir == (tmp_path / "chain").resolve()
    assert cfg.state_dir == (tmp_path / "state").resolve()
    assert cfg.profile.name == "pi-zero-2w"
    assert cfg.loop.window_s == 30 and cfg.fallback.max_latency_us == 20000
    assert cfg.fallback.latency_windows == 3  # default kept
    assert cfg.energy.min_battery_pct == 25
    assert cfg.broker.read_password() == "s3cret"


def test_minimal_config(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, 'device_id = "d1"\nhardware_class = "cortex-m4f"\nmodel_dir = "/m"\n'))
    assert cfg.model_dir == Path("/m") and cfg.broker.url == "mqtt://localhost:1883"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('device_id = "d1"\nhardware_class = "cortex-m4f"\n', "model_dir"),
        ('device_id = "d1"\nhardware_class = "z80"\nmodel_dir = "m"\n', "unknown hardware class 'z80'"),
        ('device_id = "bad id/with+slash"\nhardware_class = "pi-4"\nmodel_dir = "m"\n', "device_id"),
        (
            'device_id = "d1"\nhardware_class = "pi-4"\nmodel_dir = "m"\n[broker]\nurl = "http://x"\n',
            "broker.url",
        ),
        (
            'device_id = "d1"\nhardware_class = "pi-4"\nmodel_dir = "m"\n[broker]\npassword = "a"\n'
            'password_file = "f"\n',
            "either password or password_file",
        ),
        (
            'device_id = "d1"\nhardware_class = "pi-4"\nmodel_dir = "m"\n[loop]\nwindow_s = 0\n',
            "loop.window_s",
        ),
        ('device_id = "d1"\nhardware_class = "pi-4"\nmodel_dir = "m"\ncolour = "red"\n', "colour"),
        (
            'device_id = "d1"\nhardware_class = "pi-4"\nmodel_dir = "m"\n[fallback]\nlatency_windows = 0\n',
            "fallback.latency_windows",
        ),
        (
            'device_id = "d1"\nhardware_class = "pi-4"\nmodel_dir = "m"\nserver_url = "ftp://x"\n',
            "server_url",
        ),
        ("device_id = [unclosed", "not valid TOML"),
        (BASE + '[loop]\nwindow_s = "fast"\n', r"loop\.window_s: must be a number"),
        (BASE + "[broker]\nkeepalive_s = true\n", r"broker\.keepalive_s: must be an integer"),
        (BASE + "[broker]\nkeepalive_s = 4\n", r"broker\.keepalive_s: must be at least 5"),
        (BASE + "fallback = 3\n", r"fallback: must be a table"),
        (BASE + '[broker]\nprotocol = "4"\n', r"broker\.protocol: must be '5' or '3\.1\.1'"),
        (BASE + 'fetch_revocations = "yes"\n', r"fetch_revocations: must be true or false"),
        (BASE + "[loop]\ncolour = 1\n", r"loop\.colour: unknown key"),
        (BASE + "[energy]\nmin_battery_pct = 101\n", r"energy\.min_battery_pct: must be at most 100"),
        (
            BASE + "[fallback]\nmax_false_positive_rate = nan\n",
            r"fallback\.max_false_positive_rate: must be finite",
        ),
        ('device_id = 7\nhardware_class = "pi-4"\nmodel_dir = "m"\n', r"device_id: must be a string"),
    ],
)
def test_bad_configs_name_the_problem(tmp_path: Path, text: str, match: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError, match=match) as info:
        load_config(p)
    assert str(p) in str(info.value)


def test_missing_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.toml")
    p = tmp_path / "bin.toml"
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)


def test_missing_password_file_is_reported_when_read(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    with pytest.raises(ConfigError, match="password_file"):
        cfg.broker.read_password()


def test_sections_validate_when_built_in_code_too() -> None:
    from device_agent.config import LoopConfig
    from device_agent.sections import SectionError

    cfg = AgentConfig(device_id="d1", hardware_class="pi-4", model_dir="m")  # type: ignore[arg-type]
    assert cfg.model_dir == Path("m") and cfg.loop.window_s == 60.0
    with pytest.raises(SectionError, match="window_s: must be greater than 0"):
        LoopConfig(window_s=0)
    changed = cfg.fallback.model_copy(update={"recover_windows": 7})
    assert changed.recover_windows == 7 and cfg.fallback.recover_windows == 3
    with pytest.raises(SectionError, match="recover_windows: must be at least 1"):
        cfg.fallback.model_copy(update={"recover_windows": 0})
