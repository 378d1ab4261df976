"""The control API described in OpenAPI 3.1 (served at ``/api/openapi.json``): what each address
takes and answers, for clients, code generators and the test that checks real answers against it."""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..model import MAX_WORKERS

__all__ = ["document"]

_TIME = {"type": "string", "format": "date-time", "description": "ISO 8601 with the local offset"}
_MAYBE_TIME = {"type": ["string", "null"], "format": "date-time"}
_COUNT = {"type": "integer", "minimum": 0}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {str(code): {"$ref": "#/components/responses/Error"} for code in (400, 401, 403, 404, 409)}

_SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {
        "error": {"type": "string", "description": "a sentence that names the problem and the fix"},
        "problems": {"type": "array", "items": {"type": "object", "properties": {
            "where": {"type": "string"}, "message": {"type": "string"}}}}}},
    "Waiting": {"type": ["object", "null"], "required": ["reason", "scope", "text", "room_at"], "properties": {
        "reason": {"enum": ["limit", "frozen"]}, "scope": {"type": "string"}, "text": {"type": "string"},
        "room_at": {**_MAYBE_TIME, "description": "when the limit has room (null: when an answer in flight arrives)"}}},
    "Plan": {"type": "object", "required": ["name", "state", "dataset", "done", "failed", "skipped", "in_flight",
                                            "rate", "eta_seconds", "waiting"], "properties": {
        "name": {"type": "string"},
        "state": {"enum": ["idle", "running", "paused", "stopped", "completed", "failed", "cancelled"]},
        "dataset": {"type": "string"}, "total": {"type": ["integer", "null"]}, "done": _COUNT, "failed": _COUNT,
        "skipped": _COUNT, "in_flight": _COUNT, "retries": _COUNT, "freezes": _COUNT, "rows": _COUNT,
        "messages": {**_COUNT, "description": "a stream plan's messages received"},
        "rate": {"type": "number", "description": "tasks a second (an ended run: its average)"},
        "eta_seconds": {"type": ["number", "null"]}, "frozen_until": _MAYBE_TIME,
        "last_message": {"type": ["string", "null"]}, "run_id": {"type": ["string", "null"]},
        "next_due": _MAYBE_TIME, "started_at": _MAYBE_TIME, "waiting": _ref("Waiting")}},
    "Task": {"type": "object", "required": ["task_id", "plan", "state", "params", "attempts", "at"], "properties": {
        "task_id": {"type": "string"}, "plan": {"type": "string"}, "state": {"enum": ["failed", "done", "running"]},
        "params": {"type": ["object", "null"], "description": "a failed or running task's parameters"},
        "message": {"type": ["string", "null"]}, "attempts": _COUNT, "at": _MAYBE_TIME,
        "run_id": {"type": ["string", "null"]}, "node": {"type": ["string", "null"]},
        "seconds": {"type": ["number", "null"], "description": "a running task: how long it has been in flight"}}},
    "Run": {"type": "object", "required": ["run_id", "logical_time", "state", "started_at", "ended_at"], "properties": {
        "run_id": {"type": "string"}, "logical_time": {"type": "string"},
        "state": {"enum": ["running", "paused", "stopped", "completed", "failed", "cancelled", "interrupted"]},
        "started_at": _TIME, "ended_at": _MAYBE_TIME, "done": _COUNT, "failed": _COUNT, "skipped": _COUNT,
        "rows": _COUNT, "retries": _COUNT, "freezes": _COUNT, "message": {"type": ["string", "null"]}}},
    "Scope": {"type": "object", "required": ["scope", "limits", "frozen_until"], "properties": {
        "scope": {"type": "string"}, "vendor": {"type": ["string", "null"]}, "node": {"type": ["string", "null"]},
        "key": {"type": ["string", "null"], "description": "the variable holding the key a key's scope counts"},
        "key_refused": {"type": "boolean", "description": "the vendor refused that key: no task takes it now"},
        "limits": {"type": "array", "items": {"type": "object", "required": ["limit", "used", "capacity", "text"],
                                              "properties": {"limit": {"type": "string"}, "used": _COUNT,
                                                             "capacity": _COUNT, "resets_at": _MAYBE_TIME,
                                                             "text": {"type": "string"}}}},
        "frozen_until": _MAYBE_TIME,
        "learned": {"type": ["string", "null"], "description": "what was learned of a scope's limits, in words"},
        "freeze": {"type": ["object", "null"], "properties": {"message": {"type": "string"},
                                                              "ban": {"type": "boolean"}}}}},
    "Change": {"type": "object", "required": ["plan", "state", "changed"], "properties": {
        "plan": {"type": "string"}, "state": {"type": "string"}, "changed": {"type": "boolean"},
        "message": {"type": "string"}, "failed_before": _COUNT}},
    "Series": {"type": "object", "required": ["step_seconds", "start", "end", "since", "requests", "errors", "limited",
                                              "freezes", "usage"], "properties": {
        "step_seconds": {"type": "number"}, "start": _TIME, "end": _TIME,
        "since": {**_TIME, "description": "the first instant with data (the daemon's start, within the hour)"},
        **{name: {"type": "array", "items": _COUNT, "maxItems": 360}
           for name in ("requests", "errors", "limited", "freezes")},
        "usage": {"type": "object", "additionalProperties": {"type": "array", "items": {
            "type": "number", "minimum": 0, "maximum": 1}}}}},
}

_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}, "description": "the plan's name"}


def _paths() -> dict[str, Any]:
    ok = "OK"
    return {
        "/healthz": {"get": {"summary": "Is the daemon up", "responses": {"200": _json(
            {"type": "object", "properties": {"ok": {"type": "boolean"}, "plans": _COUNT, "workers": _COUNT}}, ok)}}},
        "/api/plans": {
            "get": {"summary": "Every plan with its progress", "responses": {"200": _json(
                {"type": "object", "required": ["plans"], "properties": {"plans": {"type": "array",
                                                                                   "items": _ref("Plan")}}}, ok)}},
            "post": {"summary": "Add the plans (vendors, datasets) of a TOML or JSON plan document",
                     "requestBody": {"required": True, "content": {"application/toml": {"schema": {"type": "string"}},
                                                                   "application/json": {"schema": {"type": "object"}}}},
                     "responses": {"201": _json({"type": "object", "properties": {
                         "added": {"type": "array", "items": {"type": "string"}},
                         "plans": {"type": "array", "items": _ref("Plan")}}}, "added"), **_ERRORS}}},
        "/api/reload": {"post": {"summary": "Read the plan file again and apply what changed",
                                 "responses": {"200": _json({"type": "object"}, ok), **_ERRORS}}},
        "/api/plans/{name}": {
            "parameters": [_NAME],
            "get": {"summary": "One plan: progress, failed tasks (from the state), tasks in flight, last run",
                    "responses": {"200": _json({"allOf": [_ref("Plan"), {"type": "object", "properties": {
                        "failed_tasks": {"type": "array", "items": _ref("Task")},
                        "in_flight_tasks": {"type": "array", "items": _ref("Task")},
                        "last_run": {"oneOf": [{"type": "null"}, _ref("Run")]}}}]}, ok), **_ERRORS}},
            "delete": {"summary": "Remove the plan for good", "responses": {"200": _json({"type": "object"}, ok),
                                                                            **_ERRORS}}},
        "/api/plans/{name}/runs": {"parameters": [_NAME], "get": {
            "summary": "The plan's runs, newest first",
            "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}}],
            "responses": {"200": _json({"type": "object", "required": ["plan", "runs"], "properties": {
                "plan": {"type": "string"}, "runs": {"type": "array", "items": _ref("Run")}}}, ok), **_ERRORS}}},
        "/api/plans/{name}/{action}": {"parameters": [_NAME, {
            "name": "action", "in": "path", "required": True,
            "schema": {"enum": ["start", "stop", "pause", "resume", "cancel", "retry"]}}], "post": {
            "summary": "Change the plan's run (already so: 200 with changed=false)",
            "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {"200": _json(_ref("Change"), ok), **_ERRORS}}},
        "/api/plans/{name}/tasks/{task_id}/retry": {"parameters": [_NAME, {
            "name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}], "post": {
            "summary": "Run one failed task again, alone (a new run of that task; the plan's run has ended)",
            "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {"200": _json({"allOf": [_ref("Change"), {"type": "object", "properties": {
                "retried": {"type": "array", "items": {"type": "string"}}}}]}, ok), **_ERRORS}}},
        "/api/tasks": {"get": {
            "summary": "Tasks by plan, state and text, newest first, a page at a time",
            "parameters": [
                {"name": "plan", "in": "query", "schema": {"type": "string"}},
                {"name": "state", "in": "query", "schema": {"enum": ["failed", "done", "running"]}},
                {"name": "q", "in": "query", "schema": {"type": "string"},
                 "description": "text in the id, parameters or message; name=value matches one parameter"},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}}],
            "responses": {"200": _json({"type": "object", "required": ["tasks", "more"], "properties": {
                "tasks": {"type": "array", "items": _ref("Task")}, "more": {"type": "boolean"},
                "limit": _COUNT, "offset": _COUNT}}, ok), **_ERRORS}}},
        "/api/vendors": {"get": {"summary": "Each limited scope with its limits' live use and any freeze",
                                 "responses": {"200": _json({"type": "object", "required": ["scopes"], "properties": {
                                     "scopes": {"type": "array", "items": _ref("Scope")}}}, ok)}}},
        "/api/workers": {"put": {"summary": "Set how many tasks run at once", "requestBody": {
            "required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["workers"],
                "properties": {"workers": {"type": "integer", "minimum": 1, "maximum": MAX_WORKERS}}}}}},
            "responses": {"200": _json({"type": "object", "properties": {"workers": _COUNT}}, ok), **_ERRORS}}},
        "/api/permits": {
            "get": {"summary": "Permits other programs hold now, and took", "responses": {"200": _json({
                "type": "object", "properties": {
                    "in_flight": {"type": "array", "items": {"type": "object", "properties": {
                        "vendor": {"type": "string"}, "dataset": {"type": ["string", "null"]}, "in_flight": _COUNT}}},
                    "taken_last_minute": _COUNT,
                    "taken": {"type": "array", "items": {"type": "object", "properties": {
                        "vendor": {"type": "string"}, "dataset": {"type": ["string", "null"]}, "count": _COUNT}}}}},
                ok)}},
            "post": {"summary": "Wait until one request of another program may go, and count it like the "
                                "daemon's own (503 with Retry-After: no room within the wait)", "requestBody": {
                "required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["vendor"], "properties": {
                        "vendor": {"type": "string"}, "dataset": {"type": ["string", "null"]},
                        "weight": {"type": "integer", "minimum": 1},
                        "wait": {"type": "number", "minimum": 0, "description": "seconds to wait for room"},
                        "hold": {"type": "number", "exclusiveMinimum": 0,
                                 "description": "seconds after which an unanswered permit counts as answered"}}}}}},
                "responses": {"200": _json({"type": "object", "properties": {
                    "id": {"type": "string"}, "vendor": {"type": "string"}, "dataset": {"type": ["string", "null"]},
                    "weight": _COUNT, "key": {"type": ["string", "null"],
                                              "description": "the variable holding the key to use (never the key)"},
                    "taken": {"type": "string"}, "expires": {"type": "string"}}}, ok), **_ERRORS}}},
        "/api/permits/{id}/answered": {"post": {
            "summary": "The permit's request was answered: its room comes back one window after; a 429 freezes",
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "properties": {
                    "outcome": {"enum": ["done", "rate_limited", "error"]},
                    "retry_after": {"type": "number", "minimum": 0},
                    "scope": {"enum": ["vendor", "dataset"]},
                    "at": {"type": "number", "description": "when the answer began, epoch seconds"}}}}}},
            "responses": {"200": _json({"type": "object", "properties": {
                "id": {"type": "string"}, "outcome": {"type": "string"}}}, ok), **_ERRORS}}},
        "/api/series": {"get": {"summary": "The last hour in 10-second steps (the dashboard's graphs)",
                                "responses": {"200": _json(_ref("Series"), ok)}}},
        "/api/events": {"get": {
            "summary": "Server-sent events: folded event lines with ids, and progress snapshots",
            "parameters": [{"name": "tasks", "in": "query", "schema": {"enum": ["all"]}},
                           {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"},
                            "description": "resume after this id: only lines changed since are sent"}],
            "responses": {"200": {"description": "a stream", "content": {"text/event-stream": {
                "schema": {"type": "string"}}}}, **_ERRORS}}},
        "/api/openapi.json": {"get": {"summary": "This document", "responses": {"200": _json({"type": "object"},
                                                                                               ok)}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {
            "description": ok, "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
    }


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the control API."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "synctask control API", "version": __version__,
                 "description": "JSON over HTTP on 127.0.0.1; every call needs the daemon's bearer token; "
                                "every error is JSON with a sentence in `error`."},
        "servers": [{"url": "/"}],
        "security": [{"token": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
            "schemas": _SCHEMAS,
            "responses": {"Error": _json(_ref("Error"), "refused, with a sentence that says why and what to do")},
        },
    }
