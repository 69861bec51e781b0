"""The deployment examples (examples/kubernetes, examples/compose) and the Containerfile's
settings: validated by maintained schema validators, run through peat-sync's own option
parsing, and checked against the memory bound of docs/operations.md."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from peat_sync.cli.main import build_parser
from peat_sync.cli.options import SERVE_OPTIONS, SHARED_OPTIONS, serve_config
from peat_sync.client.client import ADDRESS_ENV
from peat_sync.server.config import ServeConfig
from tests.helpers.paths import ROOT

KUBERNETES = sorted((ROOT / "examples" / "kubernetes").glob("*.yaml"))
COMPOSE = ROOT / "examples" / "compose" / "shared.yml"
CONTAINERFILE = ROOT / "Containerfile"
TOOL_TIMEOUT = 60.0

MiB = 1 << 20
KiB = 1 << 10


def tool(name: str) -> str:
    """A validator's command, installed beside this Python (the test extra)."""
    return str(Path(sys.executable).with_name(name))


def run(*command: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=TOOL_TIMEOUT, env=env)


def documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def image_environment() -> dict[str, str]:
    """The Containerfile's ENV settings, as its instructions give them."""
    text = CONTAINERFILE.read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.*)$", text, re.M):
        env.update(re.findall(r"(\w+)=(\S+)", line))
    return env


def sidecar_containers() -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, container) of each peat-sync container in the Kubernetes examples."""
    for path in KUBERNETES:
        for document in documents(path):
            if document["kind"] not in ("Deployment", "StatefulSet"):
                continue
            spec = document["spec"]["template"]["spec"]
            for container in (*spec.get("initContainers", ()), *spec["containers"]):
                if container["image"].startswith("peat-sync:"):
                    yield f"{path.name} {document['metadata']['name']}", container


def kubernetes_environment(container: Mapping[str, Any]) -> dict[str, str]:
    """The container's variables, with a placeholder for those the pod fills in."""
    return {variable["name"]: variable.get("value", "pod-name") for variable in container["env"]}


def parsed(environment: Mapping[str, str]) -> ServeConfig:
    """The server's configuration from the image's variables and `environment`, as `peat-sync
    serve` would read it. Raises ConfigError, as serve would exit 2."""
    args = build_parser().parse_args(["serve"])
    return serve_config(args, {**image_environment(), **environment})


def known_variables() -> set[str]:
    names = {ADDRESS_ENV}
    for option in (*SERVE_OPTIONS, *SHARED_OPTIONS):
        assert option.env is not None
        names.add(option.env)
    return names


def memory_bound(config: ServeConfig, connections: int) -> int:
    """M of docs/operations.md ("Memory: the bound"), the HTTP listener off."""
    node = config.node
    page = 2 * (2 * MiB + node.max_document_bytes)
    return (
        40 * MiB
        + node.replay_log_bytes
        + node.max_subscribers * (55 * KiB + page)
        + 2 * config.max_inflight_request_bytes
        + connections * 4 * MiB
    )


def quantity(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", text).groups()  # type: ignore[union-attr]
    return int(number) * {None: 1, "Ki": KiB, "Mi": MiB, "Gi": 1 << 30}[unit]


# ---------------------------------------------------------------------------------------------
# The validators


@pytest.mark.parametrize("path", KUBERNETES, ids=lambda path: path.name)
def test_the_kubernetes_manifests_validate_strictly(path: Path) -> None:
    """kubernetes-validate, with the schemas of the newest Kubernetes it knows, refusing any
    field the schema does not have."""
    result = run(tool("kubernetes-validate"), "--strict", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout


def test_the_kubernetes_validator_refuses_an_unknown_field(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(KUBERNETES[0].read_text().replace("restartPolicy:", "restartPolicyy:"))
    result = run(tool("kubernetes-validate"), "--strict", str(broken))
    assert result.returncode != 0
    assert "'restartPolicyy' was unexpected" in result.stdout + result.stderr


def test_the_compose_file_validates_against_the_compose_spec() -> None:
    result = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_validator_refuses_an_unknown_field(tmp_path: Path) -> None:
    broken = tmp_path / "shared.yml"
    broken.write_text(COMPOSE.read_text().replace("stop_grace_period:", "stop_grace_periodd:"))
    result = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(broken))
    assert result.returncode != 0
    assert "stop_grace_periodd" in result.stdout + result.stderr


def test_the_nats_configuration_is_valid_for_nats_server(tmp_path: Path) -> None:
    """The shared example's NATS configuration, checked by nats-server itself (-t)."""
    (config_map,) = (
        document
        for document in documents(ROOT / "examples" / "kubernetes" / "shared.yaml")
        if document["kind"] == "ConfigMap"
    )
    config = tmp_path / "nats.conf"
    config.write_text(config_map["data"]["nats.conf"])
    result = run(tool("nats-server"), "--config", str(config), "-t", env={"POD_NAME": "nats-0"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is valid" in result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------
# What peat-sync makes of them


def test_the_images_defaults_serve_on_unix_sockets_in_the_shared_volume() -> None:
    config = parsed({})
    assert str(config.listen) == "unix:///run/peat-sync/grpc.sock"
    assert str(config.http_listen) == "unix:///run/peat-sync/http.sock"
    assert config.node.data_dir == Path("/var/lib/peat-sync")
    assert image_environment()[ADDRESS_ENV] == "unix:///run/peat-sync/grpc.sock"


def test_every_sidecar_setting_is_an_option_that_parses() -> None:
    """A misspelt variable would be ignored by the server, silently: each one the examples set
    is one that serve (or the client) reads, and serve accepts the values."""
    environments = [
        (where, kubernetes_environment(container)) for where, container in sidecar_containers()
    ]
    for name, service in yaml.safe_load(COMPOSE.read_text())["services"].items():
        if "environment" in service:
            environments.append((f"compose {name}", service["environment"]))
    assert len(environments) == 5, environments
    for where, environment in environments:
        unknown = set(environment) - known_variables()
        assert not unknown, f"{where}: {unknown}"
        parsed(environment)


def test_the_pods_memory_limit_covers_the_bound_of_their_flags() -> None:
    """The memory limit of each sidecar is at least M with its flags, counting 16 connections
    (the application's, over the socket); its request is what it uses idle or more."""
    containers = list(sidecar_containers())
    assert len(containers) == 2
    for where, container in containers:
        config = parsed(kubernetes_environment(container))
        assert config.http_listen is None, f"{where}: the bound counts no HTTP listener"
        resources = container["resources"]
        limit = quantity(resources["limits"]["memory"])
        assert memory_bound(config, connections=16) <= limit, where
        assert 64 * MiB <= quantity(resources["requests"]["memory"]) <= limit, where


def test_the_probes_call_the_health_command() -> None:
    for where, container in sidecar_containers():
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            command = container[probe]["exec"]["command"]
            assert command[:2] == ["peat-sync", "health"], where
            assert isinstance(build_parser().parse_args(command[1:]), argparse.Namespace)
