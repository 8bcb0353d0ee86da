"""docker/: the compose file against the Compose Specification, and against the production profile.

No Docker engine runs where these tests run, so the compose file is never started here. What is checked
instead: it is valid under the vendored Compose Specification schema; its topology is the one
``pipelines.core.production`` starts (and the production-profile test runs) without Docker; every service
has a healthcheck and waits on the right condition; secrets come only from ``docker/.env``; the
environment it gives the Airflow containers is enough for ``pipelines.core.production`` to configure Airflow
as intended; the Dockerfile installs under the constraints and runs as a non-root user.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft7Validator

from pipelines.core import production
from pipelines.core.settings import LooplineSettings

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
DOCKER = REPO / "docker"
PRODUCTION_COMMAND = ["python", "-m", "pipelines.core.production"]
AIRFLOW_SERVICES = {
    "api-server": "airflow-apiserver",
    "scheduler": "airflow-scheduler",
    "dag-processor": "airflow-dag-processor",
    "triggerer": "airflow-triggerer",
    "celery-worker": "airflow-worker",
}
SECRETS = ("POSTGRES_PASSWORD", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY",
           "AIRFLOW__CORE__FERNET_KEY", "WEAVIATE_API_KEY", "AIRFLOW_ADMIN_PASSWORD", "MLFLOW_ADMIN_PASSWORD",
           "MLFLOW_FLASK_SERVER_SECRET_KEY")
# Environment keys whose value is a secret wherever they appear.
SECRET_KEY_NAME = re.compile(r"(PASSWORD|SECRET|SECRET_KEY|FERNET_KEY|API_KEY|ALLOWED_KEYS|TOKEN)$")
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, $NAME; "$$" is a literal "$".
VARIABLE = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


def load_compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def load_schema() -> dict:
    return json.loads((DOCKER / "compose-spec.schema.json").read_text())


def compose_errors(document: dict) -> list[str]:
    validator = Draft7Validator(load_schema(), format_checker=Draft7Validator.FORMAT_CHECKER)
    return [f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
            for error in sorted(validator.iter_errors(document), key=lambda e: str(list(e.absolute_path)))]


def strings_in(node) -> list[str]:
    """Every string value in a loaded YAML document (mapping keys excluded)."""
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings_in(value)]
    if isinstance(node, list):
        return [s for value in node for s in strings_in(value)]
    return [node] if isinstance(node, str) else []


def variables_in(text: str) -> list[re.Match]:
    return [match for part in text.split("$$") for match in VARIABLE.finditer(part)]


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation, for the forms the compose file uses."""

    def substitute(match: re.Match) -> str:
        name = match["braced"] or match["bare"]
        value, op = env.get(name), match["op"] or ""
        if op.endswith("?") and not (value if op == ":?" else value is not None):
            raise KeyError(f"{name}: {match['arg']}")
        if op.endswith("-") and not (value if op == ":-" else value is not None):
            return match["arg"]
        return value or ""

    return "$".join(VARIABLE.sub(substitute, part) for part in text.split("$$"))


def env_example() -> dict[str, str]:
    entries = {}
    for line in (DOCKER / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            entries[name.strip()] = value.strip()
    return entries


def filled_env() -> dict[str, str]:
    """docker/.env as a user fills it in: .env.example with a generated value for each secret."""
    env = env_example()
    env.update({name: f"test-{name.lower().replace('_', '-')}-value" for name in SECRETS})
    env["AIRFLOW__CORE__FERNET_KEY"] = "x1Qv0kKKBLkFzjq1j2q-F7S6FZvxJQYwq0q0n2Yx5Rk="
    return env


def loopline_services(compose: dict) -> dict[str, dict]:
    """The services that run the Loopline image."""
    image = compose["x-loopline-image"]["image"]
    return {name: service for name, service in compose["services"].items() if service.get("image") == image}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of docker/Dockerfile, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in (DOCKER / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += " " + line.strip().removesuffix("\\")
        if not line.rstrip().endswith("\\"):
            logical.append(current.strip())
            current = ""
    split = [text.split(None, 1) for text in logical]
    return [(parts[0].upper(), parts[1] if len(parts) > 1 else "") for parts in split]


# --- The Compose Specification ------------------------------------------------------------------------


def test_the_vendored_schema_is_the_draft7_compose_specification():
    schema = load_schema()
    Draft7Validator.check_schema(schema)
    assert "draft-07" in schema["$schema"]
    assert schema["title"] == "Compose Specification"
    assert {"service", "healthcheck", "deployment", "volume"} <= set(schema["definitions"])


def test_compose_file_is_valid_under_the_compose_specification():
    errors = compose_errors(load_compose())
    assert not errors, "docker/compose.yaml is not valid Compose:\n" + "\n".join(errors)


@pytest.mark.parametrize(("where", "breakage"), [
    ("a misspelled service key", lambda c: c["services"]["redis"].update(healtcheck={"test": ["CMD"]})),
    ("an unknown depends_on condition", lambda c: c["services"]["airflow-scheduler"]["depends_on"]["postgres"]
     .update(condition="service_ready")),
    ("a healthcheck test that is a number", lambda c: c["services"]["mlflow"]["healthcheck"].update(test=5)),
    ("a volume type Compose does not know", lambda c: c["services"]["postgres"]["volumes"].append(
        {"type": "nfs", "source": "x", "target": "/x"})),
    ("an unknown top-level key", lambda c: c.update(servicez={})),
])
def test_the_schema_check_catches_a_broken_compose_file(where, breakage):
    broken = copy.deepcopy(load_compose())
    breakage(broken)
    assert compose_errors(broken), f"{where} passed the schema check"


# --- Topology: the same processes as pipelines.core.production ---------------------------------------------


def test_loopline_services_run_exactly_the_production_components():
    compose = load_compose()
    services = loopline_services(compose)
    components = {}
    for name, service in services.items():
        command = service["command"]
        assert isinstance(command, list) and command[:3] == PRODUCTION_COMMAND and len(command) == 4, (
            f"{name}: command {command!r} is not `python -m pipelines.core.production <component>`")
        assert command[3] not in components, f"{command[3]} runs in {components.get(command[3])} and {name}"
        components[command[3]] = name
    assert components.pop("init") == "airflow-init"
    assert set(components) == set(production.COMPONENTS), (
        f"compose runs {sorted(components)}, production.COMPONENTS: {sorted(production.COMPONENTS)}")
    assert components["mlflow-server"] == "mlflow"
    for component, service in AIRFLOW_SERVICES.items():
        assert components[component] == service


def test_celery_workers_are_replicated_as_in_the_production_profile():
    worker = load_compose()["services"]["airflow-worker"]
    assert worker["deploy"]["replicas"] == production.CELERY_WORKERS
    assert "ports" not in worker and "container_name" not in worker, "a replicated service cannot pin either"


def test_every_service_has_a_healthcheck_except_the_init_job():
    services = load_compose()["services"]
    assert "healthcheck" not in services["airflow-init"]
    assert services["airflow-init"]["restart"] == "no"
    missing = [name for name, service in services.items()
               if name != "airflow-init" and not service.get("healthcheck", {}).get("test")]
    assert not missing, f"services without a healthcheck: {missing}"


def test_healthchecks_follow_airflows_official_compose_file():
    services = load_compose()["services"]

    def check(name: str) -> str:
        test = services[name]["healthcheck"]["test"]
        return " ".join(test[1:]) if isinstance(test, list) else test

    assert "pg_isready" in check("postgres")
    assert "redis-cli ping" in check("redis")
    assert "/v1/.well-known/ready" in check("weaviate")
    assert check("mlflow").endswith("http://localhost:5000/health")
    assert check("airflow-apiserver").endswith("http://localhost:8080/api/v2/monitor/health")
    assert check("airflow-scheduler").endswith("http://localhost:8974/health")
    assert "airflow jobs check --job-type DagProcessorJob --local" in check("airflow-dag-processor")
    assert "airflow jobs check --job-type TriggererJob --local" in check("airflow-triggerer")
    assert "celery_executor.app inspect ping" in check("airflow-worker")
    # Checks that talk to Airflow's database or broker run under the component's own environment.
    for name in ("airflow-dag-processor", "airflow-triggerer", "airflow-worker"):
        assert check(name).startswith("python docker/healthcheck.py "), name


def test_depends_on_waits_for_health_and_for_the_init_job():
    services = load_compose()["services"]
    for name, service in services.items():
        for target, rule in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on unknown service {target}"
            expected = ("service_completed_successfully" if target == "airflow-init" else "service_healthy")
            assert rule["condition"] == expected, f"{name} → {target}: {rule['condition']}, not {expected}"
            if expected == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits on {target}: it has no healthcheck"

    def needs(name: str) -> set[str]:
        return set(services[name].get("depends_on", {}))

    assert needs("airflow-init") == {"postgres", "redis"}
    assert needs("mlflow") == {"postgres", "airflow-init"}
    for service in AIRFLOW_SERVICES.values():
        assert {"postgres", "redis", "airflow-init"} <= needs(service), service
    assert {"airflow-apiserver", "mlflow", "weaviate"} <= needs("airflow-worker")


def test_the_data_home_is_one_shared_volume_on_every_loopline_container():
    compose = load_compose()
    home = compose["x-loopline-env"]["LOOPLINE_HOME"]
    for name, service in loopline_services(compose).items():
        assert f"loopline-data:{home}" in service["volumes"], name
        assert service["environment"]["LOOPLINE_HOME"] == home, name
    assert "loopline-data" in compose["volumes"]


def test_mlflow_artifacts_volume_is_where_the_server_keeps_artifacts():
    compose = load_compose()
    home = compose["x-loopline-env"]["LOOPLINE_HOME"]
    artifacts = LooplineSettings(home=home).mlflow_artifacts
    assert f"mlflow-artifacts:{artifacts}" in compose["services"]["mlflow"]["volumes"]


# --- Secrets --------------------------------------------------------------------------------------------


def test_no_literal_secret_in_the_compose_file():
    compose = load_compose()
    secret_reference = re.compile(r"\$\{[A-Z_][A-Z0-9_]*:\?[^}]*\}")
    for name, service in {**compose["services"], "x-airflow": compose["x-airflow"]}.items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_KEY_NAME.search(key):
                assert isinstance(value, str) and secret_reference.fullmatch(value), (
                    f"{name}: {key} must be a required ${{VAR:?…}} from docker/.env, not {value!r}")
    for text in strings_in(compose):
        masked = "$".join(VARIABLE.sub("\0", part) for part in text.split("$$"))
        for match in re.finditer(r"://[^/\s:@]+:([^@\s/]+)@", masked):
            assert match[1] == "\0", f"a password in a URL is not a ${{VAR}}: {text}"
        for match in variables_in(text):
            name = match["braced"] or match["bare"]
            if name in SECRETS:
                assert match["op"] == ":?", f"secret {name} must be required (:?), not defaulted: {text}"


def test_every_variable_of_the_compose_file_is_in_env_example():
    used = {match["braced"] or match["bare"]
            for text in strings_in(load_compose()) for match in variables_in(text)}
    listed = env_example()
    assert used - set(listed) == set(), f"missing from docker/.env.example: {sorted(used - set(listed))}"
    assert set(listed) - used == set(), f"docker/.env.example lists unused: {sorted(set(listed) - used)}"
    assert set(SECRETS) <= used


def test_env_example_leaves_every_secret_empty_with_a_way_to_generate_it():
    text = (DOCKER / ".env.example").read_text()
    listed = env_example()
    for name in SECRETS:
        assert listed[name] == "", f"{name} has a value in .env.example; secrets stay empty there"
        comment = text.split(f"\n{name}=")[0].rsplit("\n\n", 1)[-1]
        assert "python3 -c" in comment, f"{name}: no command to generate it in the comment above"


def test_compose_refuses_to_start_without_the_secrets():
    compose = load_compose()
    env = filled_env()
    env.pop("POSTGRES_PASSWORD")
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        interpolate(compose["x-loopline-env"]["LOOPLINE_POSTGRES_URL"], env)


# --- The environment against pipelines.core.production ------------------------------------------------------


def _component_environment(service: str, tmp_path: Path) -> dict[str, str]:
    """What docker/healthcheck.py (and so the component) sees in the container of ``service``."""
    compose_env = {key: interpolate(str(value), filled_env())
                   for key, value in load_compose()["services"][service]["environment"].items()}
    compose_env["LOOPLINE_HOME"] = str(tmp_path / "data")  # the container's path does not exist here
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **compose_env}
    probe = "import json, os; print(json.dumps(dict(os.environ)))"
    result = subprocess.run([sys.executable, str(DOCKER / "healthcheck.py"), sys.executable, "-c", probe],
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("service", ["airflow-scheduler", "airflow-worker"])
def test_compose_environment_configures_airflow_as_intended(service, tmp_path):
    env = _component_environment(service, tmp_path)
    secrets = filled_env()
    password = secrets["POSTGRES_PASSWORD"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert re.fullmatch(rf"postgresql(\+\w+)?://loopline:{password}@postgres:5432/loopline_airflow\?connect_timeout=10",
                        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith(".FabAuthManager")
    # Every container talks to MLflow's basic auth with the .env password, with Loopline's timeouts.
    assert (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]) == (
        "admin", secrets["MLFLOW_ADMIN_PASSWORD"])
    assert env["MLFLOW_HTTP_REQUEST_TIMEOUT"] and env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
    assert "LOOPLINE_ADMIN_PASSWORD" not in env  # only the init job gets Airflow's admin password
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:6379")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["LOOPLINE_WEAVIATE_URL"] == "http://weaviate:8080"
    assert env["LOOPLINE_WEAVIATE_API_KEY"] == secrets["WEAVIATE_API_KEY"]
    # Airflow's shared secrets come from docker/.env untouched, the same in every container.
    for name in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY"):
        assert env[name] == secrets[name]
    assert not (tmp_path / "data" / "airflow" / "production-secrets.json").exists()
    assert not (tmp_path / "data" / "mlflow" / "admin-password").exists()


def _compose_settings_of(service: str, tmp_path: Path, expression: str) -> str:
    """``expression`` evaluated in a process that has the environment compose gives ``service``."""
    compose_env = {key: interpolate(str(value), filled_env())
                   for key, value in load_compose()["services"][service]["environment"].items()}
    compose_env["LOOPLINE_HOME"] = str(tmp_path / "data")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **compose_env}
    code = ("import json\nfrom pipelines.core import production\nfrom pipelines.core.settings import get_settings\n"
            f"settings = get_settings()\nprint(json.dumps({expression}))")
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_compose_mlflow_runs_basic_auth_on_its_network_with_no_secret_in_its_command(tmp_path):
    secrets = filled_env()
    command = _compose_settings_of("mlflow", tmp_path, "production.command_for('mlflow-server', settings)")
    assert command[command.index("--host") + 1] == "0.0.0.0"  # the compose network; the host port is loopback
    assert command[command.index("--app-name") + 1] == "basic-auth"
    assert not [arg for arg in command if secrets["POSTGRES_PASSWORD"] in arg or "postgresql" in arg]
    server = _compose_settings_of("mlflow", tmp_path, "production.mlflow_server_environment(settings)")
    assert server["MLFLOW_AUTH_ADMIN_PASSWORD"] == secrets["MLFLOW_ADMIN_PASSWORD"]
    assert server["MLFLOW_FLASK_SERVER_SECRET_KEY"] == secrets["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    assert secrets["POSTGRES_PASSWORD"] in server["MLFLOW_BACKEND_STORE_URI"]
    assert load_compose()["services"]["mlflow"]["ports"] == ["127.0.0.1:${MLFLOW_HOST_PORT:-5000}:5000"]


def test_compose_api_server_listens_on_its_network_and_init_creates_the_admin(tmp_path):
    command = _compose_settings_of("airflow-apiserver", tmp_path, "production.command_for('api-server', settings)")
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert load_compose()["services"]["airflow-apiserver"]["ports"] == ["127.0.0.1:${AIRFLOW_HOST_PORT:-8080}:8080"]
    password = _compose_settings_of("airflow-init", tmp_path, "production.admin_password(settings)")
    assert password == filled_env()["AIRFLOW_ADMIN_PASSWORD"]
    assert not (tmp_path / "data" / "airflow" / "admin-password").exists()  # nothing generated beside it


# --- Dockerfile and .dockerignore ----------------------------------------------------------------------


def test_dockerfile_installs_under_the_constraints_then_the_project():
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim-bookworm")
    runs = [arguments for instruction, arguments in instructions if instruction == "RUN"]
    constrained = "pip install -r requirements.in -c constraints.txt"
    requirements = [i for i, run in enumerate(runs) if constrained in run]
    assert requirements, "no `pip install -r requirements.in -c constraints.txt`"
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in runs[requirements[0]]
    project = [i for i, run in enumerate(runs) if re.search(r"pip install --no-deps (-e )?\.(\s|$)", run)]
    assert project and project[0] > requirements[0], "the project is not installed after its dependencies"
    copies = [arguments for instruction, arguments in instructions if instruction == "COPY"]
    assert "requirements.in constraints.txt ./" in copies and ". ." in copies


def test_dockerfile_runs_the_production_profile_as_a_non_root_user():
    instructions = dockerfile_instructions()
    users = [arguments for instruction, arguments in instructions if instruction == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0"), f"runs as {users[-1] if users else 'root'}"
    env = " ".join(arguments for instruction, arguments in instructions if instruction == "ENV")
    for setting in ("LOOPLINE_PROFILE=production", "LOOPLINE_HOME=/opt/loopline/data", "HF_HUB_OFFLINE=1",
                    "DO_NOT_TRACK=true"):
        assert setting in env, setting
    cmd = dict(instructions)["CMD"]
    assert json.loads(cmd)[:3] == PRODUCTION_COMMAND


def test_dockerignore_keeps_local_state_and_secrets_out_of_the_image():
    patterns = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", ".loopline*", "test-artifacts", "docker/.env"} <= patterns


# --- Kubernetes -----------------------------------------------------------------------------------------


def test_helm_values_run_the_same_components_from_the_same_image():
    values = yaml.safe_load((DOCKER / "helm-values.yaml").read_text())
    assert values["executor"] in ("CeleryExecutor", "KubernetesExecutor")
    assert values["images"]["airflow"]["repository"]
    sections = {"api-server": "apiServer", "scheduler": "scheduler", "dag-processor": "dagProcessor",
                "triggerer": "triggerer", "celery-worker": "workers"}
    for component, section in sections.items():
        # `command` stays unset, so the image's entrypoint (tini) stays PID 1.
        assert values[section].get("command") is None, section
        args = values[section]["args"]
        assert args == [*PRODUCTION_COMMAND, component], f"{section}: {shlex.join(args)}"
    assert values["workers"]["replicas"] == production.CELERY_WORKERS
    assert values["postgresql"]["enabled"] is False and values["redis"]["enabled"] is False
    assert "loopline-env" in values["extraEnvFrom"]
    # The same auth manager as pipelines.core.production; the api-server pod listens for the chart's Service.
    assert values["config"]["core"]["auth_manager"] == production.FAB_AUTH_MANAGER
    assert {"name": "LOOPLINE_AIRFLOW_HOST", "value": "0.0.0.0"} in values["env"]
