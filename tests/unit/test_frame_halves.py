"""The `task_update` frame in two halves, joined around an offset and epoch known only later
(inside Redis' publish script): the same frame, byte for byte, whatever the event holds."""

from __future__ import annotations

import msgspec
import pytest

from tasksync.events import Notification, TaskEvent
from tasksync.protocol import TaskUpdate, encode_task_update, join_task_update, task_update_halves

EVENTS = [
    TaskEvent(id="e1", user_id="ann", event="task.created", task={}, occurred_at="2026-01-01T00:00:00.000Z"),
    # A task and ids that spell the very text around the cut.
    TaskEvent(
        id='"seq":0,"epoch":"',
        user_id="ann",
        event="task.updated",
        task={"seq": 0, "epoch": "", "text": '"seq":0,"epoch":"x"'},
        occurred_at="t",
        notification=Notification(title='"seq":0,"epoch":"', body="b"),
        op_id='"seq":0',
    ),
]


@pytest.mark.parametrize("event", EVENTS)
def test_the_halves_joined_at_an_offset_and_epoch_are_the_frame_encoded_there(event):
    head, tail = task_update_halves(event)
    joined = join_task_update(head, 42, "r-0123456789ab", tail)
    assert joined == encode_task_update(event, 42, "r-0123456789ab")
    frame = msgspec.json.decode(joined, type=TaskUpdate)
    assert (frame.seq, frame.epoch, frame.id) == (42, "r-0123456789ab", event.id)
