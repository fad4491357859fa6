"""python -m examples.shop_app --dsn DSN [--host 127.0.0.1] [--port 8000] [--slowlog-token T]"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.shop_app", description=__doc__)
    parser.add_argument("--dsn", required=True, help="PostgreSQL DSN (postgresql://... or key=value)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--slowlog-token", default=None, help="enables /debug/slowlog with this token")
    args = parser.parse_args(argv)
    import uvicorn

    from .app import create_app

    try:
        app = create_app(args.dsn, slowlog_token=args.slowlog_token)
    except Exception as exc:  # bad DSN, database down: one clear line
        print(f"shop_app: cannot start: {type(exc).__name__}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    app.state.instrumentation.install_log_handler()  # app_log_messages_total, last errors in the slow log
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
