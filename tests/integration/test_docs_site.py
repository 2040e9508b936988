"""The dbt docs site, as analysts browse it: `make docs`'s static page rendered by headless
Chromium (Debian's package) shows the user_logins model with its column descriptions."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from conftest import make_tmp_dir, new_job

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run installs Debian's chromium package")
        pytest.skip("chromium is not installed (apt-get install chromium); CI runs this test")
    return found


def render(page: str, fragment: str) -> str:
    """The page's DOM after its scripts ran (the docs site is a single-page app)."""
    profile = make_tmp_dir("loginvault-test-chromium-")
    try:
        out = subprocess.run(
            [
                chromium(),
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--virtual-time-budget=20000",
                "--dump-dom",
                f"file://{page}{fragment}",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_docs_site_shows_user_logins_and_its_columns(pg_cluster, template_db, moto_server, tmp_path):
    job = new_job(pg_cluster, template_db, moto_server, "docs")
    job.run("seed", "--count", "10")
    job.run("run", "--wait-time", "1")
    job.transform()
    out = job.transform("docs", "generate", "--static")
    page = job.dbt_dir / "target" / "static_index.html"
    assert page.exists(), out.stdout

    dom = render(str(page), "#!/model/model.loginvault.user_logins")
    assert "user_logins" in dom
    for column in ("user_id", "masked_ip", "masked_device_id", "app_version", "create_date", "app_version_text"):
        assert column in dom, column
    assert "Token of the IP address" in dom  # a column description, from _marts__models.yml
    assert "One row per valid login message" in dom  # the model description
    # The catalog came from the database: the exact types are shown.
    assert "character varying(256)" in dom or "varchar(256)" in dom
