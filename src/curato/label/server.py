"""``curato serve``: the labelling app's HTTP server (FastAPI), a thin shell over :mod:`curato.commands.labelling`.

What it adds to the commands is the web's part of safety: authentication on every ``/api`` call (a bearer token
or a session cookie), CSRF protection for cookie requests (a per-session token in the ``X-CSRF-Token`` header),
roles, bounded request bodies, files served only for catalogued samples, and headers that keep the page from
running anything but its own scripts. The contract is docs/server-api.md.
"""

from __future__ import annotations

import hmac
import io
import logging
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from curato.commands import labelling as app_commands
from curato.commands.labelling import ConflictError, ForbiddenError, NotFoundError, User
from curato.commands.live import LiveLoop, select_suggestions
from curato.errors import CuratoError, InputError, UnreadableImageError, WorkspaceBusyError, WorkspaceError
from curato.label import masks_api as mask_routes
from curato.workspace import Workspace

STATIC = Path(__file__).parent / "static"
MAX_BODY_BYTES = 64 * 1024
COOKIE = "curato_session"
MAX_IMAGE_SIDE = 1024
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
                               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}
log = logging.getLogger("curato.serve")


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is answered 413 before the app sees it (a declared
    Content-Length is checked up front; a chunked body is read here, counted, and replayed to the app)."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES, paths: dict[str, int] | None = None) -> None:
        self.app, self.limit, self.paths = app, limit, dict(paths or {})  # paths: a larger limit for exact paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.paths.get(scope.get("path", ""), self.limit)
        too_big = f"request body over {limit // 1024} KiB; send less"
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > limit:
                await _plain_error(send, 413, too_big)
                return
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        seen = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            seen += len(message.get("body", b""))
            if seen > limit:
                await _plain_error(send, 413, too_big)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


async def _plain_error(send: Send, status: int, detail: str) -> None:
    import json

    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# -- request bodies (extra fields are refused: a typo is an error, not silently ignored) -------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=4096)


class LoginBody(_Body):
    token: str = Field(min_length=1, max_length=256)


class DecideBody(_Body):
    item: str = Field(min_length=1, max_length=65536)
    action: str = Field(max_length=32)
    label: str | None = Field(default=None, max_length=1024)
    keep: str | None = Field(default=None, max_length=4096)
    split: str | None = Field(default=None, max_length=64)
    duration_ms: int | None = None


class SubmitBody(_Body):
    assignment: int
    action: Literal["label", "skip", "unsure"]
    label: str | None = Field(default=None, max_length=1024)
    duration_ms: int | None = None


class UserBody(_Body):
    name: str = Field(max_length=64)
    role: str = Field(max_length=16)


class SettingsBody(_Body):
    overlap: int | None = None
    gold_every: int | None = None
    refit_every: int | None = None
    lease_minutes: int | None = None
    route_precision: float | None = None


class GoldItem(_Body):
    sample_id: str = Field(max_length=4096)
    label: str = Field(max_length=1024)


class GoldBody(_Body):
    items: list[GoldItem] = Field(min_length=1, max_length=1000)


class EmptyBody(_Body):
    pass


# -- the app -----------------------------------------------------------------------------------------------------


def create_app(workspace: Workspace, *, live_loop: bool = True) -> FastAPI:
    """The labelling app on ``workspace``; ``live_loop`` refits the active-learning head in the background."""
    loop = LiveLoop(workspace) if live_loop else None
    fixed_suggestions = select_suggestions(workspace) if loop is None else {}

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        if loop is not None:
            loop.start()
        try:
            yield
        finally:
            if loop is not None:
                loop.stop()

    app = FastAPI(title="curato labelling", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.add_middleware(BodyLimit, paths=mask_routes.BODY_LIMITS)
    app.state.workspace = workspace
    app.state.loop = loop

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        for name, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.url.path.startswith("/api/"):
            response.headers.setdefault("cache-control", "no-store")
        return response

    _install_error_handlers(app)

    def authenticated(request: Request) -> User:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            user = app_commands.user_for_token(workspace, header[7:].strip())
            if user is None:
                raise _HTTPError(401, "unknown or disabled token; ask an admin for a token (`curato users add`)")
            return user
        cookie = request.cookies.get(COOKIE)
        if cookie:
            found = app_commands.session_user(workspace, cookie)
            if found is not None:
                user, csrf = found
                if request.method in _UNSAFE_METHODS and not hmac.compare_digest(
                        request.headers.get("x-csrf-token", "").encode(), csrf.encode()):
                    raise _HTTPError(403, "missing or wrong X-CSRF-Token header; reload the page")
                request.state.csrf = csrf
                return user
        raise _HTTPError(401, "log in first: POST /api/login with your token, or send 'Authorization: Bearer TOKEN'")

    def role(*allowed: str) -> Callable[..., User]:
        def check(user: User = Depends(authenticated)) -> User:
            if user.role not in allowed:
                raise _HTTPError(403, f"user {user.name!r} is an {user.role}; this needs {' or '.join(allowed)}")
            return user
        return check

    anyone = Depends(authenticated)
    reviewer = Depends(role("reviewer", "admin"))
    admin = Depends(role("admin"))
    mask_loop = mask_routes.include_mask_routes(app, workspace, anyone=anyone)

    # ---- pages ----
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})

    @app.get("/login", include_in_schema=False)
    def login_page() -> FileResponse:
        return FileResponse(STATIC / "login.html", headers={"cache-control": "no-cache"})

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        path = (STATIC / name).resolve()
        if path.parent != STATIC.resolve() or not path.is_file():
            raise _HTTPError(404, "no such file")
        return FileResponse(path, headers={"cache-control": "no-cache"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    # ---- session ----
    @app.post("/api/login")
    def login(body: LoginBody, response: Response) -> dict[str, Any]:
        user = app_commands.user_for_token(workspace, body.token)
        if user is None:
            raise _HTTPError(401, "unknown or disabled token")
        secret, csrf = app_commands.open_session(workspace, user)
        response.set_cookie(COOKIE, secret, httponly=True, samesite="strict", path="/",
                            max_age=app_commands.SESSION_HOURS * 3600)
        return {"user": user.name, "role": user.role, "csrf": csrf}

    @app.post("/api/logout")
    def logout(request: Request, response: Response, user: User = anyone) -> dict[str, Any]:
        cookie = request.cookies.get(COOKIE)
        if cookie:
            app_commands.close_session(workspace, cookie)
        response.delete_cookie(COOKIE, path="/")
        return {}

    @app.get("/api/me")
    def me(request: Request, user: User = anyone) -> dict[str, Any]:
        return {"user": user.name, "role": user.role, "csrf": getattr(request.state, "csrf", None),
                "workspace": workspace.root.name, "classes": app_commands.class_names(workspace)}

    @app.get("/api/status")
    def status(user: User = anyone) -> dict[str, Any]:
        result = app_commands.app_status(workspace)
        result["loop"] = loop.snapshot() if loop is not None else {"running": False, "refits": 0}
        return result

    # ---- images ----
    @app.get("/api/image")
    def image(id: Annotated[str, Query(max_length=4096)],
              size: Annotated[int | None, Query(ge=8, le=MAX_IMAGE_SIDE)] = None, user: User = anyone) -> Response:
        uri = app_commands.sample_uri(workspace, id)
        return Response(_png(uri, size), media_type="image/png", headers={"cache-control": "private, max-age=600"})

    # ---- review ----
    @app.get("/api/review")
    def review(user: User = reviewer) -> dict[str, Any]:
        return app_commands.review_overview(workspace)

    @app.get("/api/review/{kind}")
    def review_queue(kind: str, status: str = "open", offset: Annotated[int, Query(ge=0)] = 0,
                     limit: Annotated[int, Query(ge=1, le=200)] = 1, user: User = reviewer) -> dict[str, Any]:
        return app_commands.review_items(workspace, kind, status=status, offset=offset, limit=limit)

    @app.post("/api/review/{kind}/decide")
    def review_decide(kind: str, body: DecideBody, user: User = reviewer) -> dict[str, Any]:
        return app_commands.decide(workspace, user, kind, body.item, body.action, label=body.label, keep=body.keep,
                                   split=body.split, duration_ms=body.duration_ms)

    @app.post("/api/decisions/{decision_id}/undo")
    def undo(decision_id: int, user: User = anyone) -> dict[str, Any]:
        result = app_commands.undo_decision(workspace, user, decision_id)
        if loop is not None:
            loop.notify()
        mask_loop.notify()
        return result

    # ---- labelling ----
    @app.get("/api/label/next")
    def label_next(user: User = anyone) -> dict[str, Any]:
        settings = loop.settings() if loop is not None else app_commands.read_app_settings(workspace)
        result = app_commands.next_item(workspace, user, settings,
                                        loop.suggestions() if loop is not None else fixed_suggestions)
        result["classes"] = _classes(workspace, loop)
        return result

    @app.post("/api/label/submit")
    def label_submit(body: SubmitBody, user: User = anyone) -> dict[str, Any]:
        settings = loop.settings() if loop is not None else app_commands.read_app_settings(workspace)
        if body.action == "label" and body.label is None:
            raise InputError("action label needs a label")
        result = app_commands.submit_label(workspace, user, body.assignment, body.action, label=body.label,
                                           duration_ms=body.duration_ms, settings=settings,
                                           classes=_classes(workspace, loop))
        if loop is not None and not result["duplicate"]:
            loop.notify()
        return result

    # ---- admin ----
    @app.get("/api/admin/users")
    def admin_users(user: User = admin) -> list[dict[str, Any]]:
        return app_commands.list_users(workspace)

    @app.post("/api/admin/users")
    def admin_add_user(body: UserBody, user: User = admin) -> dict[str, Any]:
        token = app_commands.add_user(workspace, body.name, body.role)
        return {"name": body.name, "role": body.role, "token": token}

    @app.get("/api/admin/settings")
    def admin_settings(user: User = admin) -> dict[str, Any]:
        return app_commands.read_app_settings(workspace).__dict__

    @app.post("/api/admin/settings")
    def admin_change_settings(body: SettingsBody, user: User = admin) -> dict[str, Any]:
        changes = body.model_dump(exclude_unset=True)
        settings = app_commands.write_app_settings(workspace, changes)
        if loop is not None:
            loop.reload_settings()
        return settings.__dict__

    @app.post("/api/admin/gold")
    def admin_gold(body: GoldBody, user: User = admin) -> dict[str, Any]:
        return {"gold": app_commands.add_gold(workspace, user, {item.sample_id: item.label for item in body.items})}

    @app.get("/api/admin/agreement")
    def admin_agreement(user: User = admin) -> dict[str, Any]:
        return app_commands.agreement(workspace, app_commands.read_app_settings(workspace))

    return app


def _classes(workspace: Workspace, loop: LiveLoop | None) -> list[str]:
    return loop.classes() if loop is not None else app_commands.class_names(workspace)


def _png(uri: str, size: int | None) -> bytes:
    from PIL import Image

    from curato.imageio import load_rgb

    array = load_rgb(uri)
    picture = Image.fromarray(array)
    longest = max(picture.size)
    target = size if size is not None else min(longest, MAX_IMAGE_SIDE)
    if longest > target:
        scale = target / longest
        picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


class _HTTPError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def _install_error_handlers(app: FastAPI) -> None:
    def answer(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)

    @app.exception_handler(_HTTPError)
    async def http_error(request: Request, error: _HTTPError) -> Response:
        if error.status == 401 and request.method == "GET" and not request.url.path.startswith("/api/"):
            return RedirectResponse("/login")
        return answer(error.status, error.detail)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
        return answer(422, f"{where}: {first.get('msg', 'malformed request')}")

    statuses: list[tuple[type[Exception], int]] = [
        (NotFoundError, 404), (ConflictError, 409), (ForbiddenError, 403), (UnreadableImageError, 404),
        (WorkspaceBusyError, 503), (InputError, 400), (WorkspaceError, 503), (CuratoError, 400)]
    for kind, status in statuses:
        def handler(_: Request, error: Exception, status: int = status) -> JSONResponse:
            return answer(status, str(error).splitlines()[0] if str(error) else type(error).__name__)
        app.add_exception_handler(kind, handler)


def serve(workspace: Workspace, *, host: str = "127.0.0.1", port: int = 8765, live_loop: bool = True) -> None:
    """Run the app with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(workspace, live_loop=live_loop), host=host, port=port, log_level="warning",
                access_log=False, timeout_graceful_shutdown=5)


__all__ = ["create_app", "serve"]
