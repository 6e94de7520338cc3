"""docker/compose.yaml: valid Compose, and consistent with Pinhole's settings and CLI.

Validation is Debian's docker-compose v1 (`config -q`), which needs no engine.
It accepts every feature the file uses (the compose-spec format without
`version:`, `deploy.replicas`, `depends_on` conditions including
`service_completed_successfully`, YAML merge keys); the one it rejects is the
top-level `name:`, so the file has none and the README passes `-p pinhole`.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from pinhole.app.cli import _parser
from pinhole.queue.kafka import KafkaJobQueue
from pinhole.settings import Settings
from storage.s3 import S3BlobStore
from tests.support.stack import (
    PINHOLE_DOCKERFILE,
    SPECIAL_PINHOLE_VARS,
    builds_from,
    dockerfile_env,
    dockerfile_instructions,
    environment,
    pinhole_services,
    pinhole_vars,
    resolved_compose,
    run_compose,
    services,
    setting_path,
)


def test_docker_compose_v1_validates_the_file() -> None:
    result = run_compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_every_role_runs_from_the_one_image() -> None:
    stack = pinhole_services()
    commands = {name: service["command"][0] for name, service in stack.items()}
    assert commands == {
        "ingest": "ingest",
        "transcoder": "transcode",
        "server": "serve",
        "cdn-purge": "cdn-purge",
        # One-shot: the record schema on every shard server, before the roles start.
        "db-init": "db",
    }
    assert stack["db-init"]["command"] == ["db", "upgrade"]
    assert {service["image"] for service in stack.values()} == {"pinhole:local"}


def test_every_service_command_exists_in_the_cli() -> None:
    """Parse each command with the CLI's own parser: an unknown subcommand or
    option exits with status 2, which fails this test."""
    (subparsers,) = [
        action for action in _parser()._actions if isinstance(action, argparse._SubParsersAction)
    ]
    subcommands = set(subparsers.choices)
    for name, service in pinhole_services().items():
        command = [str(word) for word in service["command"]]
        assert command[0] in subcommands, f"{name}: no CLI command {command[0]!r}"
        args = _parser().parse_args(command)
        assert args.command == command[0]


def _all_pinhole_vars() -> dict[str, dict[str, str]]:
    """PINHOLE_* variables of every service and of the image, by where they are set."""
    found = {name: pinhole_vars(environment(service)) for name, service in services().items()}
    found["docker/Dockerfile ENV"] = pinhole_vars(dockerfile_env(PINHOLE_DOCKERFILE))
    return {where: env for where, env in found.items() if env}


def test_every_pinhole_variable_is_a_real_setting() -> None:
    found = _all_pinhole_vars()
    assert set(found) >= {"ingest", "transcoder", "server", "cdn-purge", "docker/Dockerfile ENV"}
    unknown = []
    for where, env in found.items():
        for var in env:
            if var in SPECIAL_PINHOLE_VARS:
                continue
            try:
                setting_path(var)
            except KeyError as exc:
                unknown.append(f"{where}: {exc}")
    assert not unknown


def test_setting_path_maps_nesting_and_rejects_typos() -> None:
    assert setting_path("PINHOLE_QUEUE") == ("queue",)
    assert setting_path("PINHOLE_KAFKA__IDEMPOTENT_PRODUCER") == ("kafka", "idempotent_producer")
    for typo in (
        "PINHOLE_KAFKA_IDEMPOTENT_PRODUCER",
        "PINHOLE_KAFKA__IDEMPOTENT",
        "PINHOLE_QUEUE__X",
    ):
        with pytest.raises(KeyError):
            setting_path(typo)


def stack_settings(monkeypatch: pytest.MonkeyPatch, service: str) -> Settings:
    """The Settings a role in the stack builds: the image's ENV, then compose's."""
    import os

    for var in [v for v in os.environ if v.upper().startswith("PINHOLE_")]:
        monkeypatch.delenv(var)
    env = {**dockerfile_env(PINHOLE_DOCKERFILE), **environment(services()[service])}
    for var, value in pinhole_vars(env).items():
        monkeypatch.setenv(var, value)
    return Settings()


@pytest.mark.parametrize("service", ["ingest", "transcoder", "server", "cdn-purge"])
def test_roles_get_the_production_backends(monkeypatch: pytest.MonkeyPatch, service: str) -> None:
    settings = stack_settings(monkeypatch, service)
    assert settings.host == "0.0.0.0"
    assert settings.kafka.idempotent_producer is True
    assert settings.queue.startswith("kafka://")
    assert settings.storage.startswith("s3://")
    assert settings.cache.startswith("redis://")
    assert settings.records.startswith("mysql://")
    assert "@mariadb:3306/" in settings.records
    # A hash, never a token, and only a SHA-256 hex digest.
    assert settings.auth.token_sha256
    assert all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in settings.auth.token_sha256)
    assert settings.auth.allow_anonymous is False
    assert settings.edge.signing_keys
    # The URLs parse as the adapters will parse them (no connection is made).
    KafkaJobQueue.from_url(settings.queue, settings.kafka)
    S3BlobStore.from_url(settings.storage)


def test_the_documented_dev_token_is_the_configured_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    settings = stack_settings(monkeypatch, "ingest")
    assert hashlib.sha256(b"pinhole-dev-token").hexdigest() in settings.auth.token_sha256


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None, url
    assert parts.port is not None, url
    return parts.hostname, parts.port


def test_backends_point_at_the_stack_services(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = stack_settings(monkeypatch, "ingest")
    stack = services()
    kafka_env = environment(stack["kafka"])
    assert settings.queue == f"kafka://{kafka_env['KAFKA_ADVERTISED_LISTENERS'].split('://')[1]}"
    assert _host_port(settings.cache)[0] == "redis"
    storage = urlsplit(settings.storage)
    endpoint = parse_qs(storage.query)["endpoint"][0]
    assert _host_port(endpoint) == ("minio", 9000)
    # The bucket is provisioned by minio-init, so the roles must not try to create it.
    assert parse_qs(storage.query)["create"] == ["0"]
    assert environment(stack["minio-init"])["BUCKET"] == storage.netloc
    # The S3 client signs with MinIO's credentials.
    minio = environment(stack["minio"])
    role = environment(stack["ingest"])
    assert role["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
    assert role["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]


def test_kafka_init_creates_the_configured_topics(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = stack_settings(monkeypatch, "transcoder")
    init = environment(services()["kafka-init"])
    assert init["TOPICS"].split() == [
        settings.kafka.jobs_topic,
        settings.kafka.events_topic,
        settings.kafka.dead_letter_topic,
        settings.kafka.webhook_dead_letter_topic,
    ]
    assert int(init["PARTITIONS"]) == settings.kafka.partitions
    assert init["BOOTSTRAP"] == urlsplit(settings.queue).netloc
    script = "\n".join(services()["kafka-init"]["command"])
    for variable in ("TOPICS", "PARTITIONS", "REPLICATION_FACTOR", "BOOTSTRAP"):
        assert f"${variable}" in script
    assert "--if-not-exists" in script


def test_kafka_runs_kraft_and_is_reachable_by_service_name() -> None:
    kafka = environment(services()["kafka"])
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{kafka['KAFKA_NODE_ID']}@kafka:9093"
    assert kafka["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert kafka["CLUSTER_ID"]
    assert services()["kafka"]["image"].startswith("apache/kafka:")


def test_redis_is_a_bounded_lru_cache() -> None:
    command = [str(word) for word in services()["redis"]["command"]]
    assert command[command.index("--maxmemory") + 1].endswith("mb")
    assert command[command.index("--maxmemory-policy") + 1] == "allkeys-lru"


def test_two_transcoders_and_no_fixed_names_or_ports_that_block_scaling() -> None:
    transcoder = services()["transcoder"]
    assert transcoder["deploy"]["replicas"] == 2
    for name in ("transcoder", "server"):
        assert "ports" not in services()[name], f"{name} must scale: no published port"
        assert "container_name" not in services()[name]


def _has_healthcheck(service: dict[str, Any]) -> bool:
    if "healthcheck" in service:
        return not service["healthcheck"].get("disable", False)
    build = service.get("build")
    if not isinstance(build, dict):
        return False
    from pathlib import Path

    dockerfile = Path(build["context"]) / build.get("dockerfile", "Dockerfile")
    return any(i.keyword == "HEALTHCHECK" for i in dockerfile_instructions(dockerfile))


def test_start_order_is_by_health_and_completion() -> None:
    stack = services()
    for name, service in stack.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert dependency in stack, f"{name} depends on unknown {dependency}"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert _has_healthcheck(stack[dependency]), f"{dependency} has no healthcheck"
            elif condition == "service_completed_successfully":
                assert stack[dependency].get("restart", "no") == "no", dependency
            else:
                pytest.fail(f"{name} -> {dependency}: waits only for start ({condition})")
    for role in ("ingest", "transcoder", "server"):
        assert set(stack[role]["depends_on"]) >= {"kafka-init", "minio-init", "redis"}
    assert stack["cdn"]["depends_on"] == {"server": {"condition": "service_healthy"}}
    # The purger reads events from the topics and purges the CDN; it has no
    # use for MinIO or Redis.
    assert stack["cdn-purge"]["depends_on"] == {
        "kafka-init": {"condition": "service_completed_successfully"},
        "cdn": {"condition": "service_healthy"},
    }


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, service in services().items():
        if service.get("restart", "no") != "no":
            assert _has_healthcheck(service), name


def test_named_volumes_are_declared_and_used() -> None:
    config = resolved_compose()
    declared = set(config["volumes"])
    used = set()
    for service in config["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if not source.startswith(("/", ".")):
                used.add(source)
    assert used == declared
    assert {"kafka-data", "minio-data", "prometheus-data", "grafana-data", "cdn-cache"} <= used


def _published(service: str) -> dict[int, int]:
    """Container port -> host port, for ports published on the loopback only."""
    ports: dict[int, int] = {}
    for spec in services()[service].get("ports", []):
        host_ip, host_port, container = str(spec).split(":")
        assert host_ip == "127.0.0.1", f"{service} publishes {spec} beyond this machine"
        ports[int(container.split("/")[0])] = int(host_port)
    return ports


def test_public_urls_are_where_the_stack_publishes(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = stack_settings(monkeypatch, "ingest")
    assert _host_port(settings.ingest_url) == (
        "localhost",
        _published("ingest")[settings.ingest_port],
    )
    cdn_port = int(environment(services()["cdn"])["CDN_LISTEN"])
    assert _host_port(settings.public_url) == ("localhost", _published("cdn")[cdn_port])


def test_the_purger_purges_the_stacks_cdn(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = stack_settings(monkeypatch, "cdn-purge")
    cdn = environment(services()["cdn"])
    assert settings.cdn_purge.configured
    (url,) = settings.cdn_purge.nginx_urls
    assert _host_port(url) == ("cdn", int(cdn["CDN_LISTEN"]))
    assert "cdn" in services()
    # The stack's CDN is nginx; a varnish URL here would purge nothing.
    assert settings.cdn_purge.varnish_urls == []
    # It reads the deletes from the topic kafka-init creates, on the stack's Kafka.
    assert settings.kafka.events_topic in environment(services()["kafka-init"])["TOPICS"].split()
    assert settings.queue == stack_settings(monkeypatch, "server").queue
    # Not published, no fixed name (the CDN names its address instead).
    assert "ports" not in services()["cdn-purge"]
    assert "container_name" not in services()["cdn-purge"]


def _default_network() -> tuple[
    ipaddress.IPv4Network, ipaddress.IPv4Network, ipaddress.IPv4Address
]:
    """The stack network's subnet, the range Docker hands addresses out from,
    and the gateway (the host's address on it)."""
    (pool,) = resolved_compose()["networks"]["default"]["ipam"]["config"]
    subnet = ipaddress.IPv4Network(pool["subnet"])
    dynamic = ipaddress.IPv4Network(pool["ip_range"])
    gateway = ipaddress.IPv4Address(pool["gateway"])
    assert dynamic.subnet_of(subnet)
    assert gateway in subnet
    return subnet, dynamic, gateway


def _fixed_addresses() -> dict[str, ipaddress.IPv4Address]:
    return {
        name: ipaddress.IPv4Address(network["ipv4_address"])
        for name, service in services().items()
        for network in (service.get("networks") or {}).values()
        if network and "ipv4_address" in network
    }


def test_the_cdn_allows_purges_from_the_purger_only() -> None:
    """nginx allows /purge by source address, and CDN_PURGE_ALLOW is exactly the
    purger's fixed address: inside the subnet, outside the range Docker gives
    other containers, and never the gateway (requests through the published
    port arrive from it)."""
    subnet, dynamic, gateway = _default_network()
    fixed = _fixed_addresses()
    purger = fixed["cdn-purge"]
    assert purger in subnet
    assert purger not in dynamic
    assert purger != gateway
    allowed = [
        ipaddress.ip_network(entry, strict=False)
        for entry in environment(services()["cdn"])["CDN_PURGE_ALLOW"].split()
    ]
    assert any(purger in network for network in allowed)
    for network in allowed:
        assert network.version == 4
        assert isinstance(network, ipaddress.IPv4Network)
        assert network.subnet_of(subnet), f"{network} is beyond the stack's network"
        assert not network.overlaps(dynamic), f"{network} takes in any container"
        assert gateway not in network, f"{network} takes in the gateway"
        holders = [name for name, address in fixed.items() if address in network]
        assert holders == ["cdn-purge"], f"{network} allows {holders}"


def test_cdn_origin_is_the_edge_server(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = stack_settings(monkeypatch, "server")
    host, port = environment(services()["cdn"])["CDN_ORIGIN"].split(":")
    assert host == "server"
    assert host in services()
    assert int(port) == settings.edge_port
    assert builds_from(services()["cdn"], PINHOLE_DOCKERFILE.parent / "cdn" / "Dockerfile")
