"""Pure ASGI middleware (Starlette, FastAPI, any ASGI app). Not BaseHTTPMiddleware: it wraps
``send`` so the clock stops when the last body chunk goes out (``more_body`` false), background
tasks excluded, and streaming responses are timed to their end.

The ``handler`` label is the route template the framework matched, read from ``scope["route"]``
after dispatch (Starlette's router writes it into the shared scope). Requests no route matched are
``<unmatched>``. The in-progress gauge is counted when scraped: a request already routed counts under
its template, one not routed yet under a match of the application's top-level routes (a mounted
sub-application under its mount path). In multi-process mode the gauge is updated per request, with
that match made before dispatch and cached per (method, path) in a bounded table."""

from __future__ import annotations

from .core import UNMATCHED, Instrumentation, _current

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
        self.excluded_paths = instrumentation.excluded_paths
        self._prematch: dict = {}
        # the SQL comments' framework tag, found at the first request (None: not yet)
        self.framework: str | None = None if instrumentation.sql_comments is not None else ""

    def _framework_of(self, scope) -> str:
        """The framework of the application this middleware serves: the top-level package of
        ``scope["app"]`` (``fastapi``, ``starlette``), ``""`` when the server sets none."""
        app = scope.get("app")
        self.framework = type(app).__module__.partition(".")[0] if app is not None else ""
        return self.framework

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

    def handler_of(self, state) -> str:
        """The handler of a request being served (``RequestState.resolver`` protocol): the
        template of the matched route once routing is done, else a match of the top-level routes."""
        scope = state.source
        return route_template(scope) if scope.get("route") is not None else self._pre_handler(scope)

    def _finish(self, state, status: int, exception: BaseException | None = None) -> None:
        state.handler = route_template(state.source)
        state.resolver = None
        self.inst.finish_request(state, status, exception)

    # The per-request path below is kept short on purpose (bench/instrument.py): bound methods
    # taken once, the route template read once at the end, nothing resolved before dispatch.
    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in self.excluded_paths:
            await self.app(scope, receive, send)
            return
        inst = self.inst
        framework = self.framework
        if framework is None:
            framework = self._framework_of(scope)
        state, token = inst.start_request(scope["method"], UNMATCHED, self, scope, framework)
        finish = inst.finish_request
        status = 500
        done = False

        async def wrapped_send(message):
            nonlocal status, done
            kind = message["type"]
            if kind == "http.response.body":
                if not done and not message.get("more_body", False):
                    await send(message)
                    done = True
                    state.handler = route_template(scope)
                    state.resolver = None
                    finish(state, status)
                    return
            elif kind == "http.response.start":
                status = message["status"]
                if inst.server_timing:
                    headers = list(message.get("headers", ()))
                    headers.append((b"server-timing", inst.server_timing_value(state).encode()))
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, wrapped_send)
        except BaseException as exc:
            _current.reset(token)
            if not done:
                done = True
                self._finish(state, 500, exc)
            else:
                # The response went out already (e.g. ServerErrorMiddleware sent a 500, or a
                # background task failed): count the exception only.
                inst.http_exceptions.labels(state.handler, type(exc).__name__).inc()
            raise
        _current.reset(token)
        if not done:  # the app returned without finishing its response
            done = True
            self._finish(state, status)
