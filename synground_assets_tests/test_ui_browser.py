"""The web UI as its users see it: `dagster dev` on a fresh instance, driven by headless Chromium.

Needs Chromium and its driver (Debian: `apt-get install chromium chromium-driver`; `.ci/run`
installs them); skipped, with the reason, only where the browser or its driver cannot be found.
Screenshots go to `$SYNGROUND_ARTIFACTS` (default `artifacts/ui-screenshots/`), printed at the start.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from synground_assets.config.recipes import recipe_book
from synground_assets.definitions import defs
from synground_assets.devtools.browser import DRIVER, browser_paths, headless_chrome

REPO = Path(__file__).resolve().parents[1]
SHARD = "shapes|00000"
STARTUP_S, RUN_S, PAGE_S = 180, 180, 30


def find_browser() -> tuple[str, str]:
    browser, driver = browser_paths()
    if not (browser and driver):
        pytest.skip(f"no headless browser: found browser={browser}, {DRIVER}={driver}; "
                    "install them with `apt-get install -y chromium chromium-driver`")
    return browser, driver


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """A `dagster dev` process (webserver, daemon, code server) and its GraphQL endpoint."""

    def __init__(self, home: Path):
        self.port, self.home = free_port(), home
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home / "dagster-dev.log"
        self.shard_run_id = ""
        dagster_home = home / "dagster_home"
        dagster_home.mkdir()
        shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
        env = {k: v for k, v in os.environ.items() if k not in ("SYNGROUND_DATA", "SYNGROUND_LINEAGE")}
        env.update(DAGSTER_HOME=str(dagster_home), SYNGROUND_HOME=str(home), HF_HUB_OFFLINE="1")
        dagster = Path(sys.executable).with_name("dagster")
        command = [str(dagster), "dev", "-h", "127.0.0.1", "-p", str(self.port), "-w", "workspace.yaml"]
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        request = urllib.request.Request(f"{self.url}/graphql", headers={"Content-Type": "application/json"},
                                         data=json.dumps({"query": query, "variables": variables or {}}).encode())
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
        assert "errors" not in answer, answer["errors"]
        return answer["data"]

    def wait_until_loaded(self) -> None:
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"dagster dev exited:\n{self.log_tail()}"
            try:
                entries = self.graphql(LOCATIONS)["workspaceOrError"]["locationEntries"]
                if entries and entries[0]["loadStatus"] == "LOADED":
                    assert entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation", entries
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(1)
        raise AssertionError(f"the code location did not load in {STARTUP_S} s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return self.log.read_text()[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # code server and run workers left behind
        except ProcessLookupError:
            pass


LOCATIONS = """{ workspaceOrError { ... on Workspace { locationEntries {
    name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
LAUNCH_RUN = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) { __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } } } }"""
RUN_STATUS = "query($id: ID!) { runOrError(runId: $id) { ... on Run { status tags { key value } } } }"


@pytest.fixture(scope="module")
def screenshots(pytestconfig) -> Path:
    folder = Path(os.environ.get("SYNGROUND_ARTIFACTS") or REPO / "artifacts" / "ui-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    with pytestconfig.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
        print(f"\nUI screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`dagster dev` on a fresh instance; the shard's run is launched as soon as the code location
    loads, so it works while the first pages are checked."""
    ui = Server(tmp_path_factory.mktemp("ui-home"))
    try:
        ui.wait_until_loaded()
        ui.graphql("mutation { setNuxSeen }")  # else a first-visit newsletter dialog covers the pages
        ui.shard_run_id = launch_shard_run(ui)
        yield ui
    finally:
        ui.stop()


@pytest.fixture(scope="module")
def browser():
    driver, profile = headless_chrome(*find_browser())
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def launch_shard_run(server: Server) -> str:
    """One shapes shard through every generation asset, launched through the GraphQL API as the
    UI's launchpad does (in-process executor: one process for the five steps)."""
    params = {
        "selector": {"repositoryLocationName": "synground_assets", "repositoryName": "__repository__",
                     "jobName": "generation"},
        "runConfigData": {"execution": {"config": {"in_process": {}}}},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": SHARD}]},
    }
    launched = server.graphql(LAUNCH_RUN, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


@pytest.fixture(scope="module")
def materialized_shard(server) -> dict:
    """The launched run, once it has succeeded: its id and tags."""
    run_id = server.shard_run_id
    deadline = time.monotonic() + RUN_S
    while (run := server.graphql(RUN_STATUS, {"id": run_id})["runOrError"])["status"] not in (
            "SUCCESS", "FAILURE", "CANCELED"):
        assert time.monotonic() < deadline, f"run {run_id} still {run['status']} after {RUN_S} s"
        time.sleep(1)
    assert run["status"] == "SUCCESS", f"run {run_id}: {run['status']}\n{server.log_tail()}"
    return {"run_id": run_id, **{tag["key"]: tag["value"] for tag in run["tags"]}}


def open_page(driver, server: Server, path: str, *expected: str) -> str:
    """Load a UI page and wait until its text shows everything expected; returns the text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(server.url + path)
    text = ""

    def shows_all(d) -> bool:
        nonlocal text
        text = d.find_element(By.TAG_NAME, "body").text
        return all(word in text for word in expected)

    try:
        WebDriverWait(driver, PAGE_S).until(shows_all)
    except Exception as exc:  # noqa: BLE001 - report what the page showed instead
        missing = [word for word in expected if word not in text]
        raise AssertionError(f"{path} does not show {missing}; it shows:\n{text[:2000]}") from exc
    return text


def test_the_catalog_lists_every_asset_and_the_group_graph_shows_the_pipeline(browser, server, screenshots):
    names = sorted(key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys())
    assert {"concepts", "descriptions", "images", "phrases", "boxes", "exports"} <= set(names)
    book = recipe_book()
    shard_count = f"{len(book.recipes) * book.max_shards} partitions"  # shown once statuses have loaded
    open_page(browser, server, "/assets", *names, shard_count)
    browser.save_screenshot(str(screenshots / "catalog.png"))
    open_page(browser, server, "/locations/synground_assets/asset-groups/generation",
              "concepts", "descriptions", "images", "phrases", "boxes")
    browser.save_screenshot(str(screenshots / "generation-graph.png"))


def test_the_missing_shards_schedule_is_listed_with_its_job(browser, server, screenshots):
    open_page(browser, server, "/automation", "missing_shards", "At 02:00 AM UTC")
    browser.save_screenshot(str(screenshots / "automation.png"))


def test_a_shard_launched_through_the_api_shows_as_a_materialized_partition_of_boxes(
        browser, server, materialized_shard, screenshots):
    assert materialized_shard["dagster/partition"] == SHARD
    assert (server.home / "data" / "shapes" / "boxes" / "00000" / "table.parquet").is_file()
    recipes = sorted(recipe_book().recipes)
    open_page(browser, server, "/assets/boxes?view=partitions", "Materialized (1)", "00000", *recipes)
    browser.save_screenshot(str(screenshots / "boxes-partitions.png"))


def test_the_boxes_materialization_shows_its_triplet_preview(browser, server, materialized_shard, screenshots):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as visible
    from selenium.webdriver.support.ui import WebDriverWait

    open_page(browser, server, "/assets/boxes?view=events", f"Partition {SHARD} materialized", "yield", "preview")
    browser.find_element(By.XPATH, "//a[text()='[Show Markdown]']").click()
    image = WebDriverWait(browser, PAGE_S).until(
        visible.visibility_of_element_located((By.CSS_SELECTOR, "img[src^='data:image/jpeg;base64,']")))
    WebDriverWait(browser, PAGE_S).until(lambda d: int(image.get_attribute("naturalWidth") or 0) > 0)
    browser.save_screenshot(str(screenshots / "boxes-preview.png"))
    jpeg = base64.b64decode(image.get_attribute("src").split(",", 1)[1])
    with Image.open(io.BytesIO(jpeg)) as sheet:
        assert sheet.format == "JPEG" and sheet.width >= 4 * 256 and sheet.height >= 256
    assert image.size["width"] > 500  # shown large enough to read, not as an icon
