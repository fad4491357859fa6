"""``dbperf top``: a live terminal view of where one server's time goes, in the manner of
pg_activity and top.

- :mod:`.activity`: the sessions of ``pg_stat_activity`` (one statement, with
  ``pg_blocking_pids`` only for sessions waiting on a Lock) and the blocking chains between them.
- :mod:`.window`: average active sessions over the last N seconds from cumulative counters.
- :mod:`.feed`: one thread per view: the session sampler's sample (:mod:`exporter.postgres.sampler`,
  the same integration as the ``wait_events`` collectors), then the sessions, as a :class:`~.feed.Snapshot`.
- :mod:`.frame`: a pure function from a snapshot and the view's state (sort, database, pause) to
  the lines of the screen, for any terminal size.
- :mod:`.screen`: the curses loop (keys, resize, a restored terminal on q, Ctrl-C and SIGTERM).
- :mod:`.cli`: ``dbperf top [--config FILE --target NAME | --dsn DSN] [--interval 1s] [--once]``.
"""
