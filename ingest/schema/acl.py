"""`loginvault check`: the database's privileges against those declared in ingest/schema/sql/acl.toml.

The declaration (data, beside the bootstrap that grants them) lists, for every schema loginvault
uses, the owner and the privileges of every role on the schema and on each table, view,
sequence and function in it, the database's privileges, the default privileges, and the role
memberships. The check reads the catalogs (any login may) and names each difference, in both
directions: a privilege declared but missing, one held but not declared (e.g. a GRANT made by an
owner: the transformer owns staging and could grant its cleartext to the analyst), an object
nobody declared. Objects dbt builds (`built_by = "dbt"`) may be absent before the first build.

Memberships are read from pg_auth_members for every `loginvault_%` role and every login that is a
member of one: a group role is a member of what is declared only; a login of exactly one
workload role, without ADMIN OPTION; the bootstrap's admin (who granted the roles) of none of
the workload roles' logins. The settings those roles and logins hold for their sessions: none but
the bootstrap's row_security=off on the logins that read another role's tables. Large objects
those roles own or may read: none.

Column grants are privileges too (a relation's `columns`: "PRIVILEGE (col, …) to role"), and no
privilege may be held WITH GRANT OPTION (none is declared). Last, every relation whose shape is
declared (ingest/schema/repeatable/21_shapes.sql: the ones definer functions read) is checked
against it: row-level security or a policy on a mart, say, would run its owner's code in an
analyst's session.
"""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest import LoginvaultError, config, db

if TYPE_CHECKING:
    from psycopg import Connection
    from psycopg.rows import TupleRow

# One object's declaration, as acl.toml has it: owner, built_by, columns, and PRIVILEGE = [grantees].
Spec = dict[str, Any]
# What the database holds: (object, owner, grantee, privilege); grantee None: an object without grants.
Fact = tuple[str, str, str | None, str]

DECLARATION = Path(__file__).parent / "sql" / "acl.toml"
PRIVILEGE_KINDS = ("schemas", "relations", "functions")
# The declaration's name for the analyst-facing schema, whatever LOGINVAULT_MART_SCHEMA says.
MART = "$mart"
ADMIN = "$admin"  # the bootstrap's admin: the owner of schema loginvault


class Differences(LoginvaultError):
    """The database's privileges differ from the declaration."""


@dataclass(frozen=True)
class Declaration:
    objects: dict[str, dict[str, Spec]]  # kind → name (may hold * patterns) → owner, privileges
    database: dict[str, list[str]]
    default_privileges: list[str]
    memberships: dict[str, list[str]]  # group role → the loginvault roles it is a member of
    workload_roles: list[str]

    @property
    def schemas(self) -> list[str]:
        return sorted(self.objects["schemas"])


def load(path: Path = DECLARATION, mart_schema: str = "public") -> Declaration:
    """The declaration, with the mart schema's real name in place of `$mart`."""
    data = tomllib.loads(path.read_text())

    def named(name: str) -> str:
        return mart_schema + name[len(MART) :] if name.startswith(MART) else name

    objects: dict[str, dict[str, Spec]] = {kind: {} for kind in PRIVILEGE_KINDS}
    for kind in PRIVILEGE_KINDS:
        for name, spec in data.get(kind, {}).items():
            if named(name) in objects[kind]:  # the mart schema is public: its grants add to public's
                base = objects[kind][named(name)]
                for privilege, grantees in spec.items():
                    if privilege.isupper():
                        base[privilege] = sorted({*base.get(privilege, []), *grantees})
            else:
                objects[kind][named(name)] = dict(spec)
    roles = data["roles"]
    return Declaration(
        objects=objects,
        database=data.get("database", {}),
        default_privileges=[named(d) for d in data.get("default_privileges", [])],
        memberships=roles.get("memberships", {}),
        workload_roles=roles["workloads"],
    )


# ---------------------------------------------------------------- what the database holds

_SCHEMAS = """
SELECT n.nspname, n.nspowner::regrole::text, a.grantee, a.privilege_type
FROM pg_namespace n
LEFT JOIN LATERAL aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a ON a.grantee <> n.nspowner
WHERE n.nspname = ANY(%(schemas)s)
"""
# Tables, partitioned tables, views, materialized views, sequences; not indexes or TOAST, not what
# an extension owns (pgcrypto in public), nor a session's temporary relations.
_RELATIONS = """
SELECT n.nspname || '.' || c.relname, c.relowner::regrole::text, a.grantee, a.privilege_type
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN LATERAL aclexplode(coalesce(c.relacl, acldefault(CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::"char", c.relowner))) a
    ON a.grantee <> c.relowner
WHERE n.nspname = ANY(%(schemas)s) AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
"""
_FUNCTIONS = """
SELECT p.oid::regprocedure::text, p.proowner::regrole::text, a.grantee, a.privilege_type
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
LEFT JOIN LATERAL aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a ON a.grantee <> p.proowner
WHERE n.nspname = ANY(%(schemas)s)
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
"""
_COLUMNS = """
SELECT n.nspname || '.' || c.relname, a.privilege_type, a.grantee, string_agg(t.attname, ', ' ORDER BY t.attnum)
FROM pg_attribute t JOIN pg_class c ON c.oid = t.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace,
     aclexplode(t.attacl) a
WHERE n.nspname = ANY(%(schemas)s) AND t.attnum > 0 AND NOT t.attisdropped AND t.attacl IS NOT NULL
GROUP BY 1, 2, 3
"""
# Every privilege held WITH GRANT OPTION by someone other than the object's owner.
_GRANT_OPTIONS = """
SELECT 'schema ' || n.nspname, a.privilege_type, a.grantee FROM pg_namespace n, aclexplode(n.nspacl) a
WHERE n.nspname = ANY(%(schemas)s) AND a.is_grantable AND a.grantee <> n.nspowner
UNION ALL
SELECT 'relation ' || n.nspname || '.' || c.relname, a.privilege_type, a.grantee
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
WHERE n.nspname = ANY(%(schemas)s) AND a.is_grantable AND a.grantee <> c.relowner
UNION ALL
SELECT 'column ' || n.nspname || '.' || c.relname || '.' || t.attname, a.privilege_type, a.grantee
FROM pg_attribute t JOIN pg_class c ON c.oid = t.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace,
     aclexplode(t.attacl) a
WHERE n.nspname = ANY(%(schemas)s) AND a.is_grantable AND t.attnum > 0
UNION ALL
SELECT 'function ' || p.oid::regprocedure::text, a.privilege_type, a.grantee
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace, aclexplode(p.proacl) a
WHERE n.nspname = ANY(%(schemas)s) AND a.is_grantable AND a.grantee <> p.proowner
"""
# The declared shapes (what definer functions read): each relation, and each of its partitions.
_SHAPES = """
SELECT p.object, p.problem
FROM loginvault.declared_relations d CROSS JOIN LATERAL loginvault.relation_problem(d.relation) p
"""
_DATABASE = """
SELECT a.grantee, a.privilege_type
FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
WHERE d.datname = current_database() AND a.grantee <> d.datdba
"""
_DEFAULT_PRIVILEGES = """
SELECT d.defaclrole::regrole::text, coalesce(n.nspname, 'every schema'), d.defaclobjtype::text, a.privilege_type, a.grantee
FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace, aclexplode(d.defaclacl) a
"""
# Every membership that involves a loginvault role, with whether the member logs in and
# whether it was granted WITH ADMIN OPTION.
_MEMBERSHIPS = """
SELECT g.rolname, m.rolname, m.rolcanlogin, am.admin_option, m.rolsuper
FROM pg_auth_members am JOIN pg_roles g ON g.oid = am.roleid JOIN pg_roles m ON m.oid = am.member
WHERE g.rolname LIKE 'loginvault\\_%%' OR m.rolname LIKE 'loginvault\\_%%'
"""

# Role r (of pg_roles) is a loginvault role, or a login that is a member of one (a condition
# for the queries below, which take parameters: % doubled).
_LOGINVAULT_ROLE = """(r.rolname LIKE 'loginvault\\_%%' OR EXISTS (
    SELECT FROM pg_auth_members am JOIN pg_roles g ON g.oid = am.roleid
    WHERE am.member = r.oid AND g.rolname LIKE 'loginvault\\_%%'))"""

# Each setting a loginvault role, or a login that is a member of one, holds for its sessions
# (ALTER ROLE … SET, everywhere or in this database): a login may set anything on itself, and a
# search_path decides what its sessions' unqualified names are.
_ROLE_SETTINGS = (
    """
SELECT r.rolname, s.setdatabase <> 0, split_part(c.setting, '=', 1), c.setting = 'row_security=off',
       r.rolcanlogin AND NOT pg_has_role(r.oid, %(transformer)s, 'MEMBER')
FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole, unnest(s.setconfig) AS c(setting)
WHERE s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database())) AND NOT r.rolsuper
  AND """
    + _LOGINVAULT_ROLE
    + """
ORDER BY 1, 3
"""
)


# Large objects that a loginvault role or login owns or may read: none is declared. Any login
# may make one (lo_from_bytea), grant it to another, and nothing else sees it: a copy of what it
# reads that no retention or erasure reaches.
_LARGE_OBJECTS = (
    """
SELECT l.oid::bigint, pg_get_userbyid(l.lomowner)
FROM pg_largeobject_metadata l
WHERE EXISTS (
    SELECT FROM pg_roles r
    WHERE (r.oid = l.lomowner OR r.oid IN (SELECT a.grantee FROM aclexplode(l.lomacl) a))
      AND NOT r.rolsuper
      AND """
    + _LOGINVAULT_ROLE
    + """)
ORDER BY 1
"""
)


def compare_role_settings(rows: Iterable[tuple[Any, ...]]) -> list[str]:
    """The one setting allowed: row_security=off, everywhere, on a login of a workload other than
    the transformer (the bootstrap's: a policy on a table another role owns refuses the read
    instead of running). Named by setting only: a value could be a secret."""
    out = []
    for role, in_database, name, row_security_off, reading_login in rows:
        if row_security_off and reading_login and not in_database:
            continue
        where = " in this database" if in_database else ""
        out.append(f"role {role}: setting {name}{where} is held, but not allowed (ALTER ROLE … RESET {name})")
    return out


def _role_names(conn: Connection[TupleRow]) -> dict[int, str]:
    return {oid: name for oid, name in conn.execute("SELECT oid::int, rolname FROM pg_roles")} | {0: "PUBLIC"}


def facts(conn: Connection[TupleRow], declaration: Declaration) -> tuple[dict[str, set[Fact]], set[str]]:
    """kind → {(object, owner, grantee, privilege)} (grantee None: the object without grants),
    and the database's own privileges and default privileges as sentences."""
    names = _role_names(conn)
    params = {"schemas": declaration.schemas}
    held: dict[str, set[Fact]] = {}
    for kind, sql in zip(PRIVILEGE_KINDS, (_SCHEMAS, _RELATIONS, _FUNCTIONS), strict=True):
        held[kind] = {
            (name, owner, names.get(grantee) if grantee is not None else None, privilege)
            for name, owner, grantee, privilege in conn.execute(sql, params)
        }
    other = {f"database: {privilege} to {names[grantee]}" for grantee, privilege in conn.execute(_DATABASE)}
    for role, schema, on, privilege, grantee in conn.execute(_DEFAULT_PRIVILEGES):
        other.add(f"default privileges of {role} in {schema} on {on}: {privilege} to {names[grantee]}")
    return held, other


# ---------------------------------------------------------------- the comparison


def _declared_for(name: str, declared: dict[str, Spec]) -> tuple[str, Spec] | None:
    if name in declared:
        return name, declared[name]
    for pattern, spec in declared.items():
        if "*" in pattern and fnmatch.fnmatchcase(name, pattern):
            return pattern, spec
    return None


def _grants(spec: Spec) -> set[tuple[str, str]]:
    return {(grantee, privilege) for privilege, grantees in spec.items() if privilege.isupper() for grantee in grantees}


def compare_objects(kind: str, held: set[Fact], declared: dict[str, Spec], admin: str) -> list[str]:
    """Each difference between what the database holds of `kind` and the declaration (`admin`:
    the role `$admin` stands for)."""
    label = kind.rstrip("s")
    by_object: dict[str, tuple[str, set[tuple[str, str]]]] = {}
    for name, owner, grantee, privilege in held:
        entry = by_object.setdefault(name, (owner, set()))
        if grantee is not None:
            entry[1].add((grantee, privilege))
    out: list[str] = []
    seen: set[str] = set()
    for name, (owner, grants) in sorted(by_object.items()):
        match = _declared_for(name, declared)
        if match is None:
            out.append(f"{label} {name}: exists, but is not declared")
            continue
        pattern, spec = match
        seen.add(pattern)
        if owner != (declared_owner := spec["owner"].replace(ADMIN, admin)):
            out.append(f"{label} {name}: owned by {owner}, declared owner {declared_owner}")
        expected = _grants(spec)
        out += [f"{label} {name}: {p} to {g} is granted, but not declared" for g, p in sorted(grants - expected)]
        out += [f"{label} {name}: {p} to {g} is declared, but not granted" for g, p in sorted(expected - grants)]
    for pattern, spec in sorted(declared.items()):
        if pattern not in seen and "*" not in pattern and spec.get("built_by") != "dbt":
            out.append(f"{label} {pattern}: declared, but does not exist")
    return out


def compare_memberships(rows: Iterable[tuple[Any, ...]], declaration: Declaration) -> list[str]:
    """Group roles: a member of the declared roles only. Logins: of exactly one workload role,
    without ADMIN OPTION. A superuser (the bootstrap's admin) is not checked: it holds everything."""
    out: list[str] = []
    workloads = set(declaration.workload_roles)
    groups = set(declaration.memberships) | workloads
    of_login: dict[str, list[str]] = {}
    held: set[tuple[str, str]] = set()
    for group, member, can_login, admin_option, superuser in rows:
        if superuser:
            continue
        if member in groups:
            held.add((member, group))
        elif can_login:
            of_login.setdefault(member, []).append(group)
            if admin_option:
                out.append(f"login {member}: a member of {group} WITH ADMIN OPTION")
        else:
            out.append(f"role {member}: a member of {group}, but not declared")
    expected = {(member, group) for member, of in declaration.memberships.items() for group in of}
    out += [f"role {m}: a member of {g}, but not declared" for m, g in sorted(held - expected)]
    out += [f"role {m}: declared a member of {g}, but is not" for m, g in sorted(expected - held)]
    for login, of in sorted(of_login.items()):
        if len(of) != 1 or of[0] not in workloads:
            out.append(f"login {login}: a member of {', '.join(sorted(of))}; a login is a member of one workload role")
    return out


def differences(conn: Connection[TupleRow], declaration: Declaration) -> list[str]:
    """Every difference between the database (as `conn` sees its catalogs) and the declaration."""
    held, other = facts(conn, declaration)
    (admin,) = db.one_row(conn, "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'loginvault'")
    out: list[str] = []
    if admin in declaration.memberships:
        out.append(f"schema loginvault: owned by {admin}, a loginvault group role; the bootstrap's admin owns it")
    for kind in PRIVILEGE_KINDS:
        out += compare_objects(kind, held[kind], declaration.objects[kind], admin)
    expected = {f"database: {p} to {g}" for p, grantees in declaration.database.items() for g in grantees}
    expected |= {f"default privileges of {d}" for d in declaration.default_privileges}
    out += [f"{fact}: held, but not declared" for fact in sorted(other - expected)]
    out += [f"{fact}: declared, but not held" for fact in sorted(expected - other)]
    out += compare_memberships(conn.execute(_MEMBERSHIPS).fetchall(), declaration)
    out += compare_role_settings(conn.execute(_ROLE_SETTINGS, {"transformer": config.TRANSFORMER_ROLE}).fetchall())
    out += [
        f"large object {oid}: owned by {owner}, or readable by a loginvault role; none is declared"
        for oid, owner in conn.execute(_LARGE_OBJECTS, {})
    ]
    out += compare_columns(conn, declaration)
    names = _role_names(conn)
    params = {"schemas": declaration.schemas}
    out += [
        f"{what}: {privilege} to {names.get(grantee, grantee)} WITH GRANT OPTION is held, but not declared"
        for what, privilege, grantee in conn.execute(_GRANT_OPTIONS, params)
    ]
    out += [f"relation {relation}: it {problem}" for relation, problem in conn.execute(_SHAPES)]
    return out


def compare_columns(conn: Connection[TupleRow], declaration: Declaration) -> list[str]:
    """Column grants held against each relation's declared `columns`."""
    names = _role_names(conn)
    held = {
        (relation, f"{privilege} ({columns}) to {names.get(grantee, grantee)}")
        for relation, privilege, grantee, columns in conn.execute(_COLUMNS, {"schemas": declaration.schemas})
    }
    expected = {
        (name, grant) for name, spec in declaration.objects["relations"].items() for grant in spec.get("columns", [])
    }
    out = [f"relation {r}: column grant {g} is held, but not declared" for r, g in sorted(held - expected)]
    out += [f"relation {r}: column grant {g} is declared, but not held" for r, g in sorted(expected - held)]
    return out


def check(conn: Connection[TupleRow], mart_schema: str) -> list[str]:
    """The differences (none: the database is as declared)."""
    return differences(conn, load(mart_schema=mart_schema))


def refuse(found: list[str]) -> None:
    """Differences, in one sentence naming the first, when there are any."""
    if found:
        more = f" (and {len(found) - 1} more: `loginvault check` lists them)" if len(found) > 1 else ""
        raise Differences(f"the database's privileges differ from ingest/schema/sql/acl.toml: {found[0]}{more}")
