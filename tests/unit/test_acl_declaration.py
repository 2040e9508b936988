"""Unit: the privileges declaration (ingest/schema/sql/acl.toml) and the comparison of `loginvault check`,
on rows as the catalogs give them; no database."""

from __future__ import annotations

from ingest import config
from ingest.schema import acl

OWNERS = ("loginvault_owner", "loginvault_recovery", "loginvault_eraser", "loginvault_key_admin")


def test_the_declaration_names_known_roles_only():
    declaration = acl.load()
    roles = {*config.WORKLOADS, *OWNERS, "PUBLIC", "pg_database_owner", acl.ADMIN}
    assert set(declaration.workload_roles) == set(config.WORKLOADS)
    assert set(declaration.memberships) == {*config.WORKLOADS, *OWNERS}
    for kind, objects in declaration.objects.items():
        for name, spec in objects.items():
            assert spec["owner"] in roles, (kind, name)
            for privilege, grantees in spec.items():
                if privilege.isupper():
                    assert set(grantees) <= roles, (kind, name, privilege)


def test_the_mart_schema_is_named_and_adds_to_public_when_it_is_public():
    public = acl.load(mart_schema="public").objects["schemas"]["public"]
    assert public["owner"] == "pg_database_owner"
    assert "loginvault_analyst" in public["USAGE"] and "PUBLIC" in public["USAGE"]
    analytics = acl.load(mart_schema="analytics").objects
    assert analytics["schemas"]["public"]["USAGE"] == ["PUBLIC"]
    assert analytics["schemas"]["analytics"]["owner"] == acl.ADMIN
    assert "analytics.user_logins" in analytics["relations"]


def test_objects_compare_in_both_directions_with_patterns_and_dbt_built_ones():
    declared = {
        "raw.t": {"owner": "o", "SELECT": ["a"]},
        "raw.t_p*": {"owner": "o"},
        "raw.gone": {"owner": "o"},
        "staging.later": {"owner": "o", "built_by": "dbt"},
    }
    held = {
        ("raw.t", "o", "a", "SELECT"),
        ("raw.t", "o", "b", "SELECT"),
        ("raw.t_p20260101", "x", None, None),
        ("raw.stray", "o", None, None),
    }
    assert acl.compare_objects("relations", held, declared, admin="adm") == [
        "relation raw.stray: exists, but is not declared",
        "relation raw.t: SELECT to b is granted, but not declared",
        "relation raw.t_p20260101: owned by x, declared owner o",
        "relation raw.gone: declared, but does not exist",
    ]


def test_memberships_one_workload_role_per_login_no_admin_option_no_undeclared_group():
    declaration = acl.load()
    rows = [
        ("loginvault_loader", "lv_ingest", True, False, False),
        ("loginvault_analyst", "lv_analyst", True, True, False),
        ("loginvault_analyst", "lv_both", True, False, False),
        ("loginvault_eraser", "lv_both", True, False, False),
        ("loginvault_owner", "loginvault_transformer", False, False, False),
        ("loginvault_owner", "admin", True, True, True),  # a superuser holds everything anyway
    ]
    assert acl.compare_memberships(rows, declaration) == [
        "login lv_analyst: a member of loginvault_analyst WITH ADMIN OPTION",
        "role loginvault_transformer: a member of loginvault_owner, but not declared",
        "login lv_both: a member of loginvault_analyst, loginvault_eraser; a login is a member of one workload role",
    ]


def test_the_one_role_setting_allowed_is_the_bootstraps_row_security_off_on_a_reading_login():
    # (role, in this database only, setting name, is row_security=off, a login not of the transformer)
    rows = [
        ("loginvault_analyst_1", False, "row_security", True, True),  # the bootstrap's
        ("loginvault_analyst_1", True, "row_security", True, True),  # in one database: not the bootstrap's
        ("loginvault_dbt", False, "row_security", True, False),  # the transformer's login
        ("loginvault_transformer", False, "row_security", True, False),  # a group role
        ("loginvault_dbt", False, "search_path", False, False),
        ("loginvault_analyst_1", False, "row_security", False, True),  # row_security=on
    ]
    assert acl.compare_role_settings(rows) == [
        "role loginvault_analyst_1: setting row_security in this database is held, but not allowed"
        " (ALTER ROLE … RESET row_security)",
        "role loginvault_dbt: setting row_security is held, but not allowed (ALTER ROLE … RESET row_security)",
        "role loginvault_transformer: setting row_security is held, but not allowed (ALTER ROLE … RESET row_security)",
        "role loginvault_dbt: setting search_path is held, but not allowed (ALTER ROLE … RESET search_path)",
        "role loginvault_analyst_1: setting row_security is held, but not allowed (ALTER ROLE … RESET row_security)",
    ]
