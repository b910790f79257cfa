"""HTTP (function key): `exoprov doctor` run as the app itself, so it checks the managed identity's grants."""

from __future__ import annotations

import io

import azure.functions as func

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves its constructor untyped


@bp.route(route="doctor", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def doctor(req: func.HttpRequest) -> func.HttpResponse:
    """Every preflight check, one line each; 200 when all pass, 503 otherwise. No secret is ever printed."""
    from shared.doctor import run_doctor

    out = io.StringIO()
    code = run_doctor(out)
    return func.HttpResponse(out.getvalue(), status_code=200 if code == 0 else 503, mimetype="text/plain")
