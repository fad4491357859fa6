"""What the advisor lets through, before and while it sends SQL: bounded input, the kinds of
statement ``--explain`` takes, the functions ``--analyze`` may run, and secrets kept out of sight.

**Bounded input** (:func:`bound`). pglast's parser (PostgreSQL's, with a C tree walk after it)
crashes the process, with a segfault no ``try`` can catch, on trees some 20,000 levels deep (a
30,000-term sum, a 33,000-cast chain). Before any text reaches it, the text is measured with
PostgreSQL's own scanner (flat, no recursion): at most :data:`MAX_CHARS` characters,
:data:`MAX_TERMS` operators and keywords (each at most one level of tree: identifiers, constants,
parameters, commas and parentheses do not count, so long ``IN`` lists and ``VALUES`` stay fine)
and :data:`MAX_NESTING` levels of parentheses and brackets.

**--analyze** executes the statement, so it refuses, before running anything:
data-modifying statements (``INSERT``/``UPDATE``/``DELETE``/``MERGE``, data-modifying ``WITH``,
``SELECT ... FOR UPDATE/SHARE``), and every call of a function that is

- on :data:`DENIED` (by name, in any schema: signals, settings, locks, sequences, transaction
  ids, notifications, files, large objects, other connections, SQL given as text, sleeps ...), or
- ``VOLATILE`` in ``pg_proc`` (any overload of the name, in any schema), unless it is one of the
  built-in read-only ones on :data:`SAFE_VOLATILE` (``random()``, ``clock_timestamp()``, relation
  sizes, ``pg_locks``' function ...) or of :data:`SAFE_EXTENSION_VOLATILE`
  (``pg_stat_statements``), or
- a user's SQL or PL/pgSQL function whose body (read by name, then its callees', a few levels)
  calls one of the above: a ``STABLE`` wrapper does not hide ``pg_terminate_backend``.

The calls are looked for in the statement and in the plan PostgreSQL makes of it (``EXPLAIN
VERBOSE``, which nothing executes): views, rules and row-level security policies are expanded
there. Operators count too (their functions). Not seen: calls built at run time as text inside a
function (``EXECUTE format(...)``), and casts through a user's cast function; the read-only
transaction (rolled back), the statement timeout and the lock timeout still hold for those.
"""

from __future__ import annotations

import re

MAX_CHARS = 500_000
MAX_TERMS = 10_000
MAX_NESTING = 1_000

# tokens that add no level to the parse tree (names, constants, lists, grouping)
_FLAT_TOKENS = frozenset((
    "IDENT", "UIDENT", "ICONST", "FCONST", "SCONST", "USCONST", "BCONST", "XCONST", "PARAM",
    "SQL_COMMENT", "C_COMMENT", "ASCII_40", "ASCII_41", "ASCII_44", "ASCII_46", "ASCII_59", "ASCII_91", "ASCII_93",
))
_OPEN, _CLOSE = frozenset(("ASCII_40", "ASCII_91")), frozenset(("ASCII_41", "ASCII_93"))


class TooLong(ValueError):
    """The text is over one of the bounds: the message (one line) says which."""


def _scan(sql: str):
    from pglast.parser import scan

    return scan(sql)


def bound(sql: str) -> None:
    """Raise :class:`TooLong` when ``sql`` is over a bound (see the module docstring), or
    ``ValueError`` when it does not even scan."""
    if len(sql) > MAX_CHARS:
        raise TooLong(f"statement too long: {len(sql):,} characters (the limit is {MAX_CHARS:,})")
    terms = depth = deepest = 0
    for token in _scan(sql):
        name = token.name
        if name in _OPEN:
            depth += 1
            deepest = max(deepest, depth)
        elif name in _CLOSE:
            depth -= 1
        elif name not in _FLAT_TOKENS:
            terms += 1
    if terms > MAX_TERMS:
        raise TooLong(f"statement too long: {terms:,} operators and keywords (the limit is {MAX_TERMS:,})")
    if deepest > MAX_NESTING:
        raise TooLong(f"statement nested too deep: {deepest:,} levels of parentheses (the limit is {MAX_NESTING:,})")


# -- statement kinds -------------------------------------------------------------------------------
EXPLAINABLE = "SELECT, INSERT, UPDATE, DELETE, VALUES or WITH"


def first_word(sql: str) -> str:
    for token in _scan(sql):
        if token.name not in ("SQL_COMMENT", "C_COMMENT", "ASCII_40"):
            return sql[token.start:token.end + 1].upper()
    return ""


def statement_problem(raw, sql: str, analyze: bool) -> str | None:
    """Why ``--explain`` (with ``--analyze`` or not) refuses this one parsed statement, or None."""
    from pglast import ast

    from exporter.advisor.sqltree import walk

    stmt = raw.stmt
    if not isinstance(stmt, (ast.SelectStmt, ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt)):
        return f"--explain takes one {EXPLAINABLE} statement, not {first_word(sql) or 'this'}"
    if isinstance(stmt, ast.SelectStmt) and stmt.intoClause is not None:
        return f"--explain takes one {EXPLAINABLE} statement, not SELECT ... INTO (it creates a table)"
    nodes = list(walk(stmt))
    if any(isinstance(n, ast.ParamRef) for n in nodes):
        return "--explain: the statement has parameters ($1 ...): put constants in their place"
    if analyze:
        writes = [n for n in nodes if isinstance(n, (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt))
                  or type(n).__name__ == "MergeStmt"]
        locks = [n for n in nodes if isinstance(n, ast.SelectStmt) and n.lockingClause]
        if writes or locks:
            what = (type(writes[0]).__name__.removesuffix("Stmt").upper() if writes else "SELECT ... FOR UPDATE/SHARE")
            return (f"--analyze runs the statement, in a read-only transaction: {what} modifies data and is refused; "
                    "EXPLAIN it without --analyze")
    return None


# -- functions --------------------------------------------------------------------------------------
# name patterns (fnmatch-style: a trailing * matches any suffix) -> why the call is refused
DENIED = {
    "pg_terminate_backend": "it ends other sessions", "pg_cancel_backend": "it cancels other sessions' queries",
    "pg_reload_conf": "it signals the server", "pg_rotate_logfile*": "it signals the server",
    "pg_log_backend_memory_contexts": "it signals other sessions", "pg_promote": "it promotes a standby",
    "set_config": "it changes settings", "pg_advisory*": "it takes or releases advisory locks",
    "pg_try_advisory*": "it takes advisory locks", "nextval": "it advances a sequence (never rolled back)",
    "setval": "it sets a sequence (never rolled back)", "txid_current*": "it assigns a transaction id",
    "pg_current_xact_id*": "it assigns a transaction id", "pg_notify": "it sends a notification",
    "pg_sleep*": "it sleeps", "dblink*": "it runs SQL on another connection", "lo_*": "it uses large objects",
    "loread": "it uses large objects", "lowrite": "it uses large objects", "pg_file_*": "it writes server files",
    "pg_write*": "it writes server files", "pg_read_file*": "it reads server files",
    "pg_read_binary_file*": "it reads server files", "pg_ls_*": "it lists server files",
    "pg_stat_file": "it reads server files", "query_to_xml*": "it runs SQL given as text",
    "cursor_to_xml*": "it reads a cursor", "ts_stat": "it runs SQL given as text",
    "ts_rewrite": "it may run SQL given as text", "pg_switch_wal": "it switches the WAL file",
    "pg_create_restore_point": "it writes WAL", "pg_logical_*": "it uses replication slots",
    "pg_create_*replication_slot": "it creates a replication slot",
    "pg_copy_*replication_slot": "it creates a replication slot",
    "pg_drop_replication_slot": "it drops a replication slot",
    "pg_replication_origin_*": "it changes replication origins",
    "pg_replication_slot_advance": "it moves a replication slot", "pg_stat_reset*": "it resets statistics",
    "pg_stat_statements_reset": "it resets statistics", "pg_backup_*": "it starts or stops a backup",
    "pg_start_backup": "it starts a backup", "pg_stop_backup": "it stops a backup",
    "pg_wal_replay_*": "it pauses or resumes recovery", "pg_export_snapshot": "it exports a snapshot",
    "pg_import_system_collations": "it creates collations", "binary_upgrade_*": "it is for pg_upgrade",
    "pg_stop_making_pinned_objects": "it is for initdb", "brin_*summarize*": "it changes an index",
    "gin_clean_pending_list": "it changes an index", "setseed": "it changes the session's random seed",
}
_DENIED = [(re.compile(re.escape(p).replace(r"\*", ".*") + r"\Z"), why) for p, why in DENIED.items()]

# volatile in pg_proc, but read-only: allowed when they are pg_catalog's own
SAFE_VOLATILE = frozenset((
    "random", "random_normal", "clock_timestamp", "timeofday", "gen_random_uuid", "uuidv4", "uuidv7",
    "pg_relation_size", "pg_table_size", "pg_indexes_size", "pg_total_relation_size", "pg_database_size",
    "pg_tablespace_size", "pg_is_in_recovery", "pg_current_wal_lsn", "pg_current_wal_flush_lsn",
    "pg_current_wal_insert_lsn", "pg_last_wal_receive_lsn", "pg_last_wal_replay_lsn",
    "pg_last_xact_replay_timestamp", "pg_is_wal_replay_paused", "pg_get_wal_replay_pause_state",
    "pg_blocking_pids", "pg_safe_snapshot_blocking_pids", "pg_lock_status", "pg_prepared_xact",
    "pg_sequence_last_value", "pg_partition_tree", "pg_partition_ancestors", "pg_notification_queue_usage",
    "pg_jit_available", "pg_xact_status", "txid_status", "pg_xact_commit_timestamp", "pg_last_committed_xact",
    "pg_stat_get_xact_blocks_fetched", "pg_stat_get_xact_blocks_hit", "pg_stat_get_xact_numscans",
    "pg_stat_get_xact_tuples_fetched", "pg_stat_get_xact_tuples_returned", "pg_stat_get_xact_tuples_inserted",
    "pg_stat_get_xact_tuples_updated", "pg_stat_get_xact_tuples_deleted", "pg_stat_get_xact_tuples_hot_updated",
    "pg_stat_get_xact_function_calls", "pg_stat_get_xact_function_total_time",
    "pg_stat_get_xact_function_self_time", "pg_stat_have_stats", "pg_get_multixact_members",
    "pg_collation_actual_version", "pg_database_collation_actual_version", "current_query",
    "pg_control_checkpoint", "pg_control_init", "pg_control_recovery", "pg_control_system",
    "pg_get_backend_memory_contexts", "pg_get_shmem_allocations", "pg_current_logfile",
    "pg_show_all_file_settings", "pg_hba_file_rules", "pg_ident_file_mappings",
))
SAFE_EXTENSION_VOLATILE = frozenset((("pg_stat_statements", "pg_stat_statements"),
                                     ("pg_stat_statements", "pg_stat_statements_info"),
                                     ("uuid-ossp", "uuid_generate_v1"), ("uuid-ossp", "uuid_generate_v1mc"),
                                     ("uuid-ossp", "uuid_generate_v4"), ("pgcrypto", "gen_random_uuid"),
                                     ("pgcrypto", "gen_random_bytes")))
BODY_LEVELS = 4   # how deep user functions' bodies are followed
MAX_NAMES = 2000  # names looked up in all (a bound on the catalog queries)

PROCS_SQL = """
SELECT p.proname, p.provolatile, n.nspname, l.lanname IN ('sql', 'plpgsql') AND n.nspname <> 'pg_catalog',
       CASE WHEN l.lanname IN ('sql', 'plpgsql') THEN p.prosrc END,
       (SELECT e.extname FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
        WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e' LIMIT 1),
       o.oprname
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang
LEFT JOIN pg_operator o ON o.oprcode = p.oid AND o.oprname = ANY(%(operators)s)
WHERE p.proname = ANY(%(names)s) OR o.oid IS NOT NULL
"""


def denied(name: str) -> str | None:
    for pattern, why in _DENIED:
        if pattern.match(name):
            return why
    return None


_UESCAPE = re.compile(r"\\(?:\+([0-9A-Fa-f]{6})|([0-9A-Fa-f]{4}))")


def _name(text: str) -> str:
    """The name a (quoted, Unicode-escaped) identifier token stands for."""
    unicode = text[:2] in ("U&", "u&")
    if unicode:
        text = text[2:]
    if not text.startswith('"'):
        return text.lower()
    body = text[1:-1].replace('""', '"')
    if unicode:  # the default escape character only; a UESCAPE clause is rare enough to miss
        body = _UESCAPE.sub(lambda m: chr(min(int(m.group(1) or m.group(2), 16), 0x10FFFF)), body)
    return body


def calls(sql: str) -> tuple[set, set]:
    """(function names, operator symbols) that ``sql`` (a statement, a plan's expression, a
    function body) may call: every name right before ``(``, and every operator. Over-approximate
    (``IN (``, ``AS t(a)`` are names here too: what pg_proc does not know is dropped)."""
    try:
        tokens = _scan(sql)
    except Exception:  # an expression the scanner refuses: its words, all of them
        return {w.lower() for w in re.findall(r"[^\W\d][\w$]*(?=\s*\()", sql)}, set()
    names, operators = set(), set()
    for i, token in enumerate(tokens):
        text = sql[token.start:token.end + 1]
        nxt = tokens[i + 1].name if i + 1 < len(tokens) else ""
        if nxt == "ASCII_40" and (token.name in ("IDENT", "UIDENT") or token.kind != "NO_KEYWORD"):
            names.add(_name(text))
        elif token.name == "Op" or (token.name.startswith("ASCII_") and token.name not in _FLAT_TOKENS) \
                or token.name in ("LESS_EQUALS", "GREATER_EQUALS", "NOT_EQUALS"):
            operators.add(text)
    return names, operators


def plan_strings(node):
    """Every string in an EXPLAIN (FORMAT JSON) document (keys excluded), without recursion."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, str):
            yield current
        elif isinstance(current, dict):
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)


def refused_call(conn, sql: str, plan=None) -> str | None:
    """The first call in ``sql`` or its ``plan`` that ``--analyze`` refuses, as one line, or None."""
    names, operators = calls(sql)
    for text in plan_strings(plan):
        more_names, more_ops = calls(text)
        names |= more_names
        operators |= more_ops
    seen: set = set()
    via: dict = {}  # callee -> the user function whose body calls it
    for level in range(BODY_LEVELS + 2):
        names -= seen
        for name in sorted(names):
            why = denied(name)
            if why:
                return _refusal(name, why, via)
        if (not names and not operators) or level > BODY_LEVELS:
            return None
        seen |= names
        if len(seen) > MAX_NAMES:
            return f"--analyze: refused: the statement calls more than {MAX_NAMES} functions to check"
        rows = conn.execute(PROCS_SQL, {"names": sorted(names), "operators": sorted(operators)}).fetchall()
        operators = set()
        found: set = set()
        for proname, volatile, schema, user_code, body, extension, operator in rows:
            why = denied(proname)
            if why:
                return _refusal(proname, why, via, operator)
            if volatile == "v" and not (schema == "pg_catalog" and proname in SAFE_VOLATILE) \
                    and (extension, proname) not in SAFE_EXTENSION_VOLATILE:
                return _refusal(proname, "it is VOLATILE (it may change something)", via, operator)
            if user_code and body:
                inner, _ = calls(body)
                for callee in inner - seen:
                    via.setdefault(callee, proname)
                found |= inner
        names = found
    return None


def _refusal(name: str, why: str, via: dict, operator: str | None = None) -> str:
    chain, current = [], name
    while current in via and len(chain) < BODY_LEVELS + 1:
        current = via[current]
        chain.append(f"{current}()")
    where = f" (called by {', called by '.join(chain)})" if chain else ""
    what = f"operator {operator} (function {name}())" if operator else f"{name}()"
    return (f"--analyze runs the statement: it calls {what}{where}, refused because {why}; "
            "EXPLAIN it without --analyze")


# -- secrets ---------------------------------------------------------------------------------------
PLACEHOLDER = "'<redacted>'"


def carries_secret(sql: str) -> str | None:
    """The redacted form of ``sql`` when it carries a secret (see exporter.instrument.redact), else None."""
    from exporter.instrument.redact import redact_secrets

    return redact_secrets(sql)


def mask_literals(sql: str) -> str:
    """``sql`` with every literal (in either reading of standard_conforming_strings) replaced by
    ``'<redacted>'`` and comments dropped: still SQL, with nothing of a literal left."""
    from exporter.instrument.sqllex import both_readings_masked

    return both_readings_masked(sql, PLACEHOLDER)


def mask_plan(node):
    """An EXPLAIN (FORMAT JSON) document with the literals of every string masked."""
    if isinstance(node, str):
        return mask_literals(node) if ("'" in node or "$" in node) else node
    if isinstance(node, dict):
        return {k: mask_plan(v) for k, v in node.items()}
    if isinstance(node, list):
        return [mask_plan(v) for v in node]
    return node
