"""A throwaway scale-out deployment on one machine, from deploy/dagster.yaml: PostgreSQL, Redis, one
code server, the webserver, the daemon and N Celery workers, on free ports in a private folder.

The service tests and bench/orchestration/ use it; it is also the quickest way to try the scale
profile. PostgreSQL's initdb/pg_ctl refuse to run as root, so as root they run as `postgres`
(`runuser`). Every process is stopped (by its pid) when the sandbox closes. With `password`, Redis
(`requirepass`) and PostgreSQL (scram-sha-256) ask for it, as a production deployment's do.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

import yaml

from synground_assets.config import settings

REPO = Path(__file__).resolve().parents[2]


def _postgres_bin() -> Path:
    """$SYNGROUND_PG_BIN, else the newest Debian-packaged PostgreSQL (/usr/lib/postgresql/<major>/bin)."""
    if settings.pg_bin():
        return Path(settings.pg_bin())
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0
    )
    return versions[-1] if versions else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _postgres_bin()
BIN = Path(sys.executable).parent


LOCATION_STATUS = """
{ workspaceOrError { ... on Workspace { locationEntries { loadStatus locationOrLoadError { __typename } } } } }
"""


class SandboxError(RuntimeError):
    """A service did not start; the message says which and where its log is."""


def missing_services() -> list[str]:
    """What this machine lacks to run a sandbox (empty: everything is there)."""
    missing = [str(PG_BIN / tool) for tool in ("initdb", "pg_ctl") if not (PG_BIN / tool).exists()]
    missing += [tool for tool in ("redis-server",) if not shutil.which(tool)]
    try:
        import dagster_celery  # noqa: F401
        import dagster_postgres  # noqa: F401
    except ImportError as exc:
        missing.append(f"{exc.name} (pip install -e '.[scale]')")
    return missing


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check, what: str, log: Path | None, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise SandboxError(f"{what} did not come up within {timeout_s:.0f} s; log {log}:\n{tail}")


def port_open(port: int) -> bool:
    with closing(socket.socket()) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


# What a process outside the sandbox needs to reach its instance (storage and run launcher).
CLIENT_ENV = ("DAGSTER_HOME", "DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD",
              "DAGSTER_PG_DB", "SYNGROUND_CELERY_BROKER")


def wait_for_runs(instance, filters, count: int, timeout_s: float = 150, poll_s: float = 1.0) -> list:
    """The runs matching `filters` (a `dg.RunsFilter`) once there are `count` and all have finished,
    whatever their status."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = instance.get_runs(filters=filters)
        if len(runs) >= count and all(run.is_finished for run in runs):
            return runs
        time.sleep(poll_s)
    raise TimeoutError(
        f"runs not finished in {timeout_s} s: {[(r.run_id, r.status) for r in instance.get_runs(filters=filters)]}"
    )


def succeeded(runs: list) -> list:
    """`runs`, all of which succeeded; else an error naming the others."""
    bad = [f"{run.run_id} {run.status.value}" for run in runs if run.status.value != "SUCCESS"]
    if bad:
        raise RuntimeError(f"runs did not succeed: {bad}")
    return runs


class Sandbox:
    """Start with `with Sandbox(env_overrides, instance_overrides) as sandbox:`; `sandbox.env` is the
    environment every process got (DAGSTER_HOME, database, broker, data root, profile)."""

    def __init__(self, env: dict[str, str] | None = None, instance: dict | None = None, password: str | None = None):
        self.password = password
        credentials = f":{password}@" if password else ""
        self.root = Path(tempfile.mkdtemp(prefix="synground-sandbox-"))
        self.root.chmod(0o755)  # PostgreSQL (another user) creates its data folder inside
        self.processes: dict[str, subprocess.Popen] = {}
        self.log_offsets: dict[str, int] = {}
        self.pg_port, self.redis_port = free_port(), free_port()
        self.code_port, self.web_port = free_port(), free_port()
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "DAGSTER_HOME": str(self.root / "dagster_home"),
            "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(self.pg_port), "DAGSTER_PG_USER": "postgres",
            "DAGSTER_PG_PASSWORD": password or "", "DAGSTER_PG_DB": "dagster",
            "SYNGROUND_CELERY_BROKER": f"redis://{credentials}127.0.0.1:{self.redis_port}/0",
            "SYNGROUND_PROFILE": "scale",
            "SYNGROUND_DATA": str(self.root / "data"), "SYNGROUND_LINEAGE": str(self.root / "data" / "lineage.duckdb"),
            "SYNGROUND_HOME": str(self.root), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            **(env or {}),
        }
        self.instance_overrides = instance or {}

    # -- services ------------------------------------------------------------------------------
    def __enter__(self) -> "Sandbox":
        try:
            self._write_instance()
            self._start_postgres()
            self.start_redis()
            self._create_schema()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start_redis(self) -> None:
        """Redis without persistence: a restart forgets every key and task state, the worst case."""
        password = ["--requirepass", self.password] if self.password else []
        self._start("redis", ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", *password])
        wait_for(lambda: port_open(self.redis_port), "redis-server", self.log("redis"))

    def redis_client(self):
        import redis

        return redis.Redis(port=self.redis_port, password=self.password)

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def _start(self, name: str, command: list[str], env: dict | None = None) -> subprocess.Popen:
        with open(self.log(name), "ab") as log:
            process = subprocess.Popen(command, cwd=self.root, env={**self.env, **(env or {})}, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        self.processes[name] = process
        return process

    def _write_instance(self) -> None:
        config = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())
        for section, values in self.instance_overrides.items():
            if values is None:  # back to Dagster's default for this section (e.g. the default run launcher)
                config.pop(section, None)
                continue
            target = config.setdefault(section, {})
            for key, value in values.items():
                if isinstance(value, dict) and isinstance(target.get(key), dict):
                    target[key].update(value)
                else:
                    target[key] = value
        home = Path(self.env["DAGSTER_HOME"])
        home.mkdir(parents=True)
        (home / "dagster.yaml").write_text(yaml.safe_dump(config))
        (self.root / "workspace.yaml").write_text(yaml.safe_dump(
            {"load_from": [{"grpc_server": {"host": "127.0.0.1", "port": self.code_port,
                                            "location_name": "synground_assets"}}]}))

    def _as_postgres(self, command: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command

    def _start_postgres(self) -> None:
        data = self.root / "pgdata"
        data.mkdir()
        if os.geteuid() == 0:
            shutil.chown(data, "postgres", "postgres")
        auth = ["-A", "trust"]
        if self.password:
            pwfile = self.root / "pgpassword"
            pwfile.write_text(self.password)
            pwfile.chmod(0o644)  # read by initdb as `postgres`; the sandbox's folder is private to its tests
            auth = ["-A", "scram-sha-256", "--pwfile", str(pwfile)]
        subprocess.run(self._as_postgres([str(PG_BIN / "initdb"), "-D", str(data), *auth, "-U", "postgres",
                                          "--no-sync"]), check=True, capture_output=True, cwd="/")
        self.pg_data = data
        self._pg_ctl_start()

    def _pg_ctl_start(self) -> None:
        # The server's output goes to its log (-l): a pipe held open by it would keep `run` waiting.
        data = self.pg_data
        options = f"-p {self.pg_port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        subprocess.run(self._as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l",
                                          str(data / "server.log"), "-w", "start"]), check=True, capture_output=True,
                       cwd="/")

    def stop_postgres(self) -> None:
        """Stop PostgreSQL (every connection to it dies); `start_postgres` starts it on the same port."""
        subprocess.run(self._as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.pg_data), "-m", "fast", "-w",
                                          "stop"]), check=True, capture_output=True, cwd="/")

    def start_postgres(self) -> None:
        self._pg_ctl_start()

    def restart_postgres(self) -> None:
        """Stop PostgreSQL and start it again on the same port."""
        self.stop_postgres()
        self._pg_ctl_start()

    def _create_schema(self) -> None:
        import psycopg2

        with closing(psycopg2.connect(host="127.0.0.1", port=self.pg_port, user="postgres", dbname="postgres",
                                      password=self.password)) as conn:
            conn.autocommit = True
            conn.cursor().execute("CREATE DATABASE dagster")
        # One process creates Dagster's tables before the others connect (concurrent creation races).
        subprocess.run([str(BIN / "python"), "-c", "import dagster; dagster.DagsterInstance.get().get_runs(limit=1)"],
                       env=self.env, check=True, capture_output=True)

    def start(self, workers: dict[str, str]) -> None:
        """The code server, the webserver and one Celery worker per (name, CUDA_VISIBLE_DEVICES),
        started together (their imports overlap) and waited for; the daemon: `start_daemon`."""
        self._start("code_server", [str(BIN / "dagster"), "code-server", "start", "-h", "127.0.0.1", "-p",
                                    str(self.code_port), "-m", "synground_assets.definitions",
                                    "--location-name", "synground_assets"])
        self._start("webserver", [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(self.web_port),
                                  "-w", str(self.root / "workspace.yaml")])
        self.workers = {name: self.start_worker(name, devices, wait=False) for name, devices in workers.items()}
        wait_for(lambda: port_open(self.code_port), "the code server", self.log("code_server"), 180)
        wait_for(lambda: port_open(self.web_port), "dagster-webserver", self.log("webserver"), 180)
        for name in workers:
            self.wait_for_worker(name)
        wait_for(self._location_loaded, "the code location in the webserver", self.log("webserver"), 180)

    def _location_loaded(self) -> bool:
        from synground_assets.ops.scale.backfill import http_post

        answer = http_post(self.url)(LOCATION_STATUS, {})["workspaceOrError"]
        return any(
            entry["loadStatus"] == "LOADED" and entry["locationOrLoadError"]["__typename"] == "RepositoryLocation"
            for entry in answer.get("locationEntries", [])
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start_daemon(self) -> None:
        if "daemon" not in self.processes:
            self._start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(self.root / "workspace.yaml")])

    def start_worker(self, name: str, cuda_visible_devices: str, queues: str = "gpu,cpu",
                     wait: bool = True) -> subprocess.Popen:
        """A Celery worker as deploy/worker.sh starts one (and waits until it is ready for tasks)."""
        log = self.log(name)
        self.log_offsets[name] = log.stat().st_size if log.exists() else 0  # a restarted worker appends
        process = self._start(name, [str(BIN / "celery"), "-A", "synground_assets.ops.scale.worker", "worker",
                                     "--pool=solo", "--concurrency=1", "-Q", queues, "-n", f"{name}@%h",
                                     "--without-gossip", "--without-mingle", "--loglevel=INFO"],
                              env={"CUDA_VISIBLE_DEVICES": cuda_visible_devices})
        if wait:
            self.wait_for_worker(name)
        return process

    def wait_for_worker(self, name: str) -> None:
        process, offset = self.processes[name], self.log_offsets.get(name, 0)

        def ready() -> bool:
            with open(self.log(name), "rb") as log:
                log.seek(offset)
                return b"ready." in log.read() or process.poll() is not None

        wait_for(ready, f"celery worker {name}", self.log(name), 180)
        if process.poll() is not None:
            raise SandboxError(f"celery worker {name} exited: {self.log(name).read_text()[-3000:]}")

    def ensure_workers(self, workers: dict[str, str]) -> None:
        """Start again each of `workers` (name -> CUDA_VISIBLE_DEVICES) that a test killed."""
        for name, devices in workers.items():
            if name not in self.workers or self.workers[name].poll() is not None:
                self.workers[name] = self.start_worker(name, devices)

    def send_signal(self, name: str, sig: int) -> None:
        """Send `sig` to a service's process group (SIGSTOP freezes it, as a VM pause would; SIGCONT resumes)."""
        os.killpg(self.processes[name].pid, sig)

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        process = self.processes.pop(name, None)
        if process and process.poll() is None:
            os.killpg(process.pid, sig)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def close(self) -> None:
        for process in self.processes.values():  # all asked to stop at once, then waited for
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGCONT)  # a frozen one would not hear SIGTERM
                os.killpg(process.pid, signal.SIGTERM)
        for name in list(self.processes)[::-1]:
            self.stop(name)
        if getattr(self, "pg_data", None):
            subprocess.run(self._as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.pg_data), "-m", "immediate",
                                              "stop"]), capture_output=True, cwd="/")
        if not settings.sandbox_keep():  # keep the logs to look into a failure
            shutil.rmtree(self.root, ignore_errors=True)
