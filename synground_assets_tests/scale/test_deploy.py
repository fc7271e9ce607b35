"""The shipped deployment settings (deploy/) follow the docs' advice and their security notes."""

from pathlib import Path

REPO = Path(__file__).parents[2]


def deployment_settings() -> dict[str, str]:
    lines = (REPO / "deploy" / "scale.env").read_text().splitlines()
    pairs = [line.split("#")[0].strip().split("=", 1) for line in lines if "=" in line.split("#")[0]]
    return {key: value for key, value in pairs}


def test_the_deployment_keeps_the_index_off_the_shared_filesystem_and_binds_no_wildcard():
    """Issue 19, minor: deploy/scale.env put the index under the shared data root, against the README;
    the README's scale commands bound 0.0.0.0 with a password-less Redis."""
    settings = deployment_settings()
    shared = Path(settings["SYNGROUND_DATA"]).parent
    assert not Path(settings["SYNGROUND_LINEAGE"]).is_relative_to(shared)
    assert settings["SYNGROUND_BIND"] != "0.0.0.0"
    assert "@" in settings["SYNGROUND_CELERY_BROKER"]  # redis://:<password>@host
    docs = "\n".join(path.read_text() for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))])
    assert "-h 0.0.0.0" not in docs and "## Security" in (REPO / "docs" / "operating.md").read_text()
