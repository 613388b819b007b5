"""deploy/cluster/: the cluster variant's compose file passes the Compose specification and
names files that exist; every environment it gives the service is one the settings accept; the
Redis node configuration is one a real `redis-server` starts with, in cluster mode; the nginx files
pass nginx's directive table."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import crossplane
import redis

from aggregations.scripts import as_text
from analytics.settings import Settings
from analytics.storage import parse_cluster_url
from tests.cluster import server_binary
from tests.processes import free_cluster_port
from tests.test_deploy import README_VARIABLES, env_file, yaml_documents

CLUSTER = Path(__file__).resolve().parent.parent / "deploy" / "cluster"


def test_cluster_compose_passes_the_compose_specification():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "check-jsonschema"),
         "--builtin-schema", "vendor.compose-spec", str(CLUSTER / "compose.yaml")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    compose = yaml_documents(CLUSTER / "compose.yaml")[0]
    services = compose["services"]
    assert {f"redis-{i}" for i in range(1, 7)} <= set(services)
    assert {"redis-cluster-init", "postgres", "analytics-1", "analytics-2", "nginx"} <= set(
        services
    )
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (CLUSTER / source).exists(), f"{name}: {source}"
    build = services["analytics-1"]["build"]
    assert (CLUSTER / build["context"] / build["dockerfile"]).exists()


def test_the_instances_environment_is_accepted_and_documented():
    compose = yaml_documents(CLUSTER / "compose.yaml")[0]
    defaults = env_file(CLUSTER.parent / "env.example")
    for instance in ("analytics-1", "analytics-2"):
        env = {
            k: re.sub(
                r"\$\{(\w+)(?::[-?][^}]*)?\}", lambda m: defaults.get(m.group(1), "x"), str(v)
            )
            for k, v in compose["services"][instance]["environment"].items()
        }
        settings = Settings.from_env(env)
        assert settings.redis_url is not None
        seeds = parse_cluster_url(settings.redis_url).seeds
        assert seeds == tuple((f"redis-{i}", 6379) for i in range(1, 7))
        assert settings.rollup_min_replicas == 1
        for name in env:
            assert name in README_VARIABLES, f"{name} is not in README's configuration table"


def test_a_real_redis_server_starts_in_cluster_mode_with_the_node_config(tmp_path):
    port = free_cluster_port()
    process = subprocess.Popen(
        [server_binary(), str(CLUSTER / "redis-node.conf"),
         "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    client = redis.Redis(port=port)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert process.poll() is None, "redis-server refused the configuration"
                assert time.monotonic() < deadline, "redis-server did not answer"
                time.sleep(0.05)
        config = {as_text(k): as_text(v) for k, v in client.config_get("*").items()}
        assert client.info("cluster")["cluster_enabled"] == 1
        assert config["cluster-require-full-coverage"] == "no"
        assert config["maxmemory-policy"] == "noeviction"
        assert config["appendonly"] == "yes"
    finally:
        client.close()
        process.terminate()
        process.wait(10)


def test_nginx_files_are_valid(tmp_path):
    for name in ("nginx-compose.conf", "nginx-upstream.conf"):
        conf = tmp_path / f"{name}.nginx.conf"
        conf.write_text(f"events {{}}\nhttp {{\n    include {CLUSTER / name};\n}}\n")
        parsed = crossplane.parse(str(conf), check_ctx=True, check_args=True)
        assert parsed["status"] == "ok", (name, parsed["errors"])
    compose_conf = (CLUSTER / "nginx-compose.conf").read_text()
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in compose_conf
