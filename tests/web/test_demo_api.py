"""The demo tasks API and the demo page, over real HTTP against `tasksync serve --dev`.

Every write must reach the user's sockets through the same ingest path as any publisher, with a
version that grows on every write; bad input is refused with a reason the caller can act on.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import sys
from datetime import datetime
from pathlib import Path

import httpx
import msgspec
import pytest
from litestar.testing import TestClient

import tasksync.demo
from tasksync.app import create_app
from tasksync.client import SyncClient
from tasksync.settings import Settings
from tests.service.test_delivery import next_update
from tests.support.events import payload

JSON = {"content-type": "application/json"}
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def demo(start_service, tmp_path):
    """The service in development mode with its own demo database."""
    return start_service("--dev", "--demo-db", str(tmp_path / "demo.sqlite3"))


def tasks_url(service, user: str, task_id: int | str | None = None) -> str:
    path = "" if task_id is None else f"/{task_id}"
    return f"{service.http}/demo/api/tasks{path}?user_id={user}"


def is_iso_utc(text: str) -> bool:
    return text.endswith("Z") and datetime.fromisoformat(text).utcoffset() is not None


def test_create_list_update_complete_delete_with_a_version_per_write(demo):
    created = httpx.post(tasks_url(demo, "alice"), json={"title": "  Write the docs  "})
    assert created.status_code == 201
    task = created.json()
    assert task == {"id": task["id"], "title": "Write the docs", "completed": False, "version": 1,
                    "updated_at": task["updated_at"]}
    assert isinstance(task["id"], int) and is_iso_utc(task["updated_at"])
    second = httpx.post(tasks_url(demo, "alice"), json={"title": "Review"}).json()

    listed = httpx.get(tasks_url(demo, "alice"))
    assert listed.status_code == 200 and listed.json() == [task, second]
    assert httpx.get(tasks_url(demo, "bob")).json() == []

    renamed = httpx.patch(tasks_url(demo, "alice", task["id"]), json={"title": "Write the guide"}).json()
    assert (renamed["title"], renamed["completed"], renamed["version"]) == ("Write the guide", False, 2)
    assert renamed["updated_at"] >= task["updated_at"]
    completed = httpx.patch(tasks_url(demo, "alice", task["id"]), json={"completed": True}).json()
    assert (completed["title"], completed["completed"], completed["version"]) == ("Write the guide", True, 3)
    both = httpx.patch(tasks_url(demo, "alice", task["id"]), json={"title": "Again", "completed": False}).json()
    assert (both["title"], both["completed"], both["version"]) == ("Again", False, 4)
    assert httpx.get(tasks_url(demo, "alice")).json() == [both, second]

    deleted = httpx.delete(tasks_url(demo, "alice", task["id"]))
    assert deleted.status_code == 204 and deleted.content == b""
    assert httpx.get(tasks_url(demo, "alice")).json() == [second]
    assert httpx.delete(tasks_url(demo, "alice", task["id"])).status_code == 404


def test_a_user_cannot_see_or_change_another_users_task(demo):
    task = httpx.post(tasks_url(demo, "alice"), json={"title": "mine"}).json()
    for response in (
        httpx.patch(tasks_url(demo, "bob", task["id"]), json={"completed": True}),
        httpx.delete(tasks_url(demo, "bob", task["id"])),
    ):
        assert response.status_code == 404
        assert response.json() == {"error": "not_found", "message": f"this user has no task {task['id']}"}
    assert httpx.get(tasks_url(demo, "alice")).json() == [task]


async def test_each_write_reaches_every_socket_of_the_user_and_no_other(demo):
    async with (
        SyncClient(demo.ws, user_id="alice") as tab1,
        SyncClient(demo.ws, user_id="alice") as tab2,
        SyncClient(demo.ws, user_id="bob") as bob,
    ):
        async with httpx.AsyncClient() as http:
            created = (await http.post(tasks_url(demo, "alice"), json={"title": "Plan"})).json()
            task_id = created["id"]
            renamed = (await http.patch(tasks_url(demo, "alice", task_id), json={"title": "Plan v2"})).json()
            done = (await http.patch(tasks_url(demo, "alice", task_id), json={"completed": True})).json()
            reopened = (await http.patch(tasks_url(demo, "alice", task_id), json={"completed": False})).json()
            assert (await http.delete(tasks_url(demo, "alice", task_id))).status_code == 204

        expected = [
            ("task.created", created),
            ("task.updated", renamed),
            ("task.completed", done),
            ("task.updated", reopened),
            ("task.deleted", {**reopened, "version": 5}),
        ]
        for tab in (tab1, tab2):
            updates = [await next_update(tab) for _ in expected]
            assert [(u.event, u.task | {"updated_at": None}) for u in updates] == [
                (name, task | {"updated_at": None}) for name, task in expected
            ]
            # The deletion's time is the server's; the others are exactly the API's answers.
            assert [u.task for u in updates[:4]] == [task for _, task in expected[:4]]
            assert is_iso_utc(updates[4].task["updated_at"])
            # Stable ids, one per task version, and the event time is the write's time.
            assert all(re.fullmatch(rf"demo-[0-9a-f]+-{task_id}-v{n}", u.id) for n, u in enumerate(updates, 1))
            assert [u.timestamp for u in updates] == [u.task["updated_at"] for u in updates]
            assert [u.seq for u in updates] == [1, 2, 3, 4, 5]

        # Bob got nothing: a marker published for him after alice's events is his first frame.
        async with httpx.AsyncClient() as http:
            await http.post(demo.http + "/v1/events", json=payload("bob", title="bob's marker"))
        first_for_bob = await next_update(bob)
        assert (first_for_bob.task["title"], first_for_bob.seq) == ("bob's marker", 1)


async def test_a_writes_operation_id_header_is_published_as_its_events_op_id(demo):
    async with SyncClient(demo.ws, user_id="alice") as tab, httpx.AsyncClient() as http:
        acted = {"X-Operation-Id": "tab1.7"}
        created = (await http.post(tasks_url(demo, "alice"), json={"title": "Mine"}, headers=acted)).json()
        await http.patch(tasks_url(demo, "alice", created["id"]), json={"completed": True})
        refused = await http.delete(tasks_url(demo, "alice", created["id"]), headers={"X-Operation-Id": "x" * 65})
        assert (refused.status_code, refused.json()["error"]) == (422, "invalid_op_id")
        assert [(await next_update(tab)).op_id for _ in range(2)] == ["tab1.7", None]
        # The refused deletion saved nothing.
        assert (await http.get(tasks_url(demo, "alice"))).json()[0]["id"] == created["id"]


def test_bad_input_is_refused_with_a_reason(demo):
    task = httpx.post(tasks_url(demo, "alice"), json={"title": "target"}).json()
    one = tasks_url(demo, "alice", task["id"])
    cases = [
        ("GET", f"{demo.http}/demo/api/tasks", None, 400, "missing_user_id"),
        ("GET", tasks_url(demo, ""), None, 400, "missing_user_id"),
        ("GET", tasks_url(demo, "x" * 257), None, 400, "invalid_user_id"),
        ("GET", tasks_url(demo, "tab%09user"), None, 400, "invalid_user_id"),
        ("POST", tasks_url(demo, "alice"), b"{not json", 400, "invalid_json"),
        ("POST", tasks_url(demo, "alice"), b'["a list"]', 422, "invalid_body"),
        ("POST", tasks_url(demo, "alice"), b"{}", 422, "invalid_title"),
        ("POST", tasks_url(demo, "alice"), b'{"title": "   "}', 422, "invalid_title"),
        ("POST", tasks_url(demo, "alice"), b'{"title": 7}', 422, "invalid_title"),
        ("POST", tasks_url(demo, "alice"), b'{"title": "%s"}' % (b"x" * 501), 422, "invalid_title"),
        ("POST", tasks_url(demo, "alice"), b'{"title": "ok", "done": true}', 422, "unknown_field"),
        ("POST", tasks_url(demo, "alice"), b'{"title": "%s"}' % (b"x" * 1_100_000), 413, "too_large"),
        ("PATCH", one, b"{}", 422, "empty_change"),
        ("PATCH", one, b'{"completed": 1}', 422, "invalid_completed"),
        ("PATCH", one, b'{"completed": "yes"}', 422, "invalid_completed"),
        ("PATCH", one, b'{"title": ""}', 422, "invalid_title"),
        ("PATCH", one, b'{"version": 9}', 422, "unknown_field"),
        ("PATCH", tasks_url(demo, "alice", "abc"), b'{"completed": true}', 400, "invalid_id"),
        ("PATCH", tasks_url(demo, "alice", "-1"), b'{"completed": true}', 400, "invalid_id"),
        ("PATCH", tasks_url(demo, "alice", 999999), b'{"completed": true}', 404, "not_found"),
        ("DELETE", tasks_url(demo, "alice", "1.5"), None, 400, "invalid_id"),
        ("DELETE", tasks_url(demo, "alice", 999999), None, 404, "not_found"),
    ]
    for method, url, body, status, reason in cases:
        response = httpx.request(method, url, content=body, headers=JSON)
        where = f"{method} {url} {body[:80]!r}" if body else f"{method} {url}"
        assert response.status_code == status, f"{where}: {response.status_code} {response.text}"
        answer = response.json()
        assert answer["error"] == reason and answer["message"], f"{where}: {answer}"
    # Nothing above changed the task.
    assert httpx.get(tasks_url(demo, "alice")).json() == [task]
    # Refusals are answers, not server errors: none reached the log as an exception.
    assert "Traceback" not in demo.log()


def test_tasks_outlive_a_restart_and_keep_their_versions(start_service, tmp_path):
    database = str(tmp_path / "demo.sqlite3")
    first = start_service("--dev", "--demo-db", database)
    task = httpx.post(tasks_url(first, "alice"), json={"title": "durable"}).json()
    first.stop()
    second = start_service("--dev", env={"TASKSYNC_DEMO_DB": database})
    assert httpx.get(tasks_url(second, "alice")).json() == [task]
    assert httpx.patch(tasks_url(second, "alice", task["id"]), json={"completed": True}).json()["version"] == 2


def test_a_write_whose_event_the_broker_refuses_is_not_saved(start_service, redis_server, tmp_path):
    service = start_service("--dev", "--broker", redis_server.url, "--demo-db", str(tmp_path / "demo.sqlite3"))
    kept = httpx.post(tasks_url(service, "alice"), json={"title": "before the outage"}).json()
    redis_server.kill()
    refused = httpx.post(tasks_url(service, "alice"), json={"title": "during the outage"}, timeout=10)
    assert refused.status_code == 503 and refused.headers["retry-after"]
    assert refused.json()["error"] == "broker_unavailable"
    changed = httpx.patch(tasks_url(service, "alice", kept["id"]), json={"completed": True}, timeout=10)
    assert changed.status_code == 503
    # Rolled back: the list is as it was, the version unspent.
    assert httpx.get(tasks_url(service, "alice")).json() == [kept]


def test_the_demo_page_and_its_assets_are_served_at_the_root(demo):
    page = httpx.get(demo.http + "/?user_id=alice")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<div id="root">' in page.text
    assets = re.findall(r'(?:src|href)="\./(assets/[^"]+)"', page.text)
    assert any(asset.endswith(".js") for asset in assets), page.text
    for asset in assets:
        response = httpx.get(f"{demo.http}/{asset}")
        assert response.status_code == 200 and response.content, asset
    assert httpx.get(demo.http + "/assets/missing.js").status_code == 404


def test_without_a_build_the_root_says_how_to_build_it(tmp_path, monkeypatch):
    # In process: the real service cannot be pointed at a missing build without hiding the
    # checkout's own from the other tests.
    monkeypatch.setattr(tasksync.demo, "DEMO_DIST", tmp_path / "not-built")
    app = create_app(Settings(dev=True, demo_db=str(tmp_path / "demo.sqlite3")))
    with TestClient(app) as client:
        response = client.get("/")
        assert response.status_code == 503
        assert "npm run build:demo" in response.text and "make demo" in response.text
        assert client.get("/demo/api/tasks", params={"user_id": "alice"}).json() == []


def test_nothing_of_the_demo_is_served_outside_development_mode(start_service, tmp_path):
    service = start_service("--auth", "jwt", env={"TASKSYNC_JWT_SECRET": "s" * 32})
    assert httpx.get(service.http + "/").status_code == 404
    assert httpx.get(tasks_url(service, "alice")).status_code == 404
    assert httpx.post(tasks_url(service, "alice"), json={"title": "x"}).status_code == 404


def test_each_run_has_its_own_database_removed_when_it_stops(start_service):
    first = start_service("--dev")
    task = httpx.post(tasks_url(first, "alice"), json={"title": "first run's"}).json()
    second = start_service("--dev")
    assert httpx.get(tasks_url(second, "alice")).json() == []
    assert httpx.get(tasks_url(first, "alice")).json() == [task]
    database = Path(re.search(r"its tasks in (\S+)", first.log()).group(1))
    assert database.is_file()
    first.stop()
    assert not database.exists() and not database.parent.exists()


def readme_try_it() -> list[str]:
    """The shell lines of the README's "Try it" block."""
    section = README.read_text().split("## Try it", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]


def curl_as_request(line: str, base_url: str) -> httpx.Request:
    """The request a README `curl -X METHOD URL -H HEADER -d BODY` line sends."""
    words = shlex.split(line.replace("http://127.0.0.1:8005", base_url))
    assert words[0] == "curl", line
    method, headers, body, url = "GET", {}, None, None
    options = iter(words[1:])
    for word in options:
        if word == "-X":
            method = next(options)
        elif word == "-H":
            name, value = next(options).split(":", 1)
            headers[name.strip()] = value.strip()
        elif word == "-d":
            body = next(options).encode()
        else:
            assert url is None and word.startswith("http"), f"an option this test does not know: {word}"
            url = word
    return httpx.Request(method, url, headers=headers, content=body)


async def test_the_readme_try_it_example_works_end_to_end(start_service):
    """The README's commands against a fresh demo, as a new user runs them: `tail` prints the
    task's creation and completion, and the task stays in the demo's API, editable."""
    demo = start_service("--dev")
    tail_line, *curl_lines = readme_try_it()
    assert tail_line.startswith(".venv/bin/tasksync tail ") and curl_lines
    tail_args = [*shlex.split(tail_line)[1:], "--url", demo.http, "--no-reconnect"]
    tail = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tasksync.cli", *tail_args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(30):
            assert msgspec.json.decode(await tail.stdout.readline())["type"] == "connected"
            async with httpx.AsyncClient() as http:
                for line in curl_lines:
                    response = await http.send(curl_as_request(line, demo.http))
                    assert response.status_code < 300, f"{line}: {response.status_code} {response.text}"
            updates = []
            while len(updates) < len(curl_lines):
                frame = msgspec.json.decode(await tail.stdout.readline())
                if frame["type"] == "task_update":
                    updates.append(frame)
    finally:
        tail.terminate()
        await tail.wait()
    assert [(u["event"], u["task"]["id"]) for u in updates] == [("task.created", 1), ("task.completed", 1)]
    async with httpx.AsyncClient() as http:
        listed = (await http.get(tasks_url(demo, "alice"))).json()
        assert [(t["id"], t["title"], t["completed"], t["version"]) for t in listed] == [(1, "Write docs", True, 2)]
        # Still editable after the example, as in the page.
        assert (await http.patch(tasks_url(demo, "alice", 1), json={"title": "Write more docs"})).status_code == 200
