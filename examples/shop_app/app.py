"""The shop application. ``create_app(dsn)`` returns a FastAPI app serving:

- ``GET /products``                      list products (one statement)
- ``GET /products/{product_id}``         one product (404 when missing)
- ``GET /customers/{customer_id}/orders`` orders with their products, a deliberate N+1
- ``GET /slow``                          a pg_sleep(0.6) statement, slower than both thresholds
- ``GET /fail``                          a statement on a missing table: 500
- ``GET /healthz``                       not measured
- ``/metrics``                           the app's own metrics; ``/debug/slowlog`` with a token

It logs on the ``examples.shop`` logger: a warning for a missing product, an error (with the
exception) for ``/fail``. ``app_from_env`` installs the library's log handler, which counts them
(``app_log_messages_total``) and keeps the last ones in the slow log.
"""

from __future__ import annotations

import logging
import os

from fastapi import FastAPI, HTTPException
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

from exporter.instrument import Instrumentation, PrometheusMiddleware

log = logging.getLogger("examples.shop")

SCHEMA = """
CREATE TABLE IF NOT EXISTS products (id serial PRIMARY KEY, name text NOT NULL, price numeric(10,2) NOT NULL);
CREATE TABLE IF NOT EXISTS customers (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE IF NOT EXISTS orders (id serial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers,
                                   product_id int NOT NULL REFERENCES products, quantity int NOT NULL,
                                   created_at timestamptz NOT NULL DEFAULT now())
"""


def sqlalchemy_url(dsn: str) -> URL:
    """A SQLAlchemy URL (psycopg 3 driver) from a postgresql:// URL or a libpq key=value string."""
    if "://" in dsn:
        url = make_url(dsn)
        return url.set(drivername="postgresql+psycopg")
    from psycopg.conninfo import conninfo_to_dict

    parts = conninfo_to_dict(dsn)
    query = {k: str(v) for k, v in parts.items() if k not in ("user", "password", "host", "port", "dbname")}
    port = parts.get("port")
    return URL.create("postgresql+psycopg", username=parts.get("user"), password=parts.get("password"),
                      host=parts.get("host"), port=int(port) if port else None, database=parts.get("dbname"),
                      query=query)


def setup_schema(engine) -> None:
    """Create the tables and some rows if they are missing (safe with several workers)."""
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(4242)"))
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(text(statement))
        if conn.execute(text("SELECT count(*) FROM products")).scalar() == 0:
            conn.execute(text("INSERT INTO products (name, price) SELECT 'product ' || i, i * 1.5 "
                              "FROM generate_series(1, 20) i"))
            conn.execute(text("INSERT INTO customers (name) SELECT 'customer ' || i FROM generate_series(1, 5) i"))
            conn.execute(text("INSERT INTO orders (customer_id, product_id, quantity) "
                              "SELECT c, 1 + (c * 7 + o) % 20, 1 + o % 3 "
                              "FROM generate_series(1, 5) c, generate_series(1, 8) o"))


def create_app(dsn: str, instrumentation: Instrumentation | None = None, *, pool_size: int = 5,
               max_overflow: int = 5, pool_timeout: float = 10.0, slowlog_token: str | None = None,
               create_schema: bool = True) -> FastAPI:
    # sql_comments: each statement names its route in a comment (the Queries dashboard's DB load by route)
    inst = instrumentation or Instrumentation(server_timing=True, sql_comments=True, application="shop")
    engine = create_engine(sqlalchemy_url(dsn), pool_size=pool_size, max_overflow=max_overflow,
                           pool_timeout=pool_timeout)
    inst.instrument_sqlalchemy(engine, pool="shop")
    if create_schema:
        setup_schema(engine)

    app = FastAPI(title="shop")
    app.state.engine = engine
    app.state.instrumentation = inst
    app.add_middleware(PrometheusMiddleware, instrumentation=inst)
    app.add_route("/metrics", inst.metrics_asgi_app())
    if slowlog_token:
        app.add_route("/debug/slowlog", inst.slowlog_asgi_app(slowlog_token))

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    @app.get("/products")
    def list_products():
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, name, price FROM products ORDER BY id")).all()
        return [{"id": r.id, "name": r.name, "price": float(r.price)} for r in rows]

    @app.get("/products/{product_id}")
    def get_product(product_id: int):
        with engine.connect() as conn:
            row = conn.execute(text("SELECT id, name, price FROM products WHERE id = :id"),
                               {"id": product_id}).first()
        if row is None:
            log.warning("product %s not found", product_id)
            raise HTTPException(404, f"product {product_id} not found")
        return {"id": row.id, "name": row.name, "price": float(row.price)}

    @app.get("/customers/{customer_id}/orders")
    def customer_orders(customer_id: int):
        # Deliberate N+1: one statement for the orders, then one per order for its product.
        with engine.connect() as conn:
            orders = conn.execute(text("SELECT id, product_id, quantity FROM orders WHERE customer_id = :c "
                                       "ORDER BY id"), {"c": customer_id}).all()
            result = []
            for order in orders:
                product = conn.execute(text("SELECT name, price FROM products WHERE id = :id"),
                                       {"id": order.product_id}).one()
                result.append({"order": order.id, "product": product.name, "quantity": order.quantity})
        return result

    @app.get("/slow")
    def slow():
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_sleep(0.6)"))
        return {"slept": 0.6}

    @app.get("/fail")
    def fail():
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT * FROM no_such_table"))
        except Exception:
            log.exception("listing failed")
            raise
        return {}

    @app.get("/hold")
    def hold(seconds: float = 1.0):
        """Keeps a pooled connection busy for ``seconds`` (for pool exhaustion demos)."""
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_sleep(:s)"), {"s": min(seconds, 10.0)})
        return {"held": seconds}

    return app


def app_from_env() -> FastAPI:
    """For ``uvicorn --factory examples.shop_app.app:app_from_env``: DSN from SHOP_DSN."""
    dsn = os.environ.get("SHOP_DSN")
    if not dsn:
        raise SystemExit("SHOP_DSN is not set: export SHOP_DSN=postgresql://user@host/dbname")
    app = create_app(dsn, slowlog_token=os.environ.get("SHOP_SLOWLOG_TOKEN"))
    app.state.instrumentation.install_log_handler()
    return app
