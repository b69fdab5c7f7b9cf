"""Rewrite the settings table in docs/configuration.md from service/tasksync/settings.py.

Run after adding or changing a setting: `.venv/bin/python scripts/render_config_doc.py`.
A unit test fails while the page and the Settings Struct disagree.
"""

from __future__ import annotations

import re
from pathlib import Path

from tasksync.settings import setting_docs

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
BEGIN, END = "<!-- settings table: begin -->", "<!-- settings table: end -->"


def render_table() -> str:
    rows = ["| flag | environment | default | meaning |", "|---|---|---|---|"]
    for doc in setting_docs():
        default = ",".join(doc.default) if isinstance(doc.default, list) else doc.default
        shown = "(empty)" if default in ("", []) else f"`{default}`"
        flag = "--" + doc.name.replace("_", "-")
        rows.append(f"| `{flag}` | `TASKSYNC_{doc.name.upper()}` | {shown} | {doc.description} |")
    return "\n".join(rows)


def main() -> None:
    text = DOC.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    DOC.write_text(pattern.sub(f"{BEGIN}\n{render_table()}\n{END}", text))


if __name__ == "__main__":
    main()
