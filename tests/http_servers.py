"""Real HTTP servers for the app tests: both apps under uvicorn, as users start them.

Several workers as ``./scripts/run [--app django] --workers N`` starts them
(``examples.serve``); Django under hypercorn too, for ``Lifespan``'s process guard.

Each server is a subprocess on a free loopback port, configured only
through its environment, as in production: ``MONGODB_URL`` points at the
session's seeded MongoDB (``homepage_mongo``), the flash-sale clock is
pinned to the seed's "now", ``BATCHPAGE_EXAMPLE_FAULTS`` makes a second
pair of servers misbehave, and a third pair has the demo page's run-time
fault switch (``BATCHPAGE_DEMO_FAULTS=1``). Servers of a pair start concurrently; a fixture
waits until each answers ``/rollout``, and stops them (SIGTERM, then
SIGKILL) at the end of the session. Tests speak HTTP to them with httpx.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

import httpx
import pytest

from redis_server import RedisServer, free_port

if TYPE_CHECKING:  # imported at run time by conftest's pytest_plugins, after this module
    from mongo_server import SeededMongo

ROOT: Final = Path(__file__).resolve().parent.parent
HOST: Final = "127.0.0.1"
START_TIMEOUT: Final = 60.0
STOP_TIMEOUT: Final = 10.0

Framework = Literal["fastapi", "django"]
FRAMEWORKS: Final[tuple[Framework, ...]] = ("fastapi", "django")

#: The faults of the misbehaving pair: one section fails, one hangs, one is slow.
FAULTS: Final = "featuredStores=error,flashSales=hang,featuredEvents=delay:400ms"
#: The rollout percentage of every test server.
ROLLOUT_PERCENT: Final = 50.0
ROLLOUT_SALT: Final = "homepage-batch"  # the service's default

# Anything the developer's shell sets for the apps must not leak into the tests.
_APP_VARIABLES = ("MONGODB_URL", "REDIS_URL", "ROLLOUT_PERCENT", "DJANGO_SETTINGS_MODULE")


#: A line of uvicorn's access log: ``... - "GET /homepage?limit=2 HTTP/1.1" 200 OK``.
_ACCESS_LINE = re.compile(r'"([A-Z]+) (\S+) HTTP/[0-9.]+" ([0-9]{3})')


def command(
    framework: Framework,
    port: int,
    *,
    workers: int = 1,
    access_log: bool = False,
    server: Literal["uvicorn", "hypercorn"] = "uvicorn",
) -> list[str]:
    """The server command line, as a user would type it.

    ``access_log`` (uvicorn only) logs every request the server answers, for
    :meth:`AppServer.requests`. ``server="hypercorn"`` runs the Django app
    under hypercorn instead, whose workers need ``Lifespan``'s process guard.
    """
    if framework == "django" and server == "hypercorn":
        return [
            sys.executable,
            "-m",
            "hypercorn",
            "examples.django_app.asgi:application",
            "--bind",
            f"{HOST}:{port}",
            "--log-level",
            "WARNING",
            *(["--workers", str(workers)] if workers > 1 else []),
        ]
    if workers > 1:
        # As ./scripts/run [--app django] --workers N starts them: examples.serve
        # sets the TCP_NODELAY that uvicorn's own --workers socket lacks (without
        # it a keep-alive request waits ~40 ms for a delayed ACK).
        serve = [sys.executable, "-m", "examples.serve", "--app", framework]
        return [*serve, "--host", HOST, "--port", str(port), "--workers", str(workers)]
    target = (
        ["examples.fastapi_app.app:create_app", "--factory"]
        if framework == "fastapi"
        else ["examples.django_app.asgi:application"]
    )
    logging = ["--log-level", "info"] if access_log else ["--log-level", "warning"]
    return [
        sys.executable,
        "-m",
        "uvicorn",
        *target,
        "--host",
        HOST,
        "--port",
        str(port),
        *logging,
        *([] if access_log else ["--no-access-log"]),
    ]


def sign_in(client: httpx.Client, user: str | None) -> None:
    """Sign ``client`` in as ``user`` (its cookie jar keeps the session), or out for ``None``."""
    if user is None:
        response = client.delete("/session")
    else:
        response = client.post("/session", json={"userId": user})
    assert response.status_code == 200, response.text
    assert response.json() == {"userId": user}


def app_environment(mongo: SeededMongo, **extra: str) -> dict[str, str]:
    """The environment of a test server: the seeded database, no seeding, a pinned clock."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _APP_VARIABLES and not k.startswith("BATCHPAGE_")
    }
    env.update(
        MONGODB_URL=mongo.url,
        BATCHPAGE_DB=mongo.db_name,
        BATCHPAGE_SEED="0",
        BATCHPAGE_EXAMPLE_NOW=mongo.now.isoformat(),
        ROLLOUT_PERCENT=str(ROLLOUT_PERCENT),
        PYTHONUNBUFFERED="1",
        # One signing key for every worker and server of a test: a sign-in holds on all.
        BATCHPAGE_SESSION_SECRET="test-session-secret",
    )
    env.update(extra)
    return env


class AppServer:
    """One app in a server subprocess on a loopback port."""

    def __init__(
        self,
        framework: Framework,
        env: Mapping[str, str],
        log_dir: Path,
        *,
        label: str,
        workers: int = 1,
        access_log: bool = False,
    ) -> None:
        if access_log and framework != "fastapi":
            raise ValueError("the access log is uvicorn's: the FastAPI app only")
        self.framework = framework
        self.workers = workers
        self.access_log = access_log
        self.label = label
        self.env = dict(env)
        self.log_path = log_dir / f"{label}.log"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10.0)

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command(
                    self.framework, self.port, workers=self.workers, access_log=self.access_log
                ),
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches pytest; stop() ends the server
            )

    def wait_until_ready(self, deadline: float) -> None:
        process = self.process
        assert process is not None
        with httpx.Client(base_url=self.url, timeout=1.0) as client:
            while True:
                if process.poll() is not None:
                    pytest.fail(
                        f"{self.label} exited with status {process.returncode}:\n{self.log_tail()}",
                        pytrace=False,
                    )
                try:
                    if client.get("/rollout").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"{self.label} did not answer within {START_TIMEOUT:g} s:\n"
                        f"{self.log_tail()}",
                        pytrace=False,
                    )
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM (a graceful shutdown runs the lifespan's exit), then SIGKILL."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def requests(self) -> list[tuple[str, str, int]]:
        """Every request the server answered so far, as ``(method, target, status)``.

        Needs ``access_log=True``. uvicorn logs a request as it starts the
        response, so one whose answer a client has received is in the list.
        """
        if not self.access_log:
            raise RuntimeError(f"{self.label} runs without an access log")
        text = self.log_path.read_text(errors="replace")
        return [
            (m[1], m[2], int(m[3]))
            for line in text.splitlines()
            if (m := _ACCESS_LINE.search(line)) is not None
        ]

    def __repr__(self) -> str:
        return f"AppServer({self.label!r}, url={self.url!r})"


@contextmanager
def running_servers(servers: list[AppServer]) -> Iterator[dict[str, AppServer]]:
    """Start the servers together, wait until all answer; stop them all afterwards."""
    with ExitStack() as stack:
        for server in servers:
            stack.callback(server.stop)
            server.start()
        deadline = time.monotonic() + START_TIMEOUT
        for server in servers:
            server.wait_until_ready(deadline)
        yield {server.label: server for server in servers}


def pair(mongo: SeededMongo, log_dir: Path, *, suffix: str = "", **extra: str) -> list[AppServer]:
    """The FastAPI and the Django app on the same database and settings."""
    env = app_environment(mongo, **extra)
    return [AppServer(f, env, log_dir, label=f + suffix) for f in FRAMEWORKS]


# -- fixtures (imported by conftest.py) -----------------------------------------


@pytest.fixture(scope="session")
def http_apps(
    homepage_mongo: SeededMongo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, AppServer]]:
    """Both apps, healthy, on the session's seeded MongoDB: ``{"fastapi": ..., "django": ...}``."""
    with running_servers(pair(homepage_mongo, tmp_path_factory.mktemp("apps"))) as servers:
        yield servers


@pytest.fixture(scope="session")
def faulty_http_apps(
    homepage_mongo: SeededMongo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, AppServer]]:
    """Both apps with :data:`FAULTS` injected: ``{"fastapi": ..., "django": ...}``."""
    servers = pair(
        homepage_mongo,
        tmp_path_factory.mktemp("faulty-apps"),
        suffix="-faulty",
        BATCHPAGE_EXAMPLE_FAULTS=FAULTS,
    )
    with running_servers(servers) as running:
        yield {s.framework: s for s in running.values()}


@pytest.fixture(scope="session")
def demo_http_apps(
    homepage_mongo: SeededMongo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, AppServer]]:
    """Both apps with the demo's fault switch on (``/demo/faults``): ``{"fastapi": ..., ...}``.

    The switch is per server and outlives a test: a test that breaks a
    section mends it (:func:`mend_all`).
    """
    servers = pair(
        homepage_mongo,
        tmp_path_factory.mktemp("demo-apps"),
        suffix="-demo",
        BATCHPAGE_DEMO_FAULTS="1",
    )
    with running_servers(servers) as running:
        yield {s.framework: s for s in running.values()}


@pytest.fixture(params=FRAMEWORKS)
def demo_app(
    request: pytest.FixtureRequest, demo_http_apps: dict[str, AppServer]
) -> Iterator[AppServer]:
    """One demo server, every fault mended before and after the test (FastAPI, then Django)."""
    server = demo_http_apps[request.param]
    mend_all(server)
    yield server
    mend_all(server)


def mend_all(server: AppServer) -> None:
    """Switch every fault of a demo server off."""
    with server.client() as client:
        faults = client.get("/demo/faults").json()["faults"]
        for section in faults:
            response = client.post("/demo/faults", json={"section": section, "fault": "none"})
            assert response.status_code == 200, response.text


@pytest.fixture(scope="session")
def redis_http_app(
    homepage_mongo: SeededMongo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[AppServer, RedisServer]]:
    """The FastAPI app with ``REDIS_URL``: Redis cache layer and rollout key polled fast."""
    redis_server = RedisServer(tmp_path_factory.mktemp("apps-redis"))
    redis_server.start()
    try:
        env = app_environment(
            homepage_mongo, REDIS_URL=redis_server.url, BATCHPAGE_ROLLOUT_POLL="0.1"
        )
        server = AppServer("fastapi", env, tmp_path_factory.mktemp("redis-app"), label="redis")
        with running_servers([server]):
            yield server, redis_server
    finally:
        redis_server.stop()
