"""Jobs and events as plain records: state names, and JSON for scripts (--json)."""

import json
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hatrain.rpc.v1 import agent_pb2 as pb

TERMINAL = {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}


def state_name(state: int) -> str:
    return pb.JobState.Name(state).removeprefix("JOB_STATE_").lower()


def parse_state(text: str) -> int:
    try:
        return int(pb.JobState.Value("JOB_STATE_" + text.upper()))
    except ValueError:
        names = ", ".join(state_name(s) for s in pb.JobState.values() if s)
        raise ValueError(f"state {text!r}: expected one of {names}") from None


def _plain(value: Any, field: FieldDescriptor) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return message_dict(value)
    if field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        name = field.enum_type.values_by_number[value].name
        return name.removeprefix("JOB_STATE_").removeprefix("EVENT_KIND_").lower()
    return value


def message_dict(message: Message) -> dict[str, Any]:
    """Set fields by their proto names, with numbers kept as JSON numbers (not int64 strings)."""
    data: dict[str, Any] = {}
    for field, value in message.ListFields():
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            data[field.name] = {k: _plain(v, value_field) for k, v in value.items()}
        elif field.is_repeated:
            data[field.name] = [_plain(v, field) for v in value]
        else:
            data[field.name] = _plain(value, field)
    return data


def to_dict(message: Message, **extra: Any) -> dict[str, Any]:
    data = message_dict(message)
    if isinstance(message, pb.Job):
        data.pop("spec", None)
        data["state"] = state_name(message.state)
        data["name"] = message.spec.name
        data["gpus"] = message.spec.resources.gpus
        if message.state == pb.JOB_STATE_QUEUED:
            data.setdefault("pending_reason", "")
    return {**extra, **data}


def print_json(data: Any) -> None:
    print(json.dumps(data, sort_keys=True), flush=True)


def never_ran(job: pb.Job) -> str:
    """Why the job never ran ("was cancelled while queued", ...), or "" if it did run."""
    if job.state == pb.JOB_STATE_QUEUED:
        return "is still queued"
    if job.state in TERMINAL and not job.started_at:
        return f"was {state_name(job.state)} before it started"
    return ""


def cancel_message(before: pb.Job, after: pb.Job) -> str:
    """One line saying what a cancel request did, from the job before and after it."""
    if before.state in TERMINAL:
        return f"job {after.id}: not cancelled: it had already {state_name(before.state)}"
    if after.state == pb.JOB_STATE_CANCELLED and not after.started_at:
        return f"job {after.id}: cancelled while queued; it never ran"
    if after.state in TERMINAL:
        return f"job {after.id}: {state_name(after.state)}"
    return (
        f"job {after.id}: cancel requested; it is stopping (SIGTERM, then SIGKILL after the "
        f"host's grace period). Follow it: hatrain-client wait {after.id}"
    )


def logs_hint(job_id: str) -> str:
    return f"see: hatrain-client logs {job_id} --tail 50"
