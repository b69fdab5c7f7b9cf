"""Development mode only: the demo app and the small tasks API behind it.

`tasksync serve --dev` serves the built demo (clients/web/demo/dist) at `/` and a tasks API at
`/demo/api/tasks`. The API stands in for a product's own task backend: it keeps tasks in one
SQLite file and publishes every write through `Service.ingest`, the path Dapr deliveries and
POST /v1/events take, so the demo shows exactly what any publisher's users would see.

| request | answer |
|---|---|
| `GET /demo/api/tasks?user_id=U` | 200, the user's tasks, oldest first |
| `POST /demo/api/tasks?user_id=U` with `{"title"}` | 201, the created task (`task.created`) |
| `PATCH /demo/api/tasks/{id}?user_id=U` with `title`, `completed` | 200, the task (`task.updated`, `task.completed`) |
| `DELETE /demo/api/tasks/{id}?user_id=U` | 204 (`task.deleted`, carrying the task with its final version) |

A task is `{"id", "title", "completed", "version", "updated_at"}`. `version` grows by one with
every write, deletion included, which is what the web client's store orders events by. A write's
`X-Operation-Id` header is published as the event's `op_id`, so the tab that made the change can
tell it is its own (docs/protocol.md, "Operation ids").
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from litestar import Request, Response, Router, delete, get, patch, post
from litestar.enums import MediaType
from litestar.response import File
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

from .broker import BrokerUnavailable
from .events import EventName
from .ingest import MAX_USER_ID_LENGTH, IngestError, event_from_payload
from .protocol import utc_now_iso
from .routes.common import read_body, service_of
from .routes.publish import RETRY_AFTER_SECONDS
from .settings import Settings

log = logging.getLogger("tasksync.demo")

# The checkout's build output (`npm run build:demo`); an installed wheel has none and says so.
DEMO_DIST = Path(__file__).resolve().parents[2] / "clients" / "web" / "demo" / "dist"
NOT_BUILT = (
    "The TaskSync demo app is not built. Run `make demo`, or `npm ci && npm run build:demo` "
    "in clients/web, then reload this page.\n"
)

MAX_TITLE_LENGTH = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    title TEXT NOT NULL,
    completed INTEGER NOT NULL,
    version INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_by_user ON tasks (user_id, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class DemoApiError(Exception):
    """A request the API refuses: answered as `{"error": reason, "message": message}`."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def _not_found(task_id: int) -> DemoApiError:
    # Another user's task is "not found" too: the API does not tell whether an id exists.
    return DemoApiError(404, "not_found", f"this user has no task {task_id}")


@dataclass(frozen=True, slots=True)
class Write:
    """A change made in a still open transaction: the event it publishes and the task as of it."""

    event: EventName
    task: dict[str, Any]


# A write's work inside its transaction: runs in a worker thread, returns what it changed.
Change = Callable[[sqlite3.Connection], Write]


class TaskTable:
    """The demo's tasks in SQLite. Each request opens its own short-lived connection, and every
    SQLite call runs in a worker thread, so none blocks the event loop. The schema is created
    at construction, before the server starts accepting requests."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._run_directory: tempfile.TemporaryDirectory[str] | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.executescript(_SCHEMA)
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('instance', ?)", (uuid.uuid4().hex[:12],))
            # Part of every event id: task ids restart when the file is deleted, and a new file's
            # `demo-1-v1` must not be taken for a duplicate of the old one's by the broker's dedupe.
            self.instance: str = db.execute("SELECT value FROM meta WHERE key = 'instance'").fetchone()[0]
        self._write_lock = asyncio.Lock()

    @classmethod
    def for_settings(cls, settings: Settings) -> TaskTable:
        """The `demo_db` file, or a database of this run alone: several development servers on
        one machine then never share tasks, and nothing is left behind."""
        if settings.demo_db:
            return cls(Path(settings.demo_db))
        directory = tempfile.TemporaryDirectory(prefix="tasksync-demo-")
        table = cls(Path(directory.name) / "tasks.sqlite3")
        # Removed with the table, at the latest when the process exits.
        table._run_directory = directory
        return table

    def _connect(self) -> sqlite3.Connection:
        # IMMEDIATE: a write transaction takes the write lock at BEGIN, so two processes sharing
        # the file wait for each other instead of failing on a lock upgrade.
        # check_same_thread off: one request's steps may run on different worker threads, one at a time.
        db = sqlite3.connect(self.path, timeout=5, isolation_level="IMMEDIATE", check_same_thread=False)
        db.row_factory = sqlite3.Row
        return db

    async def of_user(self, user_id: str) -> list[dict[str, Any]]:
        def read() -> list[dict[str, Any]]:
            with closing(self._connect()) as db:
                rows = db.execute("SELECT * FROM tasks WHERE user_id = ? ORDER BY id", (user_id,)).fetchall()
            return [_task(row) for row in rows]

        return await asyncio.to_thread(read)

    async def write(self, change: Change, publish: Callable[[Write], Awaitable[None]]) -> Write:
        """Apply `change` in a transaction, `await publish(write)`, then commit.

        The commit waits for the publish so that a change whose event the broker refused is rolled
        back: the API never reports a change that the user's other tabs will not hear about.
        Writes are serialised, so events are ingested in the order their versions were assigned.
        """
        async with self._write_lock:
            db = await asyncio.to_thread(self._connect)
            try:
                write = await asyncio.to_thread(change, db)
                await publish(write)
                await asyncio.to_thread(db.commit)
            finally:
                # Closing without a commit rolls the change back.
                await asyncio.to_thread(db.close)
            return write

    def event_id(self, task: dict[str, Any]) -> str:
        """Stable per write: the same task version always has the same event id."""
        return f"demo-{self.instance}-{task['id']}-v{task['version']}"


def _task(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "title": row["title"],
        "completed": bool(row["completed"]),
        "version": row["version"],
        "updated_at": row["updated_at"],
    }


def _owned(db: sqlite3.Connection, user_id: str, task_id: int) -> sqlite3.Row:
    row = db.execute("SELECT * FROM tasks WHERE id = ? AND user_id = ?", (task_id, user_id)).fetchone()
    if row is None:
        raise _not_found(task_id)
    return row


def _create(user_id: str, title: str) -> Change:
    def change(db: sqlite3.Connection) -> Write:
        now = utc_now_iso()
        cursor = db.execute(
            "INSERT INTO tasks (user_id, title, completed, version, updated_at) VALUES (?, ?, 0, 1, ?)",
            (user_id, title, now),
        )
        task = {"id": cursor.lastrowid, "title": title, "completed": False, "version": 1, "updated_at": now}
        return Write("task.created", task)

    return change


def _update(user_id: str, task_id: int, title: str | None, completed: bool | None) -> Change:
    def change(db: sqlite3.Connection) -> Write:
        before = _task(_owned(db, user_id, task_id))
        task = {
            **before,
            "title": before["title"] if title is None else title,
            "completed": before["completed"] if completed is None else completed,
            "version": before["version"] + 1,
            "updated_at": utc_now_iso(),
        }
        db.execute(
            "UPDATE tasks SET title = ?, completed = ?, version = ?, updated_at = ? WHERE id = ?",
            (task["title"], task["completed"], task["version"], task["updated_at"], task_id),
        )
        became_complete = task["completed"] and not before["completed"]
        return Write("task.completed" if became_complete else "task.updated", task)

    return change


def _delete(user_id: str, task_id: int) -> Change:
    def change(db: sqlite3.Connection) -> Write:
        before = _task(_owned(db, user_id, task_id))
        db.execute("DELETE FROM tasks WHERE id = ?", (task_id,))
        # The deletion is a write with its own version, so a client's tombstone outranks every
        # earlier event of the task that may still be in flight.
        return Write("task.deleted", {**before, "version": before["version"] + 1, "updated_at": utc_now_iso()})

    return change


# ---- request parsing -------------------------------------------------------------------------


def _user_of(request: Request) -> str:
    """The user, from `?user_id=` as development auth takes it on /ws, with the same rules."""
    user_id = request.query_params.get("user_id", "")
    if not user_id:
        raise DemoApiError(400, "missing_user_id", "pass the user as ?user_id=... (development mode)")
    if len(user_id) > MAX_USER_ID_LENGTH or not user_id.isprintable():
        raise DemoApiError(
            400, "invalid_user_id", f"user_id must be printable and at most {MAX_USER_ID_LENGTH} characters"
        )
    return user_id


async def _json_object(request: Request, allowed: frozenset[str]) -> dict[str, Any]:
    raw = await read_body(request)
    if raw is None:
        limit = service_of(request).settings.max_body_bytes
        raise DemoApiError(413, "too_large", f"body larger than {limit} bytes")
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise DemoApiError(400, "invalid_json", f"body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise DemoApiError(422, "invalid_body", "body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise DemoApiError(
            422, "unknown_field", f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    return body


def _title(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DemoApiError(422, "invalid_title", "'title' must be a non-empty string")
    title = value.strip()
    if len(title) > MAX_TITLE_LENGTH:
        raise DemoApiError(422, "invalid_title", f"'title' must be at most {MAX_TITLE_LENGTH} characters")
    return title


# ---- routes ----------------------------------------------------------------------------------

# The web client's id for the user action behind a write (its `createOperationId()`).
OPERATION_ID_HEADER = "x-operation-id"


async def _answer(status: int, work: Awaitable[Any]) -> Response:
    """Await the request's work and answer with its result, or with the error it was refused
    with. Refusals are returned, not raised: the app logs every raised exception as an error."""
    try:
        return Response(await work, status_code=status)
    except DemoApiError as error:
        headers = {"Retry-After": RETRY_AFTER_SECONDS} if error.status == 503 else None
        return Response({"error": error.reason, "message": error.message}, status_code=error.status, headers=headers)


def _task_id(raw: str) -> int:
    # Parsed here rather than by the route (`{task_id:int}`), which would answer a bare 404.
    if not (raw.isascii() and raw.isdigit()):
        raise DemoApiError(400, "invalid_id", f"task ids are positive integers, not {raw[:64]!r}")
    return int(raw)


def _api(tasks: TaskTable) -> Router:
    async def run(request: Request, user_id: str, change: Change) -> dict[str, Any]:
        async def publish(write: Write) -> None:
            task = write.task
            payload = {
                "event": write.event,
                "user_id": user_id,
                "task": task,
                "occurred_at": task["updated_at"],
                "op_id": request.headers.get(OPERATION_ID_HEADER),
            }
            try:
                event = event_from_payload(payload, event_id=tasks.event_id(task), source="demo")
                await service_of(request).ingest(event)
            except IngestError as exc:
                raise DemoApiError(422, exc.reason, exc.message) from exc
            except BrokerUnavailable as exc:
                raise DemoApiError(503, "broker_unavailable", f"not saved, the broker is unavailable: {exc}") from exc

        return (await tasks.write(change, publish)).task

    async def list_for(request: Request) -> list[dict[str, Any]]:
        return await tasks.of_user(_user_of(request))

    async def create(request: Request) -> dict[str, Any]:
        user_id = _user_of(request)
        body = await _json_object(request, frozenset({"title"}))
        return await run(request, user_id, _create(user_id, _title(body.get("title"))))

    async def update(request: Request, raw_id: str) -> dict[str, Any]:
        user_id, task_id = _user_of(request), _task_id(raw_id)
        body = await _json_object(request, frozenset({"title", "completed"}))
        if not body:
            raise DemoApiError(422, "empty_change", "send 'title' and/or 'completed'")
        title = _title(body["title"]) if "title" in body else None
        completed = body.get("completed")
        if completed is not None and not isinstance(completed, bool):
            raise DemoApiError(422, "invalid_completed", "'completed' must be true or false")
        return await run(request, user_id, _update(user_id, task_id, title, completed))

    async def remove(request: Request, raw_id: str) -> None:
        user_id, task_id = _user_of(request), _task_id(raw_id)
        await run(request, user_id, _delete(user_id, task_id))

    @get("/tasks")
    async def list_tasks(request: Request) -> Response:
        return await _answer(200, list_for(request))

    @post("/tasks")
    async def create_task(request: Request) -> Response:
        return await _answer(201, create(request))

    @patch("/tasks/{task_id:str}")
    async def update_task(request: Request) -> Response:
        return await _answer(200, update(request, request.path_params["task_id"]))

    # The route's own 204 would forbid the error answers a body; `_answer` sets the status anyway.
    @delete("/tasks/{task_id:str}", status_code=200)
    async def delete_task(request: Request) -> Response:
        return await _answer(204, remove(request, request.path_params["task_id"]))

    return Router(
        path="/demo/api",
        route_handlers=[list_tasks, create_task, update_task, delete_task],
        include_in_schema=False,
    )


@get("/", include_in_schema=False)
async def demo_index() -> Response:
    index = DEMO_DIST / "index.html"
    if not index.is_file():
        return Response(NOT_BUILT, status_code=503, media_type=MediaType.TEXT)
    # Revalidated on every load: a rebuild renames the hashed assets this page points to.
    return File(
        index, media_type=MediaType.HTML, content_disposition_type="inline", headers={"Cache-Control": "no-cache"}
    )


def demo_route_handlers(settings: Settings) -> list[ControllerRouterHandler]:
    """The demo page at `/`, its hashed assets under `/assets` and the tasks API. Mount these in
    development mode only: the API trusts `?user_id=` like development auth does."""
    tasks = TaskTable.for_settings(settings)
    if (DEMO_DIST / "index.html").is_file():
        log.warning("DEVELOPMENT MODE: demo app at / (%s), its tasks in %s", DEMO_DIST, tasks.path)
    else:
        log.warning("DEVELOPMENT MODE: demo app not built (no %s); / answers 503", DEMO_DIST / "index.html")
    return [
        demo_index,
        create_static_files_router(path="/assets", directories=[DEMO_DIST / "assets"], name="demo-assets"),
        _api(tasks),
    ]
