"""deploy/docker, deploy/compose.yml and deploy/k8s run the processes the way the tests run them.

Containers cannot run on the development machines, so no image is built here: these tests read the
files and compare them with what the code says (stack.processes.specs(), the settings classes,
Rasa's YAML). See tests/deploy/reading.py for how each side is read."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from services.settings import ROOT
from tests.deploy import reading as r

PROCESSES = sorted(r.specs())
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


def _process_containers() -> dict[str, dict[str, Any]]:
    """process -> its container in the Deployments kustomization.yaml applies."""
    found: dict[str, dict[str, Any]] = {}
    for deployment in r.k8s_kind("Deployment"):
        for container in r.pod_containers(deployment):
            process = r.image_process(container["image"])
            assert process, f"{deployment['metadata']['name']}: {container['image']} is not one of {PROCESSES}"
            assert process not in found, f"two Deployments run {process}"
            found[process] = container
    return found


def _compose_processes() -> dict[str, tuple[str, dict[str, Any]]]:
    """process -> (service name, service) of the long-running services in compose.yml."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, service in r.compose()["services"].items():
        process = r.image_process(service.get("image", ""))
        if process and service.get("restart") != "no":
            assert process not in found, f"compose runs {process} as {found[process][0]} and {name}"
            found[process] = (name, service)
    return found


# ---- every file parses -----------------------------------------------------------------------

def test_every_yaml_file_under_deploy_parses() -> None:
    files = sorted([*r.DEPLOY.rglob("*.yml"), *r.DEPLOY.rglob("*.yaml")])
    assert r.COMPOSE in files and r.K8S / "kustomization.yaml" in files
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
        assert docs and all(isinstance(d, dict) for d in docs), f"{path}: not a YAML mapping"


def test_kustomization_applies_every_manifest_but_the_secret_example() -> None:
    listed = set(yaml.safe_load((r.K8S / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in r.K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present - {"secret.example.yaml"}


# ---- images ----------------------------------------------------------------------------------

def test_one_dockerfile_per_process() -> None:
    dockerfiles = {p.name.removesuffix(".Dockerfile") for p in r.DOCKER.glob("*.Dockerfile")}
    assert dockerfiles == set(PROCESSES) | {"base"}


@pytest.mark.parametrize("process", PROCESSES)
def test_image_command_is_the_command_the_stack_runs(process: str) -> None:
    image = r.dockerfile(process)
    assert image.last("ENTRYPOINT") is None and r.dockerfile("base").last("ENTRYPOINT") is None
    assert image.command() == r.expected_command(r.specs()[process])


@pytest.mark.parametrize("process", PROCESSES)
def test_image_health_check_is_the_health_url_the_stack_waits_for(process: str) -> None:
    port_setting, path = r.health_check(r.specs()[process])
    check = r.dockerfile(process).healthcheck()
    assert check[:2] == ["python", "/usr/local/bin/heze-healthcheck"]
    assert "COPY deploy/docker/healthcheck.py /usr/local/bin/heze-healthcheck" in r.DOCKER.joinpath(
        "base.Dockerfile").read_text()
    url = urlsplit(check[2])
    assert (url.scheme, url.netloc, url.path) == ("http", f"127.0.0.1:${{{port_setting}}}", path)


@pytest.mark.parametrize("process", PROCESSES)
def test_image_listens_on_every_interface_and_runs_as_a_user(process: str) -> None:
    image = r.dockerfile(process)
    host, port = r.listen_setting(r.specs()[process])
    assert image.env.get(host) == r.ANY_ADDRESS, f"{process} would listen on 127.0.0.1 only"
    assert image.env.get(port), f"{process}: {port} has no default in the image"
    user = (image.last("USER") or "root").split(":")
    assert user[0].isdigit() and int(user[0]) > 0, "a numeric non-root USER (Kubernetes checks runAsNonRoot by uid)"


@pytest.mark.parametrize("process", PROCESSES)
def test_image_sets_only_settings_its_process_reads_and_no_secret(process: str) -> None:
    image = r.dockerfile(process)
    assert set(image.env) <= r.reads(process), set(image.env) - r.reads(process)
    for args in image.all("ENV") + image.all("ARG"):
        assert not any(r.is_secret(w.partition("=")[0]) for w in args.split()), f"{process}: a secret in {args}"
    if process == "rasa":  # what stack/processes.py gives Rasa besides its settings
        assert {k: image.env.get(k) for k in r.processes.RASA_ENV} == r.processes.RASA_ENV


@pytest.mark.parametrize("process", [*PROCESSES, "base"])
def test_build_context_holds_only_what_the_image_copies(process: str) -> None:
    ignore = r.dockerignore(process)
    assert ignore[0] == "*", "deny by default, so .env and .venv never reach the builder"
    allowed = [line[1:] for line in ignore if line.startswith("!")]
    copied = [src for src, _ in r.dockerfile(process).copies()]
    if process == "base":
        copied = [c.replace("${LOCK}", lock) for c in copied for lock in ("requirements/rasa.lock", "requirements/app.lock")]
    for src in copied:
        assert any(src == a or src.startswith(a + "/") for a in allowed), f"{process}: {src} is not in the context"
        assert not src.startswith(".env") and not src.startswith(".venv")
    for a in allowed:
        assert any(src == a or src.startswith(a + "/") for src in copied), f"{process}: {a} is sent but not copied"


def test_rasa_image_holds_the_files_its_command_names() -> None:
    image = r.dockerfile("rasa")
    destinations = [dst for _, dst in image.copies()]
    words = image.command()
    named = [w for w in words if (ROOT / w).is_file()]  # bot/credentials.yml
    named += [image.env[w[1:]] for w in words if w[1:] in ("RASA_ENDPOINTS",)]
    assert "bot/credentials.yml" in named
    for path in named:
        assert path in destinations, f"the Rasa image does not copy {path}"
    model_dir = image.env["RASA_MODEL_DIR"]
    assert any(dst.startswith(model_dir.rstrip("/") + "/") for dst in destinations), "no model in the image"


def _image_code(process: str, into: Path) -> None:
    """The image's Python packages and YAML files, copied as its Dockerfile copies them."""
    for src, dst in r.dockerfile(process).copies():
        source = ROOT / src
        if src.startswith("var/"):
            continue  # models made by make train / make models, not in the repository
        if source.is_dir():
            shutil.copytree(source, into / dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (into / dst).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, into / dst)


def _import_in(python: Path, directory: Path, modules: list[str], walk: str | None = None) -> None:
    code = (
        "import importlib, pkgutil, sys\n"
        f"names = {modules!r}\n"
        f"walk = {walk!r}\n"
        "if walk:\n"
        "    names += [m.name for m in pkgutil.walk_packages(importlib.import_module(walk).__path__, walk + '.')]\n"
        "for name in names:\n"
        "    module = importlib.import_module(name)\n"
        "    assert module.__file__.startswith(sys.argv[1]), (name, module.__file__)\n"
        "print(len(names))\n")
    result = subprocess.run([str(python), "-c", code, str(directory)], cwd=directory, capture_output=True, text=True,
                            timeout=300, env={"PATH": "/usr/bin:/bin", "HOME": str(directory),
                                              "TF_CPP_MIN_LOG_LEVEL": "2", "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout.split()[-1]) >= len(modules)


@pytest.mark.parametrize("process", [p for p in PROCESSES if p != "rasa"])
def test_app_image_holds_every_module_its_process_imports(process: str, tmp_path: Path) -> None:
    """Each module of the entry package imports with nothing but the image's code."""
    _image_code(process, tmp_path)
    entry = r.specs()[process].argv[2]
    if process == "wechat-front":  # one module, run by the Rasa environment's Python
        _import_in(ROOT / ".venv-rasa" / "bin" / "python", tmp_path, [entry])
        return
    _import_in(ROOT / ".venv" / "bin" / "python", tmp_path, [f"{entry}.__main__"], walk=entry)


def test_rasa_image_holds_every_class_rasa_loads_by_name(tmp_path: Path) -> None:
    """The channels of credentials.yml, the stores and broker of the endpoints file, the model's components."""
    _image_code("rasa", tmp_path)
    credentials, endpoints = r.rasa_yaml_files()
    names = [k for k in yaml.safe_load(credentials.read_text()) if "." in k]
    names += [v["type"] for v in yaml.safe_load(endpoints.read_text()).values()
              if isinstance(v, dict) and "." in str(v.get("type", ""))]
    config = yaml.safe_load((ROOT / "config.yml").read_text())
    names += [c["name"] for c in config["pipeline"] + config["policies"] if "." in c["name"]]
    modules = sorted({n.rsplit(".", 1)[0] for n in names})
    assert "channels.wechat" in modules and "rasa_runtime.tracker_store" in modules
    _import_in(ROOT / ".venv-rasa" / "bin" / "python", tmp_path, modules)


# ---- settings given to each process, compose and Kubernetes alike ---------------------------

def _compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "write environment as a mapping"
    return {k: str(v) for k, v in env.items()}


def _compose_secret_ok(value: str) -> bool:
    """The whole value is a variable of .env with no default but an empty one."""
    match = INTERPOLATION.fullmatch(value)
    return match is not None and not (match.group(2) == "-" and match.group(3))


def _no_password_in_clear(name: str, value: str, compose: bool) -> None:
    match = r.PASSWORD_IN_URL.search(value)
    if match:
        assert compose and _compose_secret_ok(match.group(1)), f"{name}: a password written into the URL"


@pytest.mark.parametrize("process", PROCESSES)
def test_compose_gives_each_process_what_it_needs_and_nothing_it_ignores(process: str, tmp_path: Path) -> None:
    name, service = _compose_processes()[process]
    env = _compose_env(service)
    assert set(env) <= r.reads(process), f"{name} sets what {process} never reads: {set(env) - r.reads(process)}"
    tmp_path.joinpath("key.pem").write_text("test")
    missing = r.must_set(process, tmp_path / "key.pem") - set(env) - set(r.dockerfile(process).env)
    assert not missing, f"{name} cannot start without {missing}"
    for var, value in env.items():
        if r.is_secret(var):
            assert _compose_secret_ok(value), f"{name}: {var} must come from .env, not be written here"
        _no_password_in_clear(var, value, compose=True)
    host, _ = r.listen_setting(r.specs()[process])
    assert env.get(host, r.dockerfile(process).env.get(host)) == r.ANY_ADDRESS
    assert "command" not in service and "entrypoint" not in service and "healthcheck" not in service, \
        "the image's command and HEALTHCHECK are the stack's; compose must not replace them"


@pytest.mark.parametrize("process", PROCESSES)
def test_kubernetes_gives_each_process_what_it_needs_and_nothing_it_ignores(process: str, tmp_path: Path) -> None:
    container = _process_containers()[process]
    env = r.container_env(container)
    assert set(env) <= r.reads(process), set(env) - r.reads(process)
    tmp_path.joinpath("key.pem").write_text("test")
    missing = r.must_set(process, tmp_path / "key.pem") - set(env) - set(r.dockerfile(process).env)
    assert not missing, f"{process} cannot start without {missing}"
    secrets = r.example_secrets()["heze-secrets"]
    for var, item in env.items():
        source = item.get("valueFrom", {})
        if r.is_secret(var):
            assert "secretKeyRef" in source and source["secretKeyRef"]["name"] == "heze-secrets", f"{var}: not a Secret"
        if "secretKeyRef" in source:
            assert source["secretKeyRef"]["key"] in secrets, f"{var}: no such key in secret.example.yaml"
        elif "configMapKeyRef" in source:
            assert source["configMapKeyRef"]["name"] == "heze-config"
            assert source["configMapKeyRef"]["key"] in r.config_map(), f"{var}: no such key in the ConfigMap"
        else:
            assert "value" in item and not r.is_secret(var)
            _no_password_in_clear(var, str(item["value"]), compose=False)
    assert "command" not in container and "args" not in container, "the image's command is the stack's"
    values = r.resolved_env(process, container)
    if "HEZE_ENV" in r.reads(process):
        assert values.get("HEZE_ENV") == "production"


def test_config_map_holds_no_secret_and_only_what_some_process_reads() -> None:
    used = {item["valueFrom"]["configMapKeyRef"]["key"]
            for workload in r.k8s_kind("Deployment") + r.k8s_kind("Job") for c in r.pod_containers(workload)
            for item in c.get("env", []) if "configMapKeyRef" in item.get("valueFrom", {})}
    data = r.config_map()
    assert set(data) == used, f"unused: {set(data) - used}"
    for key, value in data.items():
        assert not r.is_secret(key), f"{key} belongs in the Secret"
        _no_password_in_clear(key, value, compose=False)


def test_secret_example_holds_placeholders_only() -> None:
    for name, data in r.example_secrets().items():
        for key, value in data.items():
            assert value == "" or re.fullmatch(r"<[^<>]+>", value), f"{name}.{key}: a value, not a placeholder"


# ---- compose ---------------------------------------------------------------------------------

def test_compose_runs_every_process_of_the_stack() -> None:
    assert set(_compose_processes()) == set(PROCESSES)


def test_compose_one_off_jobs_run_their_image_module() -> None:
    for name, service in r.compose()["services"].items():
        process = r.image_process(service.get("image", ""))
        if process and service.get("restart") == "no":
            assert service["command"][:3] == ["python", "-m", r.specs()[process].argv[2]], name
            assert set(_compose_env(service)) <= r.reads(process)


def test_compose_starts_each_service_after_what_it_depends_on_is_healthy() -> None:
    services = r.compose()["services"]
    for name, service in services.items():
        for other, rule in (service.get("depends_on") or {}).items():
            target = services[other]
            if rule["condition"] == "service_completed_successfully":
                assert target.get("restart") == "no", f"{name} waits for {other} to finish, but it keeps running"
                continue
            assert rule["condition"] == "service_healthy", f"{name} -> {other}"
            process = r.image_process(target.get("image", ""))
            assert "healthcheck" in target or (process and r.dockerfile(process).last("HEALTHCHECK")), other


def _haproxy_backends() -> dict[str, dict[str, Any]]:
    """backend -> {'check': path, 'host': service, 'port': port, 'slots': n}, from haproxy.cfg."""
    backends: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for line in (r.DOCKER / "haproxy.cfg").read_text().splitlines():
        words = line.split("#")[0].split()
        if not words:
            continue
        if words[0] in ("global", "defaults", "frontend", "backend", "resolvers"):
            current = backends.setdefault(words[1], {}) if words[0] == "backend" else None
        elif current is not None and words[:2] == ["option", "httpchk"]:
            current["check"] = words[3]
        elif current is not None and words[0] == "server-template":
            host, port = words[3].rsplit(":", 1)
            current.update(slots=int(words[2]), host=host, port=port)
    return backends


def test_haproxy_balances_the_replicas_on_the_stack_health_urls() -> None:
    compose = r.compose()
    mounted = [v for v in compose["services"]["haproxy"]["volumes"] if v.startswith("./docker/haproxy.cfg:")]
    assert mounted, "compose does not give HAProxy deploy/docker/haproxy.cfg"
    backends = _haproxy_backends()
    behind = {}
    for backend in backends.values():
        service = compose["services"][backend["host"]]
        process = r.image_process(service["image"])
        assert process, backend
        behind[process] = backend
        port_setting, path = r.health_check(r.specs()[process])
        port = _compose_env(service).get(port_setting, r.dockerfile(process).env.get(port_setting))
        assert (backend["check"], backend["port"]) == (path, port), process
        assert backend["slots"] == service["deploy"]["replicas"] >= 2, process
    assert set(behind) == {"rasa", "action-server"}
    # Whoever calls Rasa or the action servers calls HAProxy.
    rasa_host, _ = r.listen_setting(r.specs()["rasa"])
    action_host, _ = r.listen_setting(r.specs()["action-server"])
    for service in compose["services"].values():
        env = service.get("environment") or {}
        for var in (rasa_host, action_host):
            assert env.get(var, "haproxy") == "haproxy"


def test_haproxy_accepts_the_configuration() -> None:
    """Checked by Debian's HAProxy (scripts/bootstrap.sh installs it for the scale-out tests); the
    service names only resolve inside compose's network, so those servers start disabled here."""
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    result = subprocess.run([haproxy, "-c", "-f", str(r.DOCKER / "haproxy.cfg")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Configuration file is valid" in result.stdout + result.stderr


# ---- Kubernetes ------------------------------------------------------------------------------

def test_kubernetes_runs_every_process_of_the_stack_without_service_links_and_as_a_user() -> None:
    assert set(_process_containers()) == set(PROCESSES)
    for workload in r.k8s_kind("Deployment") + r.k8s_kind("Job"):
        pod = workload["spec"]["template"]["spec"]
        # Service links would put RASA_PORT=tcp://..., CONSOLE_PORT=tcp://... over the settings.
        assert pod.get("enableServiceLinks") is False, workload["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True
    links = {s["metadata"]["name"].upper().replace("-", "_") + "_PORT" for s in r.k8s_kind("Service")}
    clashes = links & set().union(*(r.reads(p) for p in PROCESSES))
    assert clashes, "no Service name clashes with a setting any more; keep enableServiceLinks false all the same"


@pytest.mark.parametrize("process", PROCESSES)
def test_kubernetes_probes_ask_the_stack_health_url_where_the_process_listens(process: str) -> None:
    container = _process_containers()[process]
    values = r.resolved_env(process, container)
    port_setting, path = r.health_check(r.specs()[process])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        if probe not in container:
            assert probe == "startupProbe", f"{process} has no {probe}"
            continue
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert str(ports[get["port"]]) == values[port_setting], f"{probe} asks a port {process} does not listen on"
    # Each port the container exposes is one the process listens on at every address (the HTTP
    # port's host setting as specs() pairs them; others by name: VOICE_AUDIOSOCKET_PORT, _HOST).
    listen_host, listen_port = r.listen_setting(r.specs()[process])
    for port in ports.values():
        settings = [k for k, v in values.items() if k.endswith("_PORT") and v == str(port)]
        assert len(settings) == 1, f"{process}: which setting is port {port}? {settings}"
        host = listen_host if settings[0] == listen_port else settings[0].removesuffix("_PORT") + "_HOST"
        assert values.get(host) == r.ANY_ADDRESS, f"{process} listens at {host}={values.get(host)}"


def test_kubernetes_services_reach_container_ports() -> None:
    deployments = {d["metadata"]["name"]: d for d in r.k8s_kind("Deployment")}
    for service in r.k8s_kind("Service"):
        selector = service["spec"]["selector"]
        (target,) = [d for d in deployments.values()
                     if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        names = {p["name"] for c in r.pod_containers(target) for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in names, f"{service['metadata']['name']}: {port['targetPort']}"


def test_the_pbx_reaches_every_voice_gateway_port_and_keeps_a_call_on_one_gateway() -> None:
    container = _process_containers()["voice-gateway"]
    names = {p["name"] for p in container["ports"]}
    outside = [s for s in r.k8s_kind("Service") if s["spec"].get("type") in ("LoadBalancer", "NodePort")
               and s["spec"]["selector"].get("app.kubernetes.io/name") == "voice-gateway"]
    assert len(outside) == 1
    spec = outside[0]["spec"]
    assert {p["targetPort"] for p in spec["ports"]} == names and all(p["protocol"] == "TCP" for p in spec["ports"])
    # POST /calls/{uuid}/start and the AudioSocket connection must meet on one gateway.
    assert spec["sessionAffinity"] == "ClientIP" and spec["externalTrafficPolicy"] == "Local"


def test_migration_job_has_the_services_api_environment() -> None:
    (job,) = r.k8s_kind("Job")
    (container,) = r.pod_containers(job)
    assert r.image_process(container["image"]) == "services-api"
    assert container["command"][:3] == ["python", "-m", r.specs()["services-api"].argv[2]]
    assert container["env"] == _process_containers()["services-api"]["env"]


def test_rasa_keeps_replicas_serving_through_disruptions() -> None:
    (deployment,) = [d for d in r.k8s_kind("Deployment") if r.image_process(r.pod_containers(d)[0]["image"]) == "rasa"]
    (budget,) = r.k8s_kind("PodDisruptionBudget")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["replicas"] - budget["spec"]["maxUnavailable"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
