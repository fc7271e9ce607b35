"""Passwords of service URLs are masked wherever they are shown (scale/urls.py, scale/celery.py);
the same with real services and their logs: test_services.py."""

import dagster as dg
import pytest

from synground_assets.ops.scale.celery import WorkerHealthUnknown
from synground_assets.ops.scale.urls import password_of, redact, safe_url


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    ("redis://default:s3cret@redis:6379/0", "redis://default:***@redis:6379/0"),
    ("postgresql+psycopg2://dagster:p%40ss@db:5432/dagster", "postgresql+psycopg2://dagster:***@db:5432/dagster"),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
])
def test_a_url_is_shown_without_its_password(url, shown):
    assert safe_url(url) == shown


def test_passwords_quoted_in_a_text_are_masked():
    text = "Cannot connect to redis://:s3cret@h:1/0 (auth s3cret); also postgresql://u:pw@db/x"
    assert redact(text, password_of("redis://:s3cret@h:1/0")) == \
        "Cannot connect to redis://:***@h:1/0 (auth ***); also postgresql://u:***@db/x"


def test_the_launchers_health_check_names_its_broker_without_the_password():
    """Issue 30, item 4: the message of every health check during a Redis outage had the password."""
    from synground_assets.ops.scale.celery import HeartbeatCeleryRunLauncher

    url = "redis://:s3cret@127.0.0.1:1/0"
    launcher = HeartbeatCeleryRunLauncher(broker=url, backend=url, default_queue="cpu")
    run = dg.DagsterRun(job_name="generation", run_id="r1", tags={"dagster-celery/task_id": "t1"})
    with pytest.raises(WorkerHealthUnknown) as raised:
        launcher.check_run_worker_health(run)  # nothing listens on port 1
    message = str(raised.value)
    assert "redis://:***@127.0.0.1:1/0 cannot be reached" in message and "s3cret" not in message
    assert raised.value.__cause__ is None  # no chained exception text to print
