"""Unit: how the transform service derives its parse and its later builds from the user's dbt args."""

from __future__ import annotations

import pytest

from ingest.transform import runner


@pytest.mark.parametrize(
    ("args", "parse"),
    [
        (["build"], ["parse"]),
        (["build", "--warn-error", "--select", "user_logins"], ["parse"]),
        (["build", "--quiet", "--select", "x"], ["parse", "--quiet"]),
        (["build", "--vars", "{loginvault_test_scope: all}"], ["parse", "--vars", "{loginvault_test_scope: all}"]),
        (["test", "--target=prod", "-t", "ci", "--select", "x"], ["parse", "--target=prod", "-t", "ci"]),
        (
            ["run", "--profiles-dir", "/p", "--project-dir", "/d"],
            ["parse", "--profiles-dir", "/p", "--project-dir", "/d"],
        ),
    ],
)
def test_parse_takes_the_flags_that_shape_the_manifest(args, parse):
    assert runner._parse_args(args) == parse


@pytest.mark.parametrize(
    ("args", "later"),
    [
        (["build"], ["build", "--exclude-resource-type", "unit_test"]),
        (["build", "--warn-error"], ["build", "--warn-error", "--exclude-resource-type", "unit_test"]),
        (["build", "--resource-type", "model"], ["build", "--resource-type", "model"]),
        (["build", "--exclude-resource-type=test"], ["build", "--exclude-resource-type=test"]),
        (["test", "--select", "x"], ["test", "--select", "x", "--exclude-resource-type", "unit_test"]),
        (["run", "--select", "x"], ["run", "--select", "x"]),
    ],
)
def test_later_builds_leave_out_unit_tests_unless_the_user_chose(args, later):
    assert runner.without_unit_tests(args) == later
