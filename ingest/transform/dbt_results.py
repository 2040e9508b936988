"""What a dbt command's results say, read from dbtRunner's result: the rows each model added, and
the first thing that failed, in one line with its database error (and a hint when the database
does not answer)."""

from __future__ import annotations

import re

from ingest import db

# Statuses of a node (model, test, hook) that failed the command.
FAILED = frozenset({"error", "fail", "runtime error"})
# dbt's framing around a database's message: headers, the compiled file, PostgreSQL's CONTEXT.
_FRAMING = re.compile(
    r"^((Database|Runtime|Compilation|Parsing|Dependency) Error( in .*)?|compiled code at .*|CONTEXT: .*|.* failed, error:)$"
)
_UNREACHABLE = re.compile(r"connection refused|could not connect|is the server running|connection to server", re.I)


def rows_affected(execution: object) -> dict[str, int]:
    """model name → the rows its statement affected, from dbt's run results (adapter_response):
    for these append-only incremental models, the rows the build inserted (a first build's
    CREATE TABLE AS counts its rows too). dbt has the figure from PostgreSQL's command tag at no
    cost; counting with queries would scan each table twice per build."""
    rows: dict[str, int] = {}
    for node_result in getattr(execution, "results", None) or ():
        node = getattr(node_result, "node", None)
        if node is None or node.resource_type != "model":
            continue
        affected = (node_result.adapter_response or {}).get("rows_affected")
        if isinstance(affected, int) and affected >= 0:  # -1: a view, or no count
            rows[node.name] = affected
    return rows


def reason(text: str) -> str:
    """The line of a dbt message that says what went wrong (not dbt's framing around it), with a
    DSN's password left out, and a hint when the database did not answer. One line only: a
    database's DETAIL can quote a row."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    said = next((line for line in lines if not _FRAMING.match(line)), lines[0] if lines else "no message")
    said = db.redact_dsn(said)
    if _UNREACHABLE.search(str(text)):
        said += f": the database does not answer; {db.DOWN_HINT}"
    return said


def first_failure(execution: object) -> str | None:
    """`<kind> <name>: <reason>` of the first node that failed (and how many more did), or None."""
    failed = [
        result
        for result in getattr(execution, "results", None) or ()
        if str(getattr(result.status, "value", result.status)) in FAILED
    ]
    if not failed:
        return None
    node = failed[0].node
    said = f"{node.resource_type} {node.name}: {reason(failed[0].message or '')}"
    if len(failed) > 1:
        said += f" (and {len(failed) - 1} more failed: dbt's output above lists them)"
    return said
