"""Integration: deploy/terraform validated by terraform itself (`init` with a local mirror of the AWS
provider, then `validate`), offline. With the provider's plugin, not a service, but seconds of
work: the static checks of the same files are tests/unit/test_deploy_static.py."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ingest import config

TERRAFORM = config.REPO_ROOT / "deploy" / "terraform"


def provider_mirror() -> Path | None:
    """A local copy of the AWS provider (TF_PLUGIN_MIRROR, or /opt/tf-plugins): validate needs one offline."""
    for candidate in (os.environ.get("TF_PLUGIN_MIRROR"), "/opt/tf-plugins"):
        if candidate and (Path(candidate) / "registry.terraform.io" / "hashicorp" / "aws").is_dir():
            return Path(candidate)
    return None


@pytest.mark.skipif(
    shutil.which("terraform") is None or provider_mirror() is None,
    reason="terraform validate needs terraform and a local mirror of the AWS provider (TF_PLUGIN_MIRROR)",
)
def test_terraform_validate(tmp_path):
    workdir = tmp_path / "terraform"
    shutil.copytree(TERRAFORM, workdir)
    cli_config = tmp_path / "terraform.rc"
    cli_config.write_text(
        f'provider_installation {{\n  filesystem_mirror {{\n    path = "{provider_mirror()}"\n  }}\n}}\n'
    )
    env = {**os.environ, "TF_CLI_CONFIG_FILE": str(cli_config), "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
    for args in (["init", "-backend=false", "-input=false", "-no-color"], ["validate", "-no-color"]):
        out = subprocess.run(["terraform", *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"terraform {args[0]}:\n{out.stdout}\n{out.stderr}"
