"""Pure ASGI middleware (Starlette, FastAPI, any ASGI app). Not BaseHTTPMiddleware: it wraps
``send`` so the clock stops when the last body chunk goes out (``more_body`` false), background
tasks excluded, and streaming responses are timed to their end.

The ``handler`` label is the route template the framework matched, read from ``scope["route"]``
after dispatch (Starlette's router writes it into the shared scope). Requests no route matched are
``<unmatched>``. The in-progress gauge needs a handler before dispatch: it is resolved by matching
the application's top-level routes (a mounted sub-application counts under its mount path), cached
per (method, path) in a bounded table."""

from __future__ import annotations

from .core import UNMATCHED, Instrumentation

_PREMATCH_CACHE = 4096


def route_template(scope) -> str:
    """The template of the route matched for ``scope`` after dispatch, or ``<unmatched>``."""
    route = scope.get("route")
    path = getattr(route, "path", None) if route is not None else None
    if path is None:
        return UNMATCHED
    # Inside a Mount, root_path grew by the mount prefix: put it back in front.
    root = scope.get("root_path", "")
    app_root = scope.get("app_root_path", root)
    if len(root) > len(app_root) and root.startswith(app_root):
        return root[len(app_root):] + path
    return path


class PrometheusMiddleware:
    """``app.add_middleware(PrometheusMiddleware, instrumentation=inst)`` or
    ``PrometheusMiddleware(asgi_app, instrumentation=inst)``."""

    def __init__(self, app, instrumentation: Instrumentation):
        if not isinstance(instrumentation, Instrumentation):
            raise TypeError("PrometheusMiddleware needs instrumentation=Instrumentation(...)")
        self.app = app
        self.inst = instrumentation
        self._prematch: dict = {}

    def _pre_handler(self, scope) -> str:
        key = (scope["method"], scope["path"])
        found = self._prematch.get(key)
        if found is not None:
            return found
        handler = UNMATCHED
        app = scope.get("app")
        routes = getattr(getattr(app, "router", None), "routes", None) or getattr(app, "routes", None) or ()
        for route in routes:
            try:
                match, _ = route.matches(scope)
            except Exception:  # a route type that cannot match this scope
                continue
            if match.name == "FULL":
                handler = getattr(route, "path", UNMATCHED)
                break
        if len(self._prematch) >= _PREMATCH_CACHE:
            self._prematch.clear()
        self._prematch[key] = handler
        return handler

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in self.inst.excluded_paths:
            await self.app(scope, receive, send)
            return
        inst = self.inst
        pre = self._pre_handler(scope)
        state, token = inst.start_request(scope["method"], pre)
        status = 500
        done = False

        async def wrapped_send(message):
            nonlocal status, done
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
                if inst.server_timing:
                    headers = list(message.get("headers", ()))
                    headers.append((b"server-timing", inst.server_timing_value(state).encode()))
                    message = {**message, "headers": headers}
            elif kind == "http.response.body" and not message.get("more_body", False) and not done:
                await send(message)
                done = True
                state.handler = route_template(scope)
                inst.finish_request(state, status, in_progress_handler=pre)
                return
            await send(message)

        try:
            await self.app(scope, receive, wrapped_send)
        except BaseException as exc:
            inst.end_context(token)
            if not done:
                done = True
                state.handler = route_template(scope)
                inst.finish_request(state, 500, exc, in_progress_handler=pre)
            else:
                # The response went out already (e.g. ServerErrorMiddleware sent a 500, or a
                # background task failed): count the exception only.
                inst.http_exceptions.labels(state.handler, type(exc).__name__).inc()
            raise
        inst.end_context(token)
        if not done:  # the app returned without finishing its response
            state.handler = route_template(scope)
            inst.finish_request(state, status, in_progress_handler=pre)
