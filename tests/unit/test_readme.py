"""The README's shell blocks name only what exists: every `make` target in the Makefile, every
`loginvault …` line parses with the real command line parser (flags and values included; recover
and erase are checked so, never run), every `dbt …` command is one of dbt's, and no other program
appears unnoticed. tests/integration/test_new_user.py runs the new user's lines verbatim in a
fresh shell (`eval "$(make -s env)"`, `make ingest && dbt run`, dbt from anywhere)."""

from __future__ import annotations

import re
import shlex

from test_deploy_static import parse_cli

from ingest import config

ROOT = config.REPO_ROOT
README = ROOT / "README.md"
# Programs a README block may run besides make, loginvault and dbt (checked by their own tests or
# not ours): a new one must be added here on purpose.
OTHER_PROGRAMS = {"psql", "docker", "cd", "source", "umask", "for", "echo", "done", "eval", "openssl"}


def shell_blocks(text: str) -> list[str]:
    """The ```sh fenced blocks, and the 4-space indented blocks that follow a line ending in ':'."""
    blocks = re.findall(r"^```sh\n(.*?)^```", text, re.M | re.S)
    blocks += [m.group(1) for m in re.finditer(r":\n\n((?:    +\S.*\n)+)", text)]
    return [re.sub(r"^    ", "", block, flags=re.M) for block in blocks]


def logical_lines(block: str) -> list[str]:
    """The block's lines, continuations and quotes spanning lines joined."""
    lines: list[str] = []
    pending = ""
    for line in block.replace("\\\n", " ").splitlines():
        pending = f"{pending} {line}" if pending else line
        try:
            shlex.split(pending, comments=True)
        except ValueError:  # a quote still open: the command goes on
            continue
        lines.append(pending)
        pending = ""
    assert not pending, f"README: an unclosed quote in {block!r}"
    return lines


def commands(block: str) -> list[list[str]]:
    """Each simple command of a block: continuations joined, comments dropped, split at && || ; |
    and at $(…) (whose inner command counts too)."""
    out = []
    for line in logical_lines(block):
        inner = re.findall(r"\$\(([^()]*)\)", line)
        for part in [line, *inner]:
            lexer = shlex.shlex(part, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split = True
            lexer.commenters = "#"
            words: list[str] = []
            for token in lexer:
                if set(token) <= set(";&|"):
                    out.append(words)
                    words = []
                else:
                    words.append(token)
            out.append(words)
    out = [[w for w in cmd if not re.fullmatch(r"[A-Z_]+=\S*", w)] for cmd in out]
    out = [cmd[1:] if cmd and cmd[0] in {"do", "then"} else cmd for cmd in out]
    return [cmd for cmd in out if cmd]


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))


def dbt_commands() -> dict[str, set[str]]:
    """dbt's commands, and the subcommands of its command groups (dbt's own click group)."""
    from dbt.cli.main import cli

    return {name: set(getattr(command, "commands", {})) for name, command in cli.commands.items()}


def check(words: list[str]) -> str:
    """Fails the test unless the command names what exists; returns its program."""
    program = words[0].rsplit("/", 1)[-1]
    if program == "make":
        targets = [w for w in words[1:] if not w.startswith("-")]
        unknown = set(targets) - make_targets()
        assert not unknown, f"README: `{shlex.join(words)}`: no Makefile target {sorted(unknown)}"
    elif program == "loginvault":
        parse_cli(words[1:])
    elif program == "dbt":
        known = dbt_commands()
        assert words[1] in known, f"README: `{shlex.join(words)}`: dbt has no command {words[1]}"
        if known[words[1]]:
            assert words[2] in known[words[1]], f"README: `{shlex.join(words)}`: no such dbt command"
    else:
        assert program in OTHER_PROGRAMS, f"README: `{shlex.join(words)}`: a program the README test does not know"
    return program


def test_readme_shell_blocks_name_real_targets_commands_and_flags():
    full = [words for block in shell_blocks(README.read_text()) for words in commands(block)]
    programs = [check(words) for words in full]
    assert {"make", "loginvault", "dbt"} <= set(programs)
    seen = {shlex.join(words) for words in full}
    for line in ("make -s env", "make ingest", "dbt run", "make demo", "dbt docs serve"):
        assert line in seen, f"the README's new-user path lost `{line}`"
    assert any(words[:2] == ["loginvault", "recover"] for words in full)


def test_readme_inline_targets_and_commands_exist():
    """`make X` and `loginvault X` in the README's prose name a real target and command."""
    text = README.read_text()
    targets = set(re.findall(r"`make (?:-s )?([a-z][a-z-]*)", text))
    assert targets and targets <= make_targets(), sorted(targets - make_targets())
    for words in re.findall(r"`loginvault ([a-z][a-z-]*(?: [a-z][a-z-]*)?)", text):
        parse_cli([*words.split(), "--help"])
