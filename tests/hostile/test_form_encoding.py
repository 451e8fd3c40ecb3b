"""Every gateway route that reads a form checks that its text fields are UTF-8.

The check lives in the route class (gateway/gateway/forms.py): a router made
without it would read bad bytes as Latin-1 again, silently. What the check
answers, through nginx, is in the corpus (tests/hostile/test_corpus.py,
the form-*-utf8-* cases and the Spanish message tests).
"""

from __future__ import annotations

import json
import subprocess

from scripts.stack import REPO

# Runs in the gateway's virtualenv: the routes of the real app, each with its form fields.
LIST_FORM_ROUTES = """
import json, sys
from fastapi import params
from fastapi.routing import APIRoute
from gateway.app import create_app
from gateway.config import Settings
from gateway.forms import Utf8FormRoute

def api_routes(routes):
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):  # FastAPI keeps an included router whole
            yield from api_routes(route.original_router.routes)

app = create_app(Settings(gateway_auth="off", gateway_data_dir=sys.argv[1]))
found = []
for route in api_routes(app.routes):
    fields = [p.name for p in route.dependant.body_params if isinstance(p.field_info, params.Form)]
    if fields:
        found.append({"path": route.path, "checked": isinstance(route, Utf8FormRoute), "fields": fields})
print(json.dumps(found))
"""


def test_every_route_with_form_fields_refuses_text_that_is_not_utf8(tmp_path):
    done = subprocess.run([str(REPO / ".venv" / "gateway" / "bin" / "python"), "-c", LIST_FORM_ROUTES,
                           str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    routes = json.loads(done.stdout)
    assert {"/api/chat", "/api/chat/stream", "/api/transcribe", "/v1/audio/transcriptions"} <= {
        r["path"] for r in routes}, routes
    unchecked = [r for r in routes if not r["checked"]]
    assert not unchecked, f"routes whose form fields may arrive as Latin-1 (use forms.Utf8FormRoute): {unchecked}"
