"""Rewrite the values tables of charts/tasksync/README.md from charts/tasksync/values.yaml.

Run after adding or changing a value: `.venv/bin/python scripts/render_chart_readme.py`.
Each value's row is the comment above it in values.yaml and its default; the `# -- Name ---`
banners of values.yaml become the sections. A chart test fails while the README and values.yaml
disagree.

values.schema.json says which keys are the chart's own values: keys inside free-form objects
(resources, security contexts, annotation maps) are Kubernetes' fields, shown as part of their
object's default rather than as rows of their own.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "charts" / "tasksync"
README = CHART / "README.md"
BEGIN, END = "<!-- values tables: begin -->", "<!-- values tables: end -->"

KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z][\w.-]*):")
SECTION_BANNER = re.compile(r"^# -- (?P<title>.+?) -+$")
CODE_SPAN = re.compile(r"(`[^`]*`)")


@dataclass(frozen=True)
class Value:
    section: str
    path: str
    comment: str
    default: Any
    is_group: bool


def _comment_above(lines: list[str], number: int) -> str:
    """The comment lines right above line `number`, joined; section banners are not part of it."""
    block: list[str] = []
    for line in reversed(lines[:number]):
        stripped = line.strip()
        if not stripped.startswith("#") or SECTION_BANNER.match(stripped):
            break
        block.append(stripped.removeprefix("#").strip())
    return " ".join(reversed(block))


def _lookup(values: dict[str, Any], path: list[str]) -> Any:
    node: Any = values
    for key in path:
        node = node[key]
    return node


def read_values() -> list[Value]:
    """Every value of values.yaml the schema defines, in file order."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    text = (CHART / "values.yaml").read_text()
    defaults = yaml.safe_load(text)
    lines = text.splitlines()
    section = ""
    # (indent, schema of the object, path to it) of the objects enclosing the current line.
    stack: list[tuple[int, dict[str, Any], list[str]]] = [(-1, schema, [])]
    found = []
    for number, line in enumerate(lines):
        banner = SECTION_BANNER.match(line)
        if banner:
            section = banner["title"]
            continue
        match = KEY_LINE.match(line)
        if not match:
            continue
        indent = len(match["indent"])
        while stack[-1][0] >= indent:
            stack.pop()
        _, parent, parent_path = stack[-1]
        if "properties" not in parent:
            continue
        node = parent["properties"][match["key"]]
        path = [*parent_path, match["key"]]
        found.append(
            Value(
                section=section,
                path=".".join(path),
                comment=_comment_above(lines, number),
                default=_lookup(defaults, path),
                is_group="properties" in node,
            )
        )
        stack.append((indent, node, path))
    return found


def _markdown(text: str) -> str:
    """Comment text for a table cell: outside code spans, what Markdown would otherwise read as
    HTML (<full name>), emphasis (team-*) or a column break."""
    parts = CODE_SPAN.split(text)
    for index, part in enumerate(parts):
        if part.startswith("`"):
            parts[index] = part.replace("|", "\\|")
        else:
            parts[index] = part.replace("<", "&lt;").replace("*", "\\*").replace("|", "\\|")
    return "".join(parts)


def _default(value: Value) -> str:
    if value.is_group:
        return ""
    return "`" + json.dumps(value.default, ensure_ascii=False).replace("|", "\\|") + "`"


def render_tables() -> str:
    out: list[str] = []
    section = None
    for value in read_values():
        if value.section != section:
            section = value.section
            out += ["", f"### {section}", "", "| value | default | description |", "|---|---|---|"]
        out.append(f"| `{value.path}` | {_default(value)} | {_markdown(value.comment)} |")
    return "\n".join(out[1:])


def main() -> None:
    text = README.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{README} has no {BEGIN} ... {END} block")
    README.write_text(pattern.sub(lambda _: f"{BEGIN}\n{render_tables()}\n{END}", text))


if __name__ == "__main__":
    main()
