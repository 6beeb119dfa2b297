"""The deployment: the Dockerfile, swarm/stack.yml, swarm/consoles.yml, and the image's install path.

No Docker engine runs here, so: the stack files are loaded as data and held to
the invariants an operator relies on; ``docker stack config`` (client only)
validates them against the schema Swarm uses; the Dockerfile is parsed; the
scripts the image and the stack run (the health checks, make-secrets.sh) are
run for real; and the image's install is replayed: the same wheel, a fresh
venv, a WORKDIR holding only examples/, the same entry point and commands.
"""
from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jobkit.brokers import broker_from_url
from jobkit.brokers.cluster import BeanstalkCluster, parse_cluster_url
from jobkit.cli import build_parser
from jobkit.config import Settings
from jobkit.embedded import DEFAULT_MAX_JOB_SIZE, Beanstalkd, free_port, wait_for_port
from tests.deployfiles import (
    ROOT,
    SWARM,
    Stage,
    duration_s,
    exec_form,
    instruction_flags,
    load_compose,
    option,
    parse_dockerfile,
    published_ports,
    read_dotenv,
    secret_sources,
    volume_targets,
)
from tests.helpers import eventually
from tests.servers import missing

pytestmark = pytest.mark.deploy

BEANSTALKD = ("beanstalkd-1", "beanstalkd-2", "beanstalkd-3")  # one service per cluster server
STATEFUL = (*BEANSTALKD, "mongo")
JOBKIT_SERVICES = ("manager", "worker")
ENV_FILE_SECRET = "jobkit_env"
CLUSTER_URL = "beanstalk://beanstalkd-1:11300,beanstalkd-2:11300,beanstalkd-3:11300"
SECRET_NAMES = {"mongo_root_username", "mongo_root_password", "jobkit_env",
                "consoles_mongo_url", "consoles_password"}


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    """swarm/stack.yml as `docker stack deploy` sees it with no variables exported."""
    return load_compose("stack.yml")


@pytest.fixture(scope="module")
def services(stack: dict[str, Any]) -> dict[str, Any]:
    return dict(stack["services"])


def final_stage() -> Stage:
    return parse_dockerfile(ROOT / "Dockerfile")[-1]


# -- the stack: services, ports, scale ------------------------------------------------

def test_stack_has_the_seeds_services_in_format_3_8_or_later(stack: dict[str, Any]) -> None:
    """The seed's services, its one beanstalkd grown into a cluster of three."""
    major, minor = (int(part) for part in str(stack["version"]).split(".")[:2])
    assert (major, minor) >= (3, 8)
    assert set(stack["services"]) == {*BEANSTALKD, "mongo", "manager", "worker"}


def test_only_the_manager_publishes_a_port_and_it_is_8080(services: dict[str, Any]) -> None:
    assert published_ports(services["manager"]) == [(8080, 8080)]
    for name in (*BEANSTALKD, "mongo", "worker"):
        assert published_ports(services[name]) == [], f"{name} must publish no port"
        assert not services[name].get("ports"), f"{name} has a ports: entry"


def test_three_workers_and_at_least_one_manager(services: dict[str, Any]) -> None:
    assert services["worker"]["deploy"]["replicas"] == 3
    assert services["manager"]["deploy"]["replicas"] >= 1
    for name in STATEFUL:  # one server per data volume
        assert services[name]["deploy"]["replicas"] == 1


def test_jobkit_services_run_the_images_commands(services: dict[str, Any]) -> None:
    manager, worker = services["manager"], services["worker"]
    assert manager["image"] == worker["image"] == "jobkit:latest"
    assert manager["command"][0] == "manager" and worker["command"][0] == "worker"
    for service in (manager, worker):  # `docker compose` builds the repository's Dockerfile
        context = service["build"] if isinstance(service["build"], str) else service["build"]["context"]
        assert (SWARM / context).resolve() == ROOT


@pytest.mark.parametrize("name", JOBKIT_SERVICES)
def test_the_stacks_jobkit_commands_are_accepted_by_the_cli(services: dict[str, Any], name: str) -> None:
    args = build_parser().parse_args(services[name]["command"])  # exits 2 on an unknown flag
    assert args.command == name
    assert args.env_file == f"/run/secrets/{ENV_FILE_SECRET}"
    if name == "worker":
        assert args.pool == "process" and args.concurrency >= 1


# -- shutdown ------------------------------------------------------------------------------

def test_worker_stop_grace_period_outlasts_grace_and_the_longest_time_limit(
        stack: dict[str, Any], services: dict[str, Any]) -> None:
    worker = services["worker"]
    grace_arg = option(worker["command"], "--grace")
    assert grace_arg is not None, "the worker's --grace must be explicit, not the CLI default"
    grace = float(grace_arg)
    max_time_limit = float(stack["x-max-task-time-limit-s"])
    stop_grace = duration_s(worker["stop_grace_period"])
    assert max_time_limit <= grace, "a job within its time_limit must be able to finish"
    # the process pool SIGKILLs stragglers at grace + 5 s; Docker's SIGKILL must come later
    assert grace + 5 < stop_grace
    assert worker.get("stop_signal", "SIGTERM") == "SIGTERM"
    assert worker.get("init") is True and services["manager"].get("init") is True


def test_the_example_apps_time_limits_fit_the_documented_maximum(stack: dict[str, Any]) -> None:
    from examples.hashing import app

    limit = float(stack["x-max-task-time-limit-s"])
    assert app.tasks, "the example app registers no task"
    for task in app.tasks.values():
        assert task.options.time_limit is None or task.options.time_limit <= limit, task.name


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("2m", 120), ("1m30s", 90), ("1h", 3600), ("1.5s", 1.5), ("500ms", 0.5)])
def test_durations_parse_as_docker_does(text: str, seconds: float) -> None:
    assert duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["90", "", "s", "1x", "m5", "1m 30s"])
def test_non_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        duration_s(text)


# -- network -------------------------------------------------------------------------------

def test_one_encrypted_overlay_network_joined_by_every_service(
        stack: dict[str, Any], services: dict[str, Any]) -> None:
    (name, network), = stack["networks"].items()
    assert network["driver"] == "overlay"
    assert network["driver_opts"]["encrypted"] == "true"
    for service_name, service in services.items():
        joined = service["networks"]
        assert list(joined) == [name], f"{service_name} is not on {name} alone"


def test_compose_gets_a_bridge_from_swarm_env_and_no_secrets() -> None:
    dotenv = read_dotenv(SWARM / ".env")
    assert set(dotenv) <= {"JOBKIT_NETWORK_DRIVER", "COMPOSE_PROJECT_NAME"}, "swarm/.env is tracked"
    (network,) = load_compose("stack.yml", dotenv)["networks"].values()
    assert network["driver"] == "bridge"


# -- stateful services ---------------------------------------------------------------------

@pytest.mark.parametrize("name", BEANSTALKD)
def test_beanstalkd_keeps_its_binlog_on_a_named_volume(
        stack: dict[str, Any], services: dict[str, Any], name: str) -> None:
    beanstalkd = services[name]
    command = beanstalkd["command"]
    binlog = option(command, "-b")
    assert binlog is not None
    mounts = volume_targets(beanstalkd)
    volume = next((source for target, source in mounts.items()
                   if binlog == target or binlog.startswith(target.rstrip("/") + "/")), None)
    assert volume is not None, f"-b {binlog} is not on a named volume"
    assert volume in stack["volumes"]
    assert int(option(command, "-f") or "-1") >= 0, "choose an fsync policy with -f"
    assert "-F" not in command
    assert int(option(command, "-z") or 0) == DEFAULT_MAX_JOB_SIZE == 1048576


def test_beanstalkd_image_is_debians_1_12_unprivileged(services: dict[str, Any]) -> None:
    build = services["beanstalkd-1"]["build"]
    context = SWARM / (build if isinstance(build, str) else build["context"])
    (stage,) = parse_dockerfile(context / "Dockerfile")
    assert stage.base == "debian:bookworm-slim"
    assert any("'beanstalkd=1.12-*'" in run for run in stage.all("RUN"))
    assert stage.last("USER") not in (None, "root", "0")
    assert exec_form(stage.last("ENTRYPOINT") or "") == ["beanstalkd"]


def test_the_beanstalkd_cluster_one_service_and_volume_per_server_all_in_the_broker_url(
        stack: dict[str, Any], services: dict[str, Any]) -> None:
    """Each server its own binlog volume, the same settings otherwise; the URL lists each once."""
    volumes = [volume_targets(services[name])["/var/lib/beanstalkd"] for name in BEANSTALKD]
    assert len(set(volumes)) == len(BEANSTALKD) and set(volumes) <= set(stack["volumes"])
    settings = [{k: v for k, v in services[name].items() if k != "volumes"} for name in BEANSTALKD]
    assert all(one == settings[0] for one in settings)
    listed = [name for name, _ in parse_cluster_url(CLUSTER_URL)]
    assert listed == [f"{name}:{option(services[name]['command'], '-p')}" for name in BEANSTALKD]
    assert isinstance(broker_from_url(stack["x-jobkit-environment"]["JOBKIT_BROKER_URL"]),
                      BeanstalkCluster)
    for name in ("manager", "worker"):
        assert set(BEANSTALKD) <= set(services[name]["depends_on"])


def test_mongo_has_a_volume_and_authentication_from_secrets(
        stack: dict[str, Any], services: dict[str, Any]) -> None:
    mongo = services["mongo"]
    assert re.fullmatch(r"mongo:\d+(\.\d+)*", mongo["image"]), "pin the mongo image"
    assert volume_targets(mongo).get("/data/db") in stack["volumes"]
    assert "--auth" in mongo["command"]
    env = mongo["environment"]
    assert "MONGO_INITDB_ROOT_PASSWORD" not in env and "MONGO_INITDB_ROOT_USERNAME" not in env
    mounted = secret_sources(mongo)
    for variable in ("MONGO_INITDB_ROOT_USERNAME_FILE", "MONGO_INITDB_ROOT_PASSWORD_FILE"):
        assert env[variable] in mounted.values(), f"{variable} names no mounted secret"


@pytest.mark.parametrize("name", STATEFUL)
def test_stateful_services_stay_on_the_manager_node_and_never_overlap(
        services: dict[str, Any], name: str) -> None:
    deploy = services[name]["deploy"]
    assert "node.role == manager" in deploy["placement"]["constraints"]
    # start-first would run two servers on one volume
    assert deploy["update_config"]["order"] == "stop-first"
    assert deploy["rollback_config"]["order"] == "stop-first"


# -- credentials ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", JOBKIT_SERVICES)
def test_jobkit_services_read_the_backend_url_from_the_secret_env_file(
        services: dict[str, Any], name: str) -> None:
    service = services[name]
    target = secret_sources(service).get(ENV_FILE_SECRET)
    assert target is not None and option(service["command"], "--env-file") == target
    # the real environment wins over --env-file: these would silently override the secret
    shadowing = {"JOBKIT_BACKEND_URL", "MONGO_URL", "JOBKIT_API_TOKEN"} & set(service["environment"])
    assert not shadowing
    assert service["environment"]["JOBKIT_BROKER_URL"] == CLUSTER_URL


@pytest.mark.parametrize("name", ["stack.yml", "consoles.yml"])
def test_no_credentials_in_the_stack_files(name: str) -> None:
    text = (SWARM / name).read_text()
    assert not re.search(r"mongodb://[^\s/@]+:[^\s/@]+@", text), "a password in a MongoDB URL"
    data = load_compose(name)
    for service_name, service in data["services"].items():
        for key in service.get("environment") or {}:
            if re.search(r"PASSWORD|TOKEN|SECRET", key) and not key.endswith("_FILE"):
                pytest.fail(f"{name}: {service_name} sets {key} in the open")
    for secret_name, secret in data.get("secrets", {}).items():
        assert secret == {"file": f"./secrets/{secret_name}"}, secret_name


def test_make_secrets_writes_exactly_the_secrets_the_stack_files_read(tmp_path: Path) -> None:
    subprocess.run(["sh", str(SWARM / "make-secrets.sh"), str(tmp_path / "s")], check=True,
                   capture_output=True)
    written = {p.name for p in (tmp_path / "s").iterdir()}
    read = set(load_compose("stack.yml")["secrets"]) | set(load_compose("consoles.yml")["secrets"])
    assert written == read == SECRET_NAMES


def test_make_secrets_gives_jobkit_and_mongo_one_password(tmp_path: Path) -> None:
    from pymongo.uri_parser import parse_uri

    secrets = tmp_path / "secrets"
    done = subprocess.run(["sh", str(SWARM / "make-secrets.sh"), str(secrets)],
                          capture_output=True, text=True, check=True)
    user = (secrets / "mongo_root_username").read_text()
    password = (secrets / "mongo_root_password").read_text()
    assert user == "jobkit" and re.fullmatch(r"[0-9a-f]{64}", password)
    assert password not in done.stdout + done.stderr
    settings = Settings.from_env(environ={}, env_file=secrets / "jobkit_env")
    assert settings.api_token is None  # only with --api-token
    uri = parse_uri(settings.backend_url)
    assert (uri["username"], uri["password"]) == (user, password)
    assert uri["nodelist"] == [("mongo", 27017)] and uri["database"] == "jobs"
    assert uri["options"]["authSource"] == "admin"
    assert (secrets / "consoles_mongo_url").read_text().strip() == settings.backend_url
    # readable by the containers' non-root users; the folder closed to other local users
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    for path in secrets.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o444, path.name


def test_make_secrets_never_overwrites_and_never_repeats_a_password(tmp_path: Path) -> None:
    script = str(SWARM / "make-secrets.sh")
    subprocess.run(["sh", script, str(tmp_path / "a")], check=True, capture_output=True)
    before = {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()}
    again = subprocess.run(["sh", script, str(tmp_path / "a")], check=False, capture_output=True,
                           text=True)
    assert again.returncode != 0 and "refusing" in again.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()} == before
    subprocess.run(["sh", script, "--api-token", str(tmp_path / "b")], check=True, capture_output=True)
    assert (tmp_path / "b" / "mongo_root_password").read_bytes() != before["mongo_root_password"]
    token = Settings.from_env(environ={}, env_file=tmp_path / "b" / "jobkit_env").api_token
    assert token is not None and re.fullmatch(r"[0-9a-f]{64}", token)


# -- health checks and policies ----------------------------------------------------------

def test_every_service_has_a_health_decision(services: dict[str, Any]) -> None:
    for name in (*BEANSTALKD, "mongo", "manager"):
        check = services[name]["healthcheck"]
        assert check["test"][0] == "CMD" and len(check["test"]) > 1, name
        for key in ("interval", "timeout", "start_period"):
            assert duration_s(check[key]) > 0, f"{name}: {key}"
        assert check["retries"] >= 1
    # the image's check probes HTTP; a worker serves none, so it must not inherit it
    assert services["worker"]["healthcheck"] == {"disable": True}


def test_manager_checks_healthz_with_the_images_command(services: dict[str, Any]) -> None:
    stage = final_stage()
    flags, command = instruction_flags(stage.last("HEALTHCHECK") or "")
    assert command.startswith("CMD ")
    image_check = exec_form(command[4:])
    assert services["manager"]["healthcheck"]["test"][1:] == image_check
    # that command is the health-check script, installed by the final stage
    installed = {instruction_flags(copy)[1].split()[-1]: instruction_flags(copy)[1].split()[0]
                 for copy in stage.all("COPY")}
    assert installed.get(f"/usr/local/bin/{image_check[0]}") == "docker/healthcheck.py"
    assert duration_s(flags["timeout"]) > 4  # the script's own urllib timeout


@pytest.mark.parametrize("name", [*BEANSTALKD, "mongo", "manager", "worker"])
def test_restart_update_and_rollback_policies(services: dict[str, Any], name: str) -> None:
    deploy = services[name]["deploy"]
    assert deploy["restart_policy"]["condition"] in ("any", "on-failure")
    assert duration_s(deploy["restart_policy"]["delay"]) > 0
    update, rollback = deploy["update_config"], deploy["rollback_config"]
    assert update["parallelism"] >= 1 and update["failure_action"] == "rollback"
    assert duration_s(update["monitor"]) > 0
    assert rollback["parallelism"] >= 1 and rollback["failure_action"] in ("pause", "continue")


def test_the_manager_updates_start_first(services: dict[str, Any]) -> None:
    assert services["manager"]["deploy"]["update_config"]["order"] == "start-first"


# -- consoles ------------------------------------------------------------------------------

def test_consoles_live_only_in_their_own_file(services: dict[str, Any]) -> None:
    def console_images(svcs: dict[str, Any]) -> set[str]:
        return {s["image"].split(":")[0] for s in svcs.values()
                if re.search(r"mongo-express|beanstalkd-console", s["image"])}

    assert console_images(services) == set()
    consoles = load_compose("consoles.yml")["services"]
    assert console_images(consoles) == {"mongo-express", "schickling/beanstalkd-console"}
    for name, service in consoles.items():
        assert list(service["networks"]) == ["internal"], name
        assert [p["mode"] for p in service["ports"]] == ["host"], f"{name}: not via the routing mesh"
        assert "node.role == manager" in service["deploy"]["placement"]["constraints"]


def docker_stack_config(*files: str) -> dict[str, Any]:
    """`docker stack config`: Swarm's own loader and schema, offline, client only."""
    import yaml

    docker = shutil.which("docker")
    if docker is None:
        missing("the docker client is not installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBKIT_", "COMPOSE_"))}
    argv = [str(docker), "stack", "config"] + [a for f in files for a in ("-c", str(SWARM / f))]
    done = subprocess.run(argv, check=False, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return dict(yaml.safe_load(done.stdout))


def test_docker_stack_config_accepts_the_stack(stack: dict[str, Any]) -> None:
    merged = docker_stack_config("stack.yml")
    assert merged["networks"]["internal"]["driver"] == "overlay"  # Swarm reads no .env
    # Docker reads the durations as these tests do
    for name in ("worker", "mongo"):
        assert duration_s(merged["services"][name]["stop_grace_period"]) == duration_s(
            stack["services"][name]["stop_grace_period"])


def test_docker_stack_config_accepts_the_stack_with_consoles() -> None:
    merged = docker_stack_config("stack.yml", "consoles.yml")
    assert {"mongo-express", "beanstalkd-console", "manager"} <= set(merged["services"])


# -- the Dockerfile --------------------------------------------------------------------------

def test_dockerfile_builds_a_wheel_then_installs_it_on_slim() -> None:
    stages = parse_dockerfile(ROOT / "Dockerfile")
    assert len(stages) >= 2, "multi-stage: build the wheel in a builder stage"
    builder, final = stages[0], stages[-1]
    for stage in (builder, final):
        assert re.fullmatch(r"python:3\.\d+-slim", stage.base), stage.base
    assert builder.name and any("pip wheel --no-deps" in run for run in builder.all("RUN"))
    install = " ".join(final.all("RUN"))
    assert f"from={builder.name}" in install and "--no-cache-dir" in install
    assert "pip install" in install and "jobkit-*.whl" in install
    for tool in ("gcc", "build-essential", "apt-get install", "python3-dev"):
        assert tool not in install, f"{tool} in the final stage"


def test_dockerfile_runtime_contract() -> None:
    final = final_stage()
    assert final.last("USER") not in (None, "root", "0", "0:0")
    assert exec_form(final.last("ENTRYPOINT") or "") == ["jobkit"]
    assert exec_form(final.last("CMD") or "") == ["manager"]
    assert "8080" in (final.last("EXPOSE") or "").split()
    assert final.last("HEALTHCHECK")
    assert "PYTHONUNBUFFERED=1" in " ".join(final.all("ENV"))
    assert "org.opencontainers.image.title" in " ".join(final.all("LABEL"))
    workdir = final.last("WORKDIR") or ""
    copies = [instruction_flags(c)[1].split() for c in final.all("COPY")]
    assert ["examples/", "./examples/"] in copies or ["examples/", f"{workdir}/examples/"] in copies
    # USER comes after the installs: the code and /app belong to root
    keywords = [kw for kw, _ in final.instructions]
    assert keywords.index("USER") > max(i for i, kw in enumerate(keywords) if kw in ("RUN", "COPY"))


def test_dockerignore_keeps_secrets_and_state_out_but_not_what_is_copied() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for needed in (".git", ".venv/", ".env", "swarm/", "*.db", ".jobkit/", "**/__pycache__",
                   ".pytest_cache/"):
        assert needed in patterns, needed
    sources = [instruction_flags(c)[1].split()[:-1] for s in parse_dockerfile(ROOT / "Dockerfile")
               for c in s.all("COPY") if "--from" not in c]
    for source in (src.rstrip("/") for group in sources for src in group):
        assert (ROOT / source).exists(), source
        assert not any(Path(source).match(p.rstrip("/")) for p in patterns), f"{source} is ignored"


# -- the health-check scripts, run -----------------------------------------------------------

class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api_stub() -> Iterator[http.server.HTTPServer]:
    """A stand-in API whose /healthz answers 200 (swap RequestHandlerClass to change that)."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def run_healthcheck(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("JOBKIT_API_PORT", "MANAGER_LISTEN_PORT") and not k.lower().endswith("_proxy")}
    return subprocess.run([sys.executable, str(ROOT / "docker" / "healthcheck.py")],
                          check=False, env={**clean, **env}, capture_output=True, text=True,
                          timeout=30)


def test_healthcheck_passes_when_healthz_answers_200(api_stub: http.server.HTTPServer) -> None:
    port = str(api_stub.server_address[1])
    assert run_healthcheck(JOBKIT_API_PORT=port).returncode == 0
    assert run_healthcheck(MANAGER_LISTEN_PORT=port).returncode == 0  # the seed's name
    # a proxy configured for the app is not used for the local check
    assert run_healthcheck(JOBKIT_API_PORT=port, http_proxy="http://127.0.0.1:9",
                           HTTP_PROXY="http://127.0.0.1:9").returncode == 0


def test_healthcheck_fails_on_an_error_status_or_no_server(api_stub: http.server.HTTPServer) -> None:
    port = str(api_stub.server_address[1])
    api_stub.RequestHandlerClass = type("Sick", (_Health,), {"status": 503})
    sick = run_healthcheck(JOBKIT_API_PORT=port)
    assert sick.returncode == 1 and "503" in sick.stdout
    assert run_healthcheck(JOBKIT_API_PORT=str(free_port())).returncode == 1
    assert run_healthcheck(JOBKIT_API_PORT="not-a-port").returncode == 1


def test_beanstalkd_healthcheck_answers_for_a_real_beanstalkd(services: dict[str, Any]) -> None:
    if shutil.which("beanstalkd") is None:
        missing("beanstalkd is not installed (apt-get install beanstalkd)")
    cmd, *argv = services["beanstalkd-1"]["healthcheck"]["test"]
    assert cmd == "CMD" and argv[0] == "bash" and "11300" in argv[-1]
    with Beanstalkd() as server:
        healthy = [*argv[:-1], argv[-1].replace("11300", str(server.port))]
        assert subprocess.run(healthy, check=False, capture_output=True, timeout=30).returncode == 0
    dead = [*argv[:-1], argv[-1].replace("11300", str(free_port()))]
    assert subprocess.run(dead, check=False, capture_output=True, timeout=30).returncode != 0


# -- the image's install, replayed ------------------------------------------------------------

@dataclass
class ImageLike:
    """A fresh venv holding the wheel the Dockerfile builds, and a WORKDIR like the image's."""

    wheel: Path
    venv: Path
    workdir: Path

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a container: no jobkit or seed settings, no source tree on the path."""
        seed = ("BEANSTALK_HOST", "BEANSTALK_PORT", "MONGO_URL", "MANAGER_LISTEN_PORT", "PYTHONPATH")
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBKIT_") and k not in seed}
        return {**env, "PYTHONUNBUFFERED": "1", **extra}

    def run(self, *argv: str, cwd: Path | None = None, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.venv / "bin" / argv[0]), *argv[1:]], cwd=cwd or self.workdir,
                              env=self.env(**extra), check=False, capture_output=True, text=True,
                              timeout=120)


def _copy_sources(stage: Stage, into: Path, only: str = "") -> None:
    """Copy what a stage's COPY instructions (those naming ``only``) take from the build context."""
    for copy in stage.all("COPY"):
        flags, rest = instruction_flags(copy)
        if "from" in flags or only not in rest:
            continue
        for source in rest.split()[:-1]:
            src = ROOT / source
            dest = into / source.rstrip("/")
            if src.is_dir():
                shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest)


@pytest.fixture(scope="module")
def image_like(tmp_path_factory: pytest.TempPathFactory) -> ImageLike:
    """Replay the Dockerfile: COPY the builder's sources, `pip wheel --no-deps .`, then
    `pip install` the wheel into a fresh venv (dependencies from PyPI, as in the image),
    and lay out a WORKDIR with the final stage's examples/."""
    stages = parse_dockerfile(ROOT / "Dockerfile")
    base = tmp_path_factory.mktemp("image")
    context, wheels, workdir = base / "src", base / "wheels", base / "app"
    _copy_sources(stages[0], context)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--wheel-dir", str(wheels), str(context)],
                   check=True, capture_output=True, timeout=180)
    (wheel,) = wheels.glob("jobkit-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(base / "venv")], check=True, timeout=120)
    install = subprocess.run([str(base / "venv" / "bin" / "python"), *pip[1:], "install", str(wheel)],
                             check=False, capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    workdir.mkdir()
    _copy_sources(stages[-1], workdir, only="examples/")
    return ImageLike(wheel, base / "venv", workdir)


def test_the_wheel_holds_the_package_and_its_console_script(image_like: ImageLike) -> None:
    with zipfile.ZipFile(image_like.wheel) as whl:
        names = whl.namelist()
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = whl.read(entry_points).decode()
    tops = {name.split("/")[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"jobkit"}  # no tests/, examples/
    assert "jobkit/py.typed" in names and "jobkit/cli.py" in names
    assert "jobkit/demo.py" in names  # the default app: an installed jobkit works anywhere
    assert re.search(r"^jobkit\s*=\s*jobkit\.cli:main$", scripts, re.MULTILINE)


@pytest.mark.parametrize(("command", "expected"), [
    ([], ["usage: jobkit", "worker", "manager"]),
    (["worker"], ["--grace", "--pool", "--concurrency", "--env-file"]),
    (["api"], ["--port", "--processes", "--env-file"]),
    (["manager"], ["--port", "--threads", "--env-file"]),
])
def test_entry_point_commands_answer_help(image_like: ImageLike, command: list[str],
                                          expected: list[str]) -> None:
    done = image_like.run("jobkit", *command, "--help")
    assert done.returncode == 0, done.stderr
    for text in expected:
        assert text in done.stdout


def test_the_images_entrypoint_and_cmd_run(image_like: ImageLike) -> None:
    final = final_stage()
    argv = exec_form(final.last("ENTRYPOINT") or "") + exec_form(final.last("CMD") or "")
    done = image_like.run(*argv, "--help")
    assert done.returncode == 0 and "Serve the HTTP API" in done.stdout, done.stderr


def test_the_default_app_loads_from_the_workdir_with_the_installed_package(image_like: ImageLike) -> None:
    probe = ("import jobkit; from jobkit.cli import load_app; from jobkit.config import Settings; "
             "print(jobkit.__file__); print(sorted(load_app(Settings.from_env().app).tasks))")
    done = image_like.run("python", "-c", probe)
    assert done.returncode == 0, done.stderr
    package_file, tasks = done.stdout.splitlines()
    assert Path(package_file).is_relative_to(image_like.venv), "imported jobkit from the source tree"
    assert "'hash_payload'" in tasks


@pytest.mark.e2e
def test_the_installed_worker_runs_the_seed_job_and_stops_on_sigterm(
        image_like: ImageLike, tmp_path: Path) -> None:
    """The stack's wiring on one machine: settings from an env file, a process-pool
    worker from the installed package, the seed's job, a graceful SIGTERM."""
    if shutil.which("beanstalkd") is None:
        missing("beanstalkd is not installed (apt-get install beanstalkd)")
    env_file = tmp_path / "jobkit_env"
    with Beanstalkd(binlog_dir=tmp_path / "binlog", fsync_ms=0) as server:
        env_file.write_text(f"JOBKIT_BROKER_URL={server.url}\n"
                            f"JOBKIT_BACKEND_URL=sqlite:///{tmp_path / 'jobs.db'}\n")
        worker = subprocess.Popen(
            [str(image_like.venv / "bin" / "jobkit"), "worker", "--pool", "process",
             "--concurrency", "1", "--grace", "5", "--env-file", str(env_file)],
            cwd=image_like.workdir, env=image_like.env(), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        try:
            done = image_like.run("jobkit", "enqueue", "hash_payload", '{"example":"data"}',
                                  "--wait", "30", "--env-file", str(env_file))
            assert done.returncode == 0, done.stderr
            job_id, result = done.stdout.splitlines()
            assert job_id.strip()
            assert '"hash": "09ee943c4fa33cd5a355eb7a4e38f7ef"' in result
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=30) == 0
        finally:
            if worker.poll() is None:
                worker.kill()
            output = worker.communicate()[0]
    assert "SIGTERM" in output


@pytest.mark.e2e
def test_the_installed_wheel_runs_the_readme_in_an_empty_directory(image_like: ImageLike,
                                                                  tmp_path: Path) -> None:
    """A newcomer's own project: no clone, no examples/, no settings but a free broker port."""
    if shutil.which("beanstalkd") is None:
        missing("beanstalkd is not installed (apt-get install beanstalkd)")
    empty = tmp_path / "project"
    empty.mkdir()
    port, broker = free_port(), {"JOBKIT_BROKER_URL": f"beanstalk://127.0.0.1:{free_port()}"}
    up = subprocess.Popen([str(image_like.venv / "bin" / "jobkit"), "up", "--port", str(port)],
                          cwd=empty, env=image_like.env(**broker), stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True)
    try:
        wait_for_port(port, timeout_s=30, proc=up)
        job_id = _seed_curl_walkthrough(port)
        sent = image_like.run("jobkit", "enqueue", "hash_payload", '{"example":"data"}', cwd=empty, **broker)
        assert sent.returncode == 0, sent.stderr
        for known in (job_id, sent.stdout.strip()):
            assert _stored_result(image_like, known, empty, broker) == SEED_RESULT
        stats = image_like.run("jobkit", "stats", cwd=empty, **broker)
        assert stats.returncode == 0 and json.loads(stats.stdout)["jobs"]["succeeded"] == 2, stats.stderr
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGINT)
        output = up.communicate(timeout=60)[0]
    assert up.returncode == 0, output
    assert "beanstalkd started here" in output and "jobkit.demo:app" in output


SEED_RESULT = {"hash": "09ee943c4fa33cd5a355eb7a4e38f7ef", "payload": '{"example":"data"}'}


def _stored_result(image_like: ImageLike, job_id: str, cwd: Path, env: dict[str, str]) -> Any:
    """The result `jobkit status` prints once the job succeeded."""
    def result() -> Any:
        done = image_like.run("jobkit", "status", job_id, cwd=cwd, **env)
        return json.loads(done.stdout or "{}").get("result")

    return eventually(result, what=f"job {job_id} done")


def _seed_curl_walkthrough(port: int) -> str:
    """The seed README's two curl lines; returns the job id."""
    post = urllib.request.Request(f"http://127.0.0.1:{port}/", data=b'{"example":"data"}',
                                  headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(post, timeout=10) as resp:
        assert resp.status == 202
        job_id = str(json.loads(resp.read())["id"])

    def done() -> dict[str, Any] | None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/{job_id}/", timeout=10) as resp:
            body: dict[str, Any] = json.loads(resp.read())
        return body if "hash" in body else None

    assert eventually(done, what="the seed job done") == {"_id": job_id, **SEED_RESULT}
    return job_id
