"""The server's log as metrics (``server_log:`` of a target): a reader thread per target follows
PostgreSQL's log (a local file or directory, or remotely through ``pg_read_file``), parses its
entries (jsonlog, csvlog, stderr with a known ``log_line_prefix``) and turns them into bounded
counters (``pg_log_*``) and small rings of events (``/events``).

- :mod:`.records`: framing (where an entry ends) and parsing of the three formats into :class:`Entry`.
- :mod:`.prefix`: ``log_line_prefix`` as a regular expression (stderr).
- :mod:`.tally`: entries -> counters, histograms and events (every label bounded).
- :mod:`.follow`: the local follower (rotation, truncation, restart-safe offsets) and the remote one.
- :mod:`.reader`: the thread, its rate limit and its state file.
- :mod:`.collector`: the ``server_log`` collector that renders the reader's state at scrape time.
- :mod:`.events`: the ``/events`` private endpoint.
"""
