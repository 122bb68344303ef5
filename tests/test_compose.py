"""Cross-references of the one-command stack, checked without Docker.

docker-compose.yml, .env.example, provisioning/, dashboards/ and the Dockerfile name each
other by path, uid and variable; a typo in any of them only shows when someone runs
``docker compose up``, which cannot happen on the build machines.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import Options

ROOT = Path(__file__).resolve().parents[1]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES: dict[str, Any] = COMPOSE["services"]
ENV_EXAMPLE = ROOT / ".env.example"
#: ``$VAR`` / ``${VAR}`` / ``${VAR:-default}`` / ``${VAR:?message}``; ``$$`` is an escaped dollar.
INTERPOLATION = re.compile(r"(?<!\$)\$(?:\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}|([A-Za-z_][A-Za-z0-9_]*))")


def _variables(text: str) -> set[str]:
    """Variables interpolated in a YAML text; full-line comments are not interpolated."""
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return {braced or bare for braced, bare in INTERPOLATION.findall(code)}


def _env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: not KEY=value: {line!r}"
            pairs[key.strip()] = value.strip()
    return pairs


def _mounts(service: str) -> list[tuple[str, str]]:
    """(source, target) of every volume entry in short syntax."""
    result = []
    for entry in SERVICES[service].get("volumes", []):
        source, target, *_ = entry.split(":")
        result.append((source, target))
    return result


def _provider() -> dict[str, Any]:
    (path,) = (ROOT / "provisioning" / "dashboards").glob("*.y*ml")
    (provider,) = yaml.safe_load(path.read_text(encoding="utf-8"))["providers"]
    return provider


def test_every_bind_mounted_host_path_exists() -> None:
    named = set(COMPOSE.get("volumes") or {})
    for service in SERVICES:
        for source, _ in _mounts(service):
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{service} mounts missing {source}"
            else:
                assert source in named, f"{service} uses undeclared volume {source}"


def test_repository_files_are_mounted_read_only() -> None:
    for service in SERVICES:
        for entry in SERVICES[service].get("volumes", []):
            if entry.startswith("./"):
                assert entry.endswith(":ro"), f"{service}: {entry} should be read-only"


def test_provider_path_is_where_the_dashboards_are_mounted() -> None:
    mounts = dict(_mounts("grafana"))
    provider = _provider()
    assert provider["type"] == "file"
    assert mounts["./dashboards"] == provider["options"]["path"]
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"] + "/")
    assert (ROOT / "dashboards" / Path(home).name).is_file()
    for sub in ("datasources", "dashboards"):
        assert mounts[f"./provisioning/{sub}"] == f"/etc/grafana/provisioning/{sub}"


def test_every_compose_variable_is_documented_in_env_example() -> None:
    documented = _env_example()
    used = _variables((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert used, "the compose file should take its settings from .env"
    assert not used - set(documented), f"add to .env.example: {sorted(used - set(documented))}"


def test_every_provisioning_variable_reaches_grafana() -> None:
    grafana_env = SERVICES["grafana"]["environment"]
    for path in sorted((ROOT / "provisioning").rglob("*.y*ml")):
        used = _variables(path.read_text(encoding="utf-8"))
        missing = used - set(grafana_env)
        assert not missing, f"{path.relative_to(ROOT)} uses {sorted(missing)}, not set for the grafana service"


def test_images_are_pinned() -> None:
    for name, service in SERVICES.items():
        image = service.get("image", "")
        if "build" in service:
            assert image.endswith(":local"), f"{name}: locally built image should be tagged :local"
            continue
        repo, _, tag = image.rpartition(":")
        assert repo and re.fullmatch(r"\d+\.\d+\.\d+", tag), f"{name}: pin an exact version, not {image!r}"
    assert SERVICES["influxdb"]["image"].startswith("influxdb:2.7.")
    # the release current when the dashboards were last checked against Grafana's source
    assert SERVICES["grafana"]["image"] == "grafana/grafana:13.2.3"


def test_influxdb_is_initialised_from_env() -> None:
    env = SERVICES["influxdb"]["environment"]
    assert env["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    for key in ("USERNAME", "PASSWORD", "ORG", "BUCKET", "ADMIN_TOKEN"):
        assert _variables(str(env[f"DOCKER_INFLUXDB_INIT_{key}"])), key


def test_bridge_environment_uses_only_real_options() -> None:
    aliases = {field.alias for field in Options.model_fields.values()}
    env = SERVICES["bridge"]["environment"]
    assert not set(env) - aliases, f"unknown bridge settings: {sorted(set(env) - aliases)}"
    assert env["GRAFANA_URL"] == "http://grafana:3000"
    assert env["INFLUXDB_URL"] == "http://influxdb:8086"
    assert {"GRAFANA_ADMIN_USER", "GRAFANA_ADMIN_PASSWORD", "GRAFANA_TOKEN"} <= set(env)


def test_env_example_matches_bridge_and_dashboard_defaults() -> None:
    documented = _env_example()
    defaults = {field.alias: field.default for field in Options.model_fields.values()}
    for key in ("INFLUXDB_ORG", "INFLUXDB_BUCKET", "GRAFANA_STREAM_ID", "GRAFANA_PUSH"):
        assert documented[key] == defaults[key], key
    live = json.loads((ROOT / "dashboards" / "eeg-live-spectrogram.json").read_text(encoding="utf-8"))
    (box,) = [v for v in live["templating"]["list"] if v["name"] == "live_stream"]
    assert box["current"]["value"] == documented["GRAFANA_STREAM_ID"]
    assert len(documented["INFLUXDB_ADMIN_PASSWORD"]) >= 8  # InfluxDB's set-up refuses shorter


@pytest.mark.parametrize("service", ["bridge", "simulator"])
def test_lsl_peers_share_one_network_namespace(service: str) -> None:
    assert SERVICES[service]["network_mode"] == "service:lsl-net"
    assert "networks" not in SERVICES[service] and "ports" not in SERVICES[service]


def test_simulator_publishes_the_stream_the_bridge_reads() -> None:
    command = SERVICES["simulator"]["command"]
    assert command[0] == "simulate"
    name = command[command.index("--name") + 1]
    assert name == SERVICES["bridge"]["environment"]["LSL_STREAM_NAME"]


def test_ports_are_published_on_localhost_only() -> None:
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"


def test_dockerfile_builds_the_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.MULTILINE)
    assert 'ENTRYPOINT ["eeg-bridge"]' in dockerfile
    assert "pip install ." in dockerfile
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()}
    for line in re.findall(r"^COPY (.+) \S+$", dockerfile, re.MULTILINE):
        for source in line.split():
            assert source not in ignored, f".dockerignore hides {source}"


def test_env_file_is_git_ignored() -> None:
    assert ".env" in (ROOT / ".gitignore").read_text(encoding="utf-8").split()


def test_the_stack_does_not_let_anyone_push_without_a_token() -> None:
    """The stand-in configured as the compose file configures Grafana: a push without a token, or with
    an expired one, is refused 401. With [auth.anonymous] on it would be an anonymous Viewer's push,
    answered 200 (authnimpl/service.go falls through; reqSignedIn passes it)."""
    import httpx

    from tests.fixtures_grafana import DEFAULT_TOKENS, DEFAULT_USERS, EXPIRED_TOKEN
    from tests.grafana_standin import GrafanaLiveStandIn

    setting = str(SERVICES["grafana"]["environment"].get("GF_AUTH_ANONYMOUS_ENABLED", "false"))
    for name, default in re.findall(r"\$\{(\w+):-([^}]*)\}", setting):  # what .env.example resolves it to
        setting = setting.replace(f"${{{name}:-{default}}}", _env_example().get(name, default))
    with GrafanaLiveStandIn(tokens=DEFAULT_TOKENS, users=DEFAULT_USERS,
                            anonymous_enabled=setting.lower() == "true") as grafana:
        anyone = httpx.post(grafana.push_url("eeg"), content=b"Fz a=1 1", timeout=10)
        expired = httpx.post(grafana.push_url("eeg"), content=b"Fz a=1 1", timeout=10,
                             headers={"Authorization": f"Bearer {EXPIRED_TOKEN}"})
        assert (anyone.status_code, expired.status_code) == (401, 401)
        assert grafana.frames_published() == {}
    assert setting == "false"
