"""The close-code tables of the server (Python) and the web client (TypeScript) agree.

Each language names every close code once: `CLOSE_*` in service/tasksync/protocol.py and
`CLOSE_CODES` in clients/web/src/protocol.ts. This test reads the TypeScript source, so a code
added, renumbered or renamed on one side only fails here instead of in a browser.
"""

from __future__ import annotations

import re
from pathlib import Path

from tasksync import protocol

WEB_SRC = Path(__file__).resolve().parents[2] / "clients" / "web" / "src"
TS_TABLE = re.compile(r"export const CLOSE_CODES = \{(?P<body>[^}]*)\} as const;")
TS_ENTRY = re.compile(r"^\s*(?P<name>[A-Z_]+): (?P<code>\d+),?\s*$")


def python_close_codes() -> dict[str, int]:
    return {
        name.removeprefix("CLOSE_"): value
        for name, value in vars(protocol).items()
        if name.startswith("CLOSE_") and isinstance(value, int)
    }


def typescript_close_codes() -> dict[str, int]:
    match = TS_TABLE.search((WEB_SRC / "protocol.ts").read_text())
    assert match, "clients/web/src/protocol.ts has no `export const CLOSE_CODES = {...} as const;`"
    table: dict[str, int] = {}
    for line in match["body"].splitlines():
        if not line.strip():
            continue
        entry = TS_ENTRY.match(line)
        assert entry, f"unexpected line in the TypeScript CLOSE_CODES table: {line!r}"
        table[entry["name"]] = int(entry["code"])
    return table


def test_python_and_typescript_close_code_tables_agree():
    python, typescript = python_close_codes(), typescript_close_codes()
    assert len(python) >= 10, python  # the protocol's table, not an accidental empty match
    assert typescript == python


def test_the_web_client_names_close_codes_instead_of_writing_numbers():
    source = (WEB_SRC / "sync-client.ts").read_text()
    codes = "|".join(str(code) for code in python_close_codes().values())
    bare = re.findall(rf"(?:case |===? |close\()({codes})\b", source)
    assert bare == [], f"sync-client.ts compares or sends close codes as bare numbers: {bare}"
