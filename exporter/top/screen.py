"""The curses loop of ``dbperf top``: draws :func:`~.frame.render` on every refresh of the feed
and on every key, and restores the terminal however it ends (q, Ctrl-C, SIGTERM, an error).

Keys: ``s`` cycles the sort (duration, database, wait), ``d`` the database filter (all, then each
database seen), ``p`` pauses (the screen keeps its data; sampling goes on, so the load stays
right), up/down and page up/down scroll the sessions, ``q`` quits."""

from __future__ import annotations

import curses
import locale
import os
import signal

from exporter.top.frame import View, databases_of, render

KEY_WAIT_MS = 100  # how often keys are read (the screen is drawn only when something changed)
STYLE_ATTRS = {"": 0, "title": curses.A_REVERSE, "header": curses.A_BOLD, "error": curses.A_BOLD}


class Terminated(Exception):
    """SIGTERM: leave the loop like q."""


def _terminate(_signum, _frame):
    raise Terminated()


def run(feed, interval: float) -> int:
    locale.setlocale(locale.LC_ALL, "")
    for name in ("LINES", "COLUMNS"):  # curses would take these over the terminal's own size
        os.environ.pop(name, None)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        curses.wrapper(_loop, feed, interval)
    except (KeyboardInterrupt, Terminated):
        pass  # curses.wrapper has restored the terminal
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def draw(stdscr, lines) -> None:
    stdscr.erase()
    height, width = stdscr.getmaxyx()
    for y, (style, text) in enumerate(lines[:height]):
        try:  # the bottom-right cell cannot be written without an error: the last column stays empty
            stdscr.addnstr(y, 0, text, max(0, width - 1), STYLE_ATTRS.get(style, 0))
        except curses.error:
            pass
    stdscr.refresh()


def _loop(stdscr, feed, interval: float) -> None:
    try:
        curses.curs_set(0)
    except curses.error:
        pass
    stdscr.timeout(KEY_WAIT_MS)
    view = View()
    shown = feed.snapshot
    dirty = True
    while True:
        if feed.changed.is_set():
            feed.changed.clear()
            if not view.paused:
                shown, dirty = feed.snapshot, True
        if dirty:
            height, width = stdscr.getmaxyx()
            draw(stdscr, render(shown, view, width, height, interval))
            dirty = False
        key = stdscr.getch()
        if key == -1:
            continue
        dirty = True
        if key in (ord("q"), ord("Q")):
            return
        if key == ord("s"):
            view.cycle_sort()
        elif key == ord("d"):
            view.cycle_database(databases_of(shown))
        elif key == ord("p"):
            view.paused = not view.paused
            shown = feed.snapshot
        elif key in (curses.KEY_DOWN, ord("j")):
            view.offset += 1
        elif key in (curses.KEY_UP, ord("k")):
            view.offset = max(0, view.offset - 1)
        elif key == curses.KEY_NPAGE:
            view.offset += max(1, stdscr.getmaxyx()[0] // 2)
        elif key == curses.KEY_PPAGE:
            view.offset = max(0, view.offset - max(1, stdscr.getmaxyx()[0] // 2))
