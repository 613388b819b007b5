"""deploy/: what can be checked without Docker or a cluster. Every YAML file parses; Prometheus'
config, rules and the alert rules' unit tests pass promtool; the dashboard is JSON Grafana's
provisioning loads, with valid PromQL over metrics the service really exports; the compose file
passes the Compose specification's schema, the Kubernetes manifests their API schemas, the nginx
snippet nginx's directive table; every environment given to the service is one its settings
accept; and the Dockerfile's build stage, run in a plain venv, yields a working `analytics`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import crossplane
import pytest
import yaml

from analytics.settings import Settings
from tests.processes import free_port
from tests.promtool import run_promtool, samples

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
KUBERNETES = DEPLOY / "kubernetes"


def yaml_documents(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def test_every_yaml_file_parses():
    files = sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")])
    assert len(files) >= 15
    for path in files:
        assert yaml_documents(path), path


def test_prometheus_config_rules_and_alert_unit_tests():
    run_promtool("check", "config", "prometheus.yml", cwd=PROMETHEUS)
    run_promtool("check", "config", "kubernetes-scrape.yml", cwd=PROMETHEUS)
    out = run_promtool("check", "rules", "alerts.yml", cwd=PROMETHEUS)
    assert "10 rules found" in out
    out = run_promtool("test", "rules", "alerts.test.yml", cwd=PROMETHEUS)
    assert "SUCCESS" in out


def test_every_alert_is_unit_tested_and_explained():
    rules = yaml_documents(PROMETHEUS / "alerts.yml")[0]["groups"][0]["rules"]
    names = {r["alert"] for r in rules}
    tested = (PROMETHEUS / "alerts.test.yml").read_text()
    readme = (DEPLOY / "README.md").read_text()
    for rule in rules:
        assert f"alertname: {rule['alert']}" in tested
        anchor = rule["annotations"]["runbook"].split("#")[1]
        assert f"### {anchor}" in readme.lower(), anchor
    assert {
        "AnalyticsRollupStalled",
        "AnalyticsRollupLagHigh",
        "AnalyticsIngestErrors",
        "AnalyticsRedisErrors",
        "AnalyticsPostgresErrors",
        "AnalyticsBacklogNearCap",
    } <= names


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DEPLOY / "grafana" / "analytics.json").read_text())
    return loaded


def expressions() -> list[str]:
    found = [t["expr"] for p in dashboard()["panels"] for t in p["targets"]]
    rules = yaml_documents(PROMETHEUS / "alerts.yml")[0]["groups"][0]["rules"]
    return found + [r["expr"] for r in rules]


def test_dashboard_is_what_grafana_provisioning_loads(tmp_path):
    board = dashboard()
    assert board["uid"] == "visitor-analytics"
    assert board["title"]
    assert isinstance(board["schemaVersion"], int)
    assert "id" not in board  # provisioning assigns it
    datasource = yaml_documents(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")[0]
    uid = datasource["datasources"][0]["uid"]
    provider = yaml_documents(DEPLOY / "grafana/provisioning/dashboards/analytics.yml")[0]
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    compose = yaml_documents(DEPLOY / "compose.yaml")[0]
    assert (
        "./grafana/analytics.json:/var/lib/grafana/dashboards/analytics.json:ro"
        in compose["services"]["grafana"]["volumes"]
    )
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    titles = " ".join(p["title"].lower() for p in board["panels"])
    for wanted in ("ingest rate", "latency quantiles", "rollup lag", "backlog", "online visitors"):
        assert wanted in titles
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == uid
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid
    # every expression is PromQL that Prometheus accepts: as recording rules, checked by promtool
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:expr_{i}", "expr": e.replace("$__rate_interval", "5m")}
                    for i, e in enumerate(expressions())
                ],
            }
        ]
    }
    (tmp_path / "dashboard-rules.yml").write_text(yaml.safe_dump(rules))
    run_promtool("check", "rules", "dashboard-rules.yml", cwd=tmp_path)


async def test_dashboard_and_alerts_read_only_metrics_the_service_exports(client):
    exported = {
        re.sub(r"\{.*", "", key) for key in samples(await (await client.get("/metrics")).text())
    }
    # present only when Redis has a maxmemory (the test Redis has none)
    exported |= {"analytics_redis_memory_max_bytes"}
    used = {name for expr in expressions() for name in re.findall(r"\banalytics_\w+", expr)}
    assert len(used) >= 12
    assert used <= exported, used - exported


def test_compose_file_passes_the_compose_specification():
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(DEPLOY / "compose.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    compose = yaml_documents(DEPLOY / "compose.yaml")[0]
    assert set(compose["services"]) == {"analytics", "redis", "postgres", "prometheus", "grafana"}
    for relative in (
        "./redis/redis.conf",
        "./prometheus/prometheus.yml",
        "./prometheus/alerts.yml",
        "./grafana/provisioning",
        "./grafana/analytics.json",
    ):
        assert (DEPLOY / relative).exists(), relative


def redis_conf() -> dict[str, str]:
    conf = {}
    for line in (DEPLOY / "redis" / "redis.conf").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            conf[key] = value.strip()
    return conf


def test_redis_is_configured_for_this_job():
    conf = redis_conf()
    assert conf["appendonly"] == "yes"
    assert conf["appendfsync"] == "everysec"
    assert conf["maxmemory-policy"] == "noeviction"
    assert conf["maxmemory"].endswith(("mb", "gb"))


def test_kubernetes_manifests_pass_their_api_schemas():
    core = [
        "namespace.yaml",
        "deployment.yaml",
        "service.yaml",
        "hpa.yaml",
        "pdb.yaml",
        "secret.example.yaml",
        "migrate-job.yaml",
    ]
    result = subprocess.run(
        [str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", "--quiet", *core],
        capture_output=True,
        text=True,
        cwd=KUBERNETES,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    kustomization = yaml_documents(KUBERNETES / "kustomization.yaml")[0]
    for resource in kustomization["resources"]:
        assert (KUBERNETES / resource).exists(), resource


def test_deployment_probes_scrape_and_shutdown():
    deployment = yaml_documents(KUBERNETES / "deployment.yaml")[0]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e.get("value", "placeholder-secret-0123456789") for e in container["env"]}
    env["ANALYTICS_REDIS_URL"] = "redis://redis:6379/0"
    env["ANALYTICS_DATABASE_URL"] = "postgresql://u@postgres/db"
    settings = Settings.from_env(env)
    assert pod["terminationGracePeriodSeconds"] > settings.shutdown_timeout + 5  # preStop sleep
    assert pod["securityContext"]["runAsNonRoot"] is True
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics"
    monitor = yaml_documents(KUBERNETES / "servicemonitor.yaml")[0]
    assert monitor["kind"] == "ServiceMonitor"
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service = yaml_documents(KUBERNETES / "service.yaml")[0]
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    hpa = yaml_documents(KUBERNETES / "hpa.yaml")[0]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]


def env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    return env


def test_every_environment_given_to_the_service_is_one_it_accepts():
    systemd_env = env_file(DEPLOY / "systemd" / "analytics.env.example")
    settings = Settings.from_env(systemd_env)
    assert settings.workers == 2
    assert settings.trusted_proxies  # nginx on the host is trusted
    compose = yaml_documents(DEPLOY / "compose.yaml")[0]
    compose_env = env_file(DEPLOY / "env.example")
    service_env = {
        k: re.sub(
            r"\$\{(\w+)(?::[-?][^}]*)?\}",
            lambda m: compose_env.get(m.group(1), "x"),
            str(v),
        )
        for k, v in compose["services"]["analytics"]["environment"].items()
    }
    assert Settings.from_env(service_env).workers == 2
    for name in (*systemd_env, *service_env):
        assert name in README_VARIABLES, f"{name} is not in README's configuration table"


README_VARIABLES = (ROOT / "README.md").read_text()


def test_systemd_unit_stops_the_supervisor_gracefully():
    unit = (DEPLOY / "systemd" / "analytics.service").read_text()
    settings = dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#")
    )
    assert settings["ExecStart"].endswith("analytics serve")
    assert settings["KillMode"] == "mixed"
    assert settings["KillSignal"] == "SIGTERM"
    assert float(settings["TimeoutStopSec"]) > Settings().shutdown_timeout
    assert settings["User"] != "root"


def test_nginx_snippet_is_valid_and_passes_the_client_address(tmp_path):
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"events {{}}\nhttp {{\n    include {DEPLOY / 'nginx' / 'analytics.conf'};\n}}\n"
    )
    parsed = crossplane.parse(str(conf), check_ctx=True, check_args=True)
    assert parsed["status"] == "ok", parsed["errors"]
    snippet = (DEPLOY / "nginx" / "analytics.conf").read_text()
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in snippet
    assert "ANALYTICS_TRUSTED_PROXIES" in snippet


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions, continuation lines joined, per stage."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        op, _, args = line.strip().partition(" ")
        if op.upper() == "FROM":
            stages.append([])
        stages[-1].append((op.upper(), args.strip()))
    return stages


def test_the_image_is_slim_unprivileged_and_checks_its_health():
    build, final = dockerfile_stages()
    assert all("slim" in args for op, args in (build[0], final[0]))
    ops = dict(final)
    user = ops["USER"].split(":")[0]
    assert user not in ("root", "0")
    assert json.loads(ops["ENTRYPOINT"]) == ["analytics"]
    assert json.loads(ops["CMD"]) == ["serve"]
    assert "/healthz" in ops["HEALTHCHECK"]
    assert "ANALYTICS_HOST=0.0.0.0" in ops["ENV"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The build stage's COPY and RUN, with a temporary directory for /src and for the venv
    (VENV): the venv the image would ship."""
    build, _ = dockerfile_stages()
    tmp = tmp_path_factory.mktemp("image")
    src = tmp / "src"
    src.mkdir()
    env = {**os.environ, "VENV": str(tmp / "venv"), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    for op, args in build:
        if op == "COPY":
            *sources, dest = shlex.split(args)
            for source in sources:
                target = src / source if dest in ("./", ".") else src / dest
                if (ROOT / source).is_dir():
                    skip = shutil.ignore_patterns("__pycache__")
                    shutil.copytree(ROOT / source, target, ignore=skip)
                else:
                    shutil.copy(ROOT / source, target)
        elif op == "RUN":
            # the image's `python` is this interpreter here
            command = re.sub(r"^python ", f"{sys.executable} ", args)
            result = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", command],
                cwd=src,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert result.returncode == 0, result.stdout + result.stderr
    return tmp / "venv"


def test_the_build_stage_yields_a_working_entry_point(built):
    result = subprocess.run([str(built / "bin" / "analytics"), "--help"], capture_output=True)
    assert result.returncode == 0
    assert b"serve" in result.stdout


async def healthcheck(venv_dir: Path, port: int) -> int:
    """The final stage's HEALTHCHECK command, run by the venv's python, as Docker would."""
    _, final = dockerfile_stages()
    check = json.loads(dict(final)["HEALTHCHECK"].split("CMD", 1)[1])
    process = await asyncio.create_subprocess_exec(
        str(venv_dir / "bin" / "python"),
        *check[1:],
        env={**os.environ, "ANALYTICS_PORT": str(port)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(process.wait(), 30)


async def test_the_healthcheck_passes_while_serving_and_fails_without(built, client):
    assert await healthcheck(built, client.server.port) == 0
    assert await healthcheck(built, free_port()) != 0


@pytest.fixture(autouse=True)
def _no_stray_build_files():
    """The build runs in a copy: the repository itself gains no build/ or egg-info."""
    before = set(ROOT.iterdir())
    yield
    assert not {p.name for p in set(ROOT.iterdir()) - before if p.name != ".pytest_cache"}
