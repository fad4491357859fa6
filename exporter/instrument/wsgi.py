"""WSGI middleware (any WSGI app) and the Flask integration.

The clock stops when the server closes the response iterable (after the last chunk went out).
``handler`` comes from, in order: a framework hook that sets it during the request (Flask:
``request.url_rule.rule``), else ``resolve(environ)`` if given (cached per method and path), else
``<unmatched>``. The in-progress gauge, counted when scraped, asks ``resolve(environ)`` for requests
whose handler is not known yet (multi-process mode: before dispatch, per request)."""

from __future__ import annotations

from .core import UNMATCHED, Instrumentation, current_request

_PREMATCH_CACHE = 4096


class _Closing:
    """The app's response iterable; records the request when the server closes it."""

    __slots__ = ("_result", "_finish")

    def __init__(self, result, finish):
        self._result = result
        self._finish = finish

    def __iter__(self):
        return iter(self._result)

    def close(self):
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._finish()


class WSGIMiddleware:
    """``app.wsgi_app = WSGIMiddleware(app.wsgi_app, inst)`` (Flask: use ``instrument_flask``).

    ``resolve``: ``environ -> route template or None``, for apps without a routing hook;
    ``framework``: the framework tag of the SQL comments (``sql_comments=True``)."""

    def __init__(self, app, instrumentation: Instrumentation, resolve=None, framework: str | None = None):
        if not isinstance(instrumentation, Instrumentation):
            raise TypeError("WSGIMiddleware needs an Instrumentation(...) as its second argument")
        self.app = app
        self.inst = instrumentation
        self.resolve = resolve
        self.framework = framework
        self._prematch: dict = {}

    def _pre_handler(self, environ) -> str:
        if self.resolve is None:
            return UNMATCHED
        key = (environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", ""))
        found = self._prematch.get(key)
        if found is None:
            found = self.resolve(environ) or UNMATCHED
            if len(self._prematch) >= _PREMATCH_CACHE:
                self._prematch.clear()
            self._prematch[key] = found
        return found

    def handler_of(self, state) -> str:
        """The handler of a request being served (``RequestState.resolver`` protocol)."""
        return self._pre_handler(state.source)

    def __call__(self, environ, start_response):
        inst = self.inst
        if environ.get("PATH_INFO", "") in inst.excluded_paths:
            return self.app(environ, start_response)
        state, token = inst.start_request(environ.get("REQUEST_METHOD", "GET"), UNMATCHED, self, environ,
                                          self.framework)
        status = [500]

        def wrapped_start_response(status_line, headers, exc_info=None):
            status[0] = int(status_line[:3])
            if inst.server_timing:
                headers = list(headers)
                headers.append(("Server-Timing", inst.server_timing_value(state)))
            return start_response(status_line, headers, exc_info)

        finished = []

        def finish(exc=None):
            if finished:
                return
            finished.append(True)
            if state.resolver is not None:  # no framework hook named the route: ask resolve()
                state.handler = self._pre_handler(environ)
                state.resolver = None
            inst.finish_request(state, 500 if exc is not None else status[0], exc)
            try:
                inst.end_context(token)
            except ValueError:  # closed from another context/thread: nothing to restore there
                pass

        try:
            result = self.app(environ, wrapped_start_response)
        except BaseException as exc:
            finish(exc)
            raise
        return _Closing(result, finish)


def flask_resolver(flask_app):
    """``environ -> rule template`` from a Flask app's URL map (None when nothing matches)."""
    def resolve(environ):
        try:
            rule, _ = flask_app.url_map.bind_to_environ(environ).match(return_rule=True)
            return rule.rule
        except Exception:  # NotFound, MethodNotAllowed, RequestRedirect
            return None
    return resolve


def instrument_flask(flask_app, instrumentation: Instrumentation):
    """Wrap a Flask app: middleware around ``wsgi_app``, ``handler`` = ``request.url_rule.rule``,
    exceptions Flask turns into 500 responses counted by type. Returns the app."""
    import flask

    flask_app.wsgi_app = WSGIMiddleware(flask_app.wsgi_app, instrumentation, resolve=flask_resolver(flask_app),
                                       framework="flask")

    def on_started(sender, **extra):
        state = current_request()
        if state is not None:
            rule = flask.request.url_rule
            state.handler = rule.rule if rule is not None else UNMATCHED
            state.resolver = None  # known now: no resolve() needed

    def on_exception(sender, exception, **extra):
        state = current_request()
        if state is not None:
            state.exception = exception

    flask.request_started.connect(on_started, flask_app, weak=False)
    flask.got_request_exception.connect(on_exception, flask_app, weak=False)
    return flask_app
