"""What the deployment files say, read without Docker or Kubernetes, and what the code says they
should say: the commands and health URLs of ``stack.processes.specs()``, the settings each process
reads (its pydantic settings classes; for Rasa the ``${VARS}`` of its YAML), and which of them are
secrets. The tests in this package compare the two."""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import yaml
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from console.settings import ConsoleSettings
from knowledge.config import KnowledgeSettings
from services.settings import ROOT, Settings
from stack import processes
from textnorm.sealing import new_key
from voice.settings import VoiceSettings

DEPLOY = ROOT / "deploy"
DOCKER = DEPLOY / "docker"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yml"
ANY_ADDRESS = "0.0.0.0"

# The settings classes each application process builds (its __main__ and what that calls).
SETTINGS_OF: dict[str, tuple[type[BaseSettings], ...]] = {
    "services-api": (Settings, KnowledgeSettings),
    "action-server": (Settings, KnowledgeSettings),
    "voice-gateway": (VoiceSettings,),
    "console": (ConsoleSettings,),
}
TEST_KEYS = f"t1:{new_key()}"  # a keyring for the settings the tests build
SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|_KEYS?)$")
PASSWORD_IN_URL = re.compile(r"://[^/@:\s]+:(.+)@[^@]*$")


# ---- what the stack runs ---------------------------------------------------------------------

@lru_cache(maxsize=1)
def specs() -> dict[str, processes.ProcessSpec]:
    """specs() with a distinct value for every address, port and path, so that each argument and
    each health URL can be traced back to the setting it came from."""
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, heze_env="test", rasa_api_token=SecretStr("rasa-token.test"),
        rasa_host="rasa.test", rasa_port=15005, rasa_model_dir="/models.test", rasa_endpoints="endpoints.test.yml",
        action_host="action.test", action_port=15055, services_api_host="services.test", services_api_port=18030,
        payment_sandbox_secret=SecretStr("sandbox.test"), data_keys=SecretStr(TEST_KEYS),
        heze_db_url="sqlite:///heze.test.db", phone_channel_token=SecretStr("phone-token.test"),
        wechat_front_host="front.test", wechat_front_port=15006)
    voice = VoiceSettings(_env_file=None, heze_env="test", voice_host="voice.test",  # type: ignore[call-arg]
                          voice_http_port=18010, voice_audiosocket_port=19092,
                          voice_gateway_token=SecretStr("gateway-token.test"))
    console = ConsoleSettings(_env_file=None, heze_env="test", console_host="console.test",  # type: ignore[call-arg]
                              console_port=18020)
    return {spec.name: spec for spec in processes.specs(settings, voice, console)}


def setting_named(spec: processes.ProcessSpec, value: str) -> str | None:
    """The one variable of the process's environment that holds ``value``."""
    names = [name for name, given in spec.env.items() if given == value]
    assert len(names) <= 1, f"{spec.name}: {value!r} is the value of {names}; the test needs distinct values"
    return names[0] if names else None


def expected_command(spec: processes.ProcessSpec) -> list[str]:
    """The process's argv with the program's path dropped and each value a setting gave written as
    ``$NAME``: what an image's CMD must say."""
    words = [Path(spec.argv[0]).name]
    for arg in spec.argv[1:]:
        name = setting_named(spec, arg)
        words.append(f"${name}" if name else arg)
    return words


def listen_setting(spec: processes.ProcessSpec) -> tuple[str, str]:
    """The settings (host, port) the process listens at, read off its URL."""
    url = urlsplit(spec.url)
    host, port = setting_named(spec, url.hostname or ""), setting_named(spec, str(url.port))
    assert host and port, f"{spec.name}: no setting gives {spec.url}"
    return host, port


def health_check(spec: processes.ProcessSpec) -> tuple[str, str]:
    """(port setting, path) of the process's health URL."""
    url = urlsplit(spec.health_url)
    port = setting_named(spec, str(url.port))
    assert port, f"{spec.name}: no setting gives the port of {spec.health_url}"
    return port, url.path


# ---- what each process reads -----------------------------------------------------------------

def env_names(cls: type[BaseSettings]) -> set[str]:
    prefix = str(cls.model_config.get("env_prefix") or "")
    return {(prefix + name).upper() for name in cls.model_fields}


def secret_fields() -> set[str]:
    """Every setting typed as a secret in any settings class."""
    names = set()
    for cls in {c for classes in SETTINGS_OF.values() for c in classes}:
        prefix = str(cls.model_config.get("env_prefix") or "")
        names |= {(prefix + name).upper() for name, info in cls.model_fields.items()
                  if SecretStr in (info.annotation, *getattr(info.annotation, "__args__", ()))}
    return names


def is_secret(name: str) -> bool:
    return bool(SECRET_NAME.search(name)) or name in secret_fields()


def yaml_variables(path: Path) -> set[str]:
    """The ``${VAR}``s in a Rasa YAML file's values (Rasa expands them from the environment)."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str):
            found.update(re.findall(r"\$\{(\w+)\}", node))

    walk(yaml.safe_load(path.read_text(encoding="utf-8")))
    return found


def rasa_code_reads() -> set[str]:
    """Variables the code running inside Rasa reads by name (os.environ.get("X"), os.environ["X"])."""
    names: set[str] = set()
    for package in ("channels", "rasa_runtime", "textnorm", "nlu"):
        for path in (ROOT / package).rglob("*.py"):
            names |= set(re.findall(r"""os\.(?:environ\.get\(|environ\[|getenv\()\s*["'](\w+)["']""", path.read_text()))
    return names


def rasa_yaml_files() -> list[Path]:
    """bot/credentials.yml and the endpoints file the Rasa image names (its RASA_ENDPOINTS)."""
    endpoints = dockerfile("rasa").env["RASA_ENDPOINTS"]
    return [ROOT / "bot" / "credentials.yml", ROOT / endpoints]


def front_reads() -> set[str]:
    """What the WeChat front reads (channels/front.py reads its environment by name)."""
    return set(re.findall(r"""os\.(?:environ\.get\(|environ\[|getenv\()\s*["'](\w+)["']""",
                          (ROOT / "channels" / "front.py").read_text()))


def reads(process: str) -> set[str]:
    """Every environment variable the process reads."""
    if process == "wechat-front":
        return front_reads()
    if process == "rasa":
        names = set().union(*(yaml_variables(p) for p in rasa_yaml_files()))
        names |= {w[1:] for w in expected_command(specs()["rasa"]) if w.startswith("$")}
        return names | set(processes.RASA_ENV) | rasa_code_reads()
    return set().union(*(env_names(cls) for cls in SETTINGS_OF[process]))


def must_set(process: str, key_file: Path) -> set[str]:
    """What the process cannot start without. Rasa: every variable of its YAML and command (an unset
    one stops it) and DATA_KEYS (rasa_runtime's tracker store refuses to start without keys). The
    others: each setting of a valid production configuration without which their settings classes
    refuse to start (found by leaving each out in turn). ``key_file``: any existing file."""
    if process == "rasa":
        names = set().union(*(yaml_variables(p) for p in rasa_yaml_files()))
        return names | {w[1:] for w in expected_command(specs()["rasa"]) if w.startswith("$")} | {"DATA_KEYS"}
    if process == "wechat-front":
        return {"WECHAT_FRONT_TOKEN", "WECHAT_FRONT_UPSTREAM"}  # it refuses to start without the first
    production = {
        "HEZE_ENV": "production", "RASA_API_TOKEN": "r" * 32, "DATA_KEYS": TEST_KEYS,
        "PUBLIC_BASE_URL": "https://assistant.test", "PAYMENT_PROVIDER": "wechatpay", "WECHAT_APPID": "wx.test",
        "WECHATPAY_MCHID": "1900000001", "WECHATPAY_CERT_SERIAL": "serial.test", "WECHATPAY_APIV3_KEY": "k" * 32,
        "WECHATPAY_PRIVATE_KEY_PATH": str(key_file), "WECHATPAY_PUBLIC_KEY_PATH": str(key_file),
        "WECHATPAY_PUBLIC_KEY_ID": "PUB_KEY_ID_test", "PHONE_CHANNEL_TOKEN": "p" * 32, "VOICE_GATEWAY_TOKEN": "g" * 32,
        "VOICE_VOSK_MODEL": "var/models/vosk.test", "CONSOLE_SECURE_COOKIES": "true", "RABBITMQ_HOST": "rabbitmq.test",
    }
    required = set()
    for cls in SETTINGS_OF[process]:
        def build(env: dict[str, str], cls: type[BaseSettings] = cls) -> BaseSettings:
            values: dict[str, Any] = {k.lower(): v for k, v in env.items() if k.lower() in cls.model_fields}
            return cls(_env_file=None, **values)
        try:
            build(production)
        except ValueError as exc:
            raise AssertionError(f"the test's production configuration no longer satisfies {cls.__name__} "
                                 f"(a new required setting? add it here and to the manifests): {exc}") from None
        for name in production:
            try:
                build({k: v for k, v in production.items() if k != name})
            except ValueError:
                required.add(name)
    return required


# ---- Dockerfiles -----------------------------------------------------------------------------

@dataclass
class Dockerfile:
    path: Path
    instructions: list[tuple[str, str]]
    env: dict[str, str] = field(default_factory=dict)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def command(self) -> list[str]:
        """CMD as words: the exec form as written, the shell form split (a leading exec dropped)."""
        cmd = self.last("CMD") or ""
        if cmd.startswith("["):
            return list(json.loads(cmd))
        words = shlex.split(cmd)
        return words[1:] if words[:1] == ["exec"] else words

    def healthcheck(self) -> list[str]:
        args = self.last("HEALTHCHECK") or ""
        _, sep, cmd = args.partition("CMD ")
        assert sep and cmd.strip().startswith("["), f"{self.path.name}: HEALTHCHECK needs CMD in exec form"
        return list(json.loads(cmd))

    def copies(self) -> list[tuple[str, str]]:
        """(source, destination) of each COPY from the build context."""
        pairs = []
        for args in self.all("COPY"):
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            if not any(w.startswith("--from") for w in shlex.split(args)):
                pairs += [(src, words[-1]) for src in words[:-1]]
        return pairs


def dockerfile(name: str) -> Dockerfile:
    path = DOCKER / f"{name}.Dockerfile"
    lines, pending = [], ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        text = raw.strip()
        if not text or text.startswith("#"):
            continue  # Docker drops comment lines, inside a continued instruction too
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        lines.append(pending + text)
        pending = ""
    instructions = [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]
    image = Dockerfile(path, instructions)
    for args in image.all("ENV"):
        for word in shlex.split(args):
            name_, sep, value = word.partition("=")
            assert sep, f"{path.name}: write ENV as NAME=value ({word!r})"
            image.env[name_] = value
    return image


def dockerignore(name: str) -> list[str]:
    path = DOCKER / f"{name}.Dockerfile.dockerignore"
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


# ---- compose and Kubernetes ------------------------------------------------------------------

def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def image_process(image: str) -> str | None:
    """The process an image reference is of (``${HEZE_REGISTRY:-heze}/rasa:${HEZE_TAG}`` -> rasa)."""
    match = re.search(r"(?:^|/)([a-z-]+)(?::|$)", image.replace("${HEZE_REGISTRY:-heze}", "heze"))
    name = match.group(1) if match else None
    return name if name in specs() else None


def k8s_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                yield path, doc


def k8s_applied() -> list[dict[str, Any]]:
    """The objects kustomization.yaml applies."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = []
    for resource in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / resource).read_text(encoding="utf-8")) if d]
    return docs


def k8s_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in k8s_applied() if d["kind"] == kind]


def config_map() -> dict[str, str]:
    (cm,) = [d for d in k8s_applied() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "heze-config"]
    return {k: str(v) for k, v in cm["data"].items()}


def example_secrets() -> dict[str, dict[str, str]]:
    docs = yaml.safe_load_all((K8S / "secret.example.yaml").read_text(encoding="utf-8"))
    return {d["metadata"]["name"]: d["stringData"] for d in docs if d}


def pod_containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return list(workload["spec"]["template"]["spec"]["containers"])


def container_env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def resolved_env(process: str, container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the process sees it: the image's ENV, then the manifest's
    values and ConfigMap keys (secrets are left out: their values are not in the repository)."""
    values = dict(dockerfile(process).env)
    cm = config_map()
    for name, item in container_env(container).items():
        if "value" in item:
            values[name] = str(item["value"])
        elif "configMapKeyRef" in item.get("valueFrom", {}):
            values[name] = cm[item["valueFrom"]["configMapKeyRef"]["key"]]
    return values
