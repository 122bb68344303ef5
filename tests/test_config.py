"""Configuration: one clear sentence and exit status 2 for bad input, before anything connects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridge.cli import main, run_parser
from bridge.config import ConfigError, Options, build_settings, load_options

BASE = {"LSL_STREAM_NAME": "SimEEG"}


def settings_from(env: dict[str, str], **overrides: str):
    return build_settings(load_options({**BASE, **env}, overrides), check_hosts=False)


def test_defaults_match_the_documented_ones() -> None:
    s = settings_from({})
    assert (s.spectrum.stft.nperseg, s.spectrum.stft.noverlap, s.spectrum.stft.window) == (256, 128, "hann")
    assert s.grafana is not None and s.grafana.url == "http://localhost:3000" and s.grafana.stream_id == "eeg"
    assert (s.influxdb.url, s.influxdb.org, s.influxdb.bucket) == ("http://localhost:8086", "phoprivate", "neuroscience")
    assert (s.influxdb.batch_size, s.influxdb.batch_interval_sec, s.influxdb.measurement) == (10, 1.0, "eeg_spectrum")
    assert s.influxdb.schema == "wide" and s.spectrum.mode == "raw"


def test_cli_flag_overrides_env() -> None:
    s = settings_from({"SPECTRUM_NPERSEG": "512"}, SPECTRUM_NPERSEG="128", SPECTRUM_NOVERLAP="64")
    assert s.spectrum.stft.nperseg == 128 and s.spectrum.stft.noverlap == 64


def test_v1_bucket_is_database_and_retention_policy() -> None:
    s = settings_from({"INFLUXDB_API": "v1", "INFLUXDB_BUCKET": "eeg/autogen"})
    assert s.influxdb.database == ("eeg", "autogen")


def test_empty_urls_disable_the_sinks() -> None:
    s = settings_from({"GRAFANA_URL": "", "INFLUXDB_URL": ""})
    assert s.grafana is None and s.influxdb.url == ""


def test_token_file(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("glsa_secret\n")
    s = settings_from({"GRAFANA_TOKEN_FILE": str(tmp_path / "tok")})
    assert s.grafana is not None and s.grafana.token is not None
    assert s.grafana.token.get_secret_value() == "glsa_secret"
    assert "glsa_secret" not in repr(s)


@pytest.mark.parametrize(
    "env,sentence",
    [
        ({"SPECTRUM_NOVERLAP": "256"}, "SPECTRUM_NOVERLAP (256) must be smaller than SPECTRUM_NPERSEG (256)"),
        ({"SPECTRUM_NPERSEG": "abc"}, "Invalid SPECTRUM_NPERSEG='abc'"),
        ({"SPECTRUM_NPERSEG": "-4"}, "Invalid SPECTRUM_NPERSEG='-4'"),
        ({"BATCH_SIZE": "0"}, "Invalid BATCH_SIZE='0'"),
        ({"SPECTRUM_FMIN": "40", "SPECTRUM_FMAX": "4"}, "SPECTRUM_FMIN (40) must be below SPECTRUM_FMAX (4)"),
        ({"SPECTRUM_WINDOW": "hannn"}, "'hannn' is not a window"),
        ({"INFLUXDB_URL": "localhost:8086"}, "is not an http(s) URL"),
        ({"GRAFANA_URL": "http://grafana:99999"}, "has an invalid port"),
        ({"INFLUXDB_API": "v3"}, "Invalid INFLUXDB_API='v3'"),
        ({"GRAFANA_STREAM_ID": "my stream"}, "Invalid GRAFANA_STREAM_ID"),
        ({"PRECOMPUTED_FREQUENCIES": "1,3,2"}, "strictly increasing"),
        ({"GRAFANA_TOKEN": "x", "GRAFANA_TOKEN_FILE": "/tmp/x"}, "Set either GRAFANA_TOKEN or GRAFANA_TOKEN_FILE"),
        ({"INFLUXDB_TOKEN_FILE": "/nonexistent/token"}, "Cannot read INFLUXDB_TOKEN_FILE"),
    ],
)
def test_bad_values_give_one_sentence(env: dict[str, str], sentence: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from(env)
    message = str(info.value)
    assert sentence in message
    assert "\n" not in message and message.endswith(".")


def test_unresolvable_host_is_reported_before_connecting() -> None:
    with pytest.raises(ConfigError, match="INFLUXDB_URL host 'no-such-host.invalid' cannot be resolved"):
        build_settings(load_options({**BASE, "INFLUXDB_URL": "http://no-such-host.invalid:8086"}))


def test_secret_values_never_appear_in_errors() -> None:
    with pytest.raises(ConfigError) as info:
        load_options({**BASE, "GRAFANA_TOKEN": "glsa_topsecret", "SPECTRUM_NPERSEG": "x"})
    assert "glsa_topsecret" not in str(info.value)


def test_main_exits_2_with_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LSL_STREAM_NAME", "x")
    monkeypatch.setenv("SPECTRUM_NOVERLAP", "300")
    assert main(["run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["eeg-bridge: SPECTRUM_NOVERLAP (300) must be smaller than SPECTRUM_NPERSEG (256)."]


def test_missing_stream_selector(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LSL_STREAM_NAME", "LSL_STREAM_TYPE", "LSL_SOURCE_ID"):
        monkeypatch.delenv(name, raising=False)
    assert main([]) == 2
    assert "Choose the stream with LSL_STREAM_NAME, LSL_STREAM_TYPE or LSL_SOURCE_ID" in capsys.readouterr().err


def test_help_documents_every_option_with_its_default() -> None:
    text = " ".join(run_parser().format_help().split())
    for field in Options.model_fields.values():
        alias = field.alias or ""
        if alias.endswith(("TOKEN", "PASSWORD")):
            assert f"--{alias.lower().replace('_', '-')}" not in text  # never as a flag
            assert alias in text  # but documented (epilog)
            continue
        assert f"env {alias};" in text
    assert "default: 256" in text and "default: http://localhost:3000" in text


def test_console_script_help_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "bridge", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "SPECTRUM_NPERSEG" in out.stdout


def test_readme_documents_every_option() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for field in Options.model_fields.values():
        assert f"| `{field.alias}` |" in readme, field.alias


@pytest.mark.parametrize(
    "env,sentence",
    [
        ({"TLS_CA_BUNDLE": "{tmp}/not-a-cert.pem"}, "Cannot load TLS_CA_BUNDLE"),
        ({"SPOOL_DIR": "/proc/no-such-place/spool"}, "Cannot use SPOOL_DIR '/proc/no-such-place/spool'"),
    ],
)
def test_unusable_files_exit_2_before_connecting(
    env: dict[str, str], sentence: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "not-a-cert.pem").write_text("not a certificate\n")
    monkeypatch.setenv("LSL_STREAM_NAME", "x")
    for key, value in env.items():
        monkeypatch.setenv(key, value.format(tmp=tmp_path))
    assert main(["run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"eeg-bridge: {sentence}")


@pytest.mark.parametrize("alias", [f.alias for f in Options.model_fields.values()])
def test_an_empty_or_blank_variable_means_unset(alias: str) -> None:
    """Compose files and .env templates write `METRICS_PORT=`: that is "not set", for every option
    except the two whose empty value is documented to switch a sink off."""
    for blank in ("", "  "):
        if alias == "GRAFANA_URL":
            assert settings_from({alias: blank}).grafana is None  # live push off
            continue
        if alias == "INFLUXDB_URL":
            assert settings_from({alias: blank}).influxdb.url == ""  # spool only
            continue
        if alias == "SPECTRUM_BANDS":
            assert settings_from({alias: blank}).spectrum.derived.bands == ()  # no band power
            continue
        if alias == "LSL_STREAM_NAME":
            assert load_options({alias: blank, "LSL_STREAM_TYPE": "EEG"}) == load_options({"LSL_STREAM_TYPE": "EEG"})
            continue
        assert load_options({**BASE, alias: blank}) == load_options(BASE)
        assert load_options(BASE, {alias: blank}) == load_options(BASE)  # an empty flag too


def test_metrics_port_in_use_exits_2_with_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for name, value in {"LSL_STREAM_NAME": "x", "GRAFANA_URL": "", "INFLUXDB_URL": "", "METRICS_PORT": str(port),
                            "SPOOL_DIR": str(tmp_path / "spool")}.items():
            monkeypatch.setenv(name, value)
        assert main(["run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"eeg-bridge: Cannot serve metrics on 127.0.0.1:{port} (Address already in use); choose another METRICS_PORT."


def test_only_options_documented_with_an_empty_meaning_keep_it() -> None:
    from bridge.config import EMPTY_IS_A_VALUE

    documented = {f.alias for f in Options.model_fields.values() if "empty" in (f.description or "").lower()}
    assert documented == set(EMPTY_IS_A_VALUE)
