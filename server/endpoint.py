"""One wrapper between Starlette and every protocol handler.

A handler is `async (request, services[, principal]) -> Response`: it returns its answer or
raises. The wrapper finds the services, authenticates the caller once when the route needs
one, and renders a known failure (`server.errors`) with the protocol's renderer, so that each
API answers failures in its own shape. Anything else is a bug and reaches the app's
500 handler, which logs it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from . import errors
from .auth import Principal
from .errors import Problem
from .request_log import SCOPE_PROBLEM, SCOPE_USER, note
from .services import Services, services_of

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Services], Awaitable[Response]]
UserHandler = Callable[[Request, Services, Principal], Awaitable[Response]]
# A protocol's wire shape for a failure: the problem found for `exc`.
Render = Callable[[Request, Services, Problem, Exception], Awaitable[Response]]
# Checks a protocol makes before it asks who the caller is (its version header, for instance):
# they raise to refuse the request; what they return is not used.
Check = Callable[[Request], object]


def json_problem(problem: Problem, **extra: Any) -> JSONResponse:
    """The plain shape: `{"error": message, "code": code}` with the problem's status and headers."""
    return JSONResponse({"error": problem.message, "code": problem.code, **extra}, problem.status, problem.headers)


async def render_json(request: Request, services: Services, problem: Problem, exc: Exception) -> Response:
    return json_problem(problem)


class Endpoints:
    """Makes a protocol's endpoints: one renderer, and headers every answer of it carries.

    `renders_bugs`: the protocol promises its own shape even for a bug (the renderer gets
    `errors.INTERNAL_ERROR` and the exception, and must log it)."""

    def __init__(self, render: Render, *, headers: Mapping[str, str] | None = None, renders_bugs: bool = False):
        self.render, self.headers, self.renders_bugs = render, dict(headers or {}), renders_bugs

    def authenticated(self, handler: UserHandler, *, check: Check | None = None) -> Endpoint:
        async def call(request: Request, services: Services) -> Response:
            if check is not None:
                check(request)
            principal = services.auth.authenticate(request)
            note(request.scope, SCOPE_USER, principal.user_id)
            return await handler(request, services, principal)

        return self._wrap(call)

    def public(self, handler: Handler, *, check: Check | None = None) -> Endpoint:
        async def call(request: Request, services: Services) -> Response:
            if check is not None:
                check(request)
            return await handler(request, services)

        return self._wrap(call)

    def _wrap(self, call: Handler) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            services = services_of(request)
            try:
                response = await call(request, services)
            except errors.KNOWN as exc:
                problem = errors.problem_for(exc, services.retry_after_seconds)
                assert problem is not None
                note(request.scope, SCOPE_PROBLEM, problem.code)
                response = await self.render(request, services, problem, exc)
            except Exception as exc:
                if not self.renders_bugs:
                    raise
                response = await self.render(request, services, errors.INTERNAL_ERROR, exc)
            response.headers.update(self.headers)
            return response

        return endpoint
