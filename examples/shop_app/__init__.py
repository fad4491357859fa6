"""A small shop: FastAPI + SQLAlchemy + PostgreSQL, instrumented with exporter.instrument.

    python -m examples.shop_app --dsn postgresql://user@localhost/shop --port 8000
    uvicorn --factory examples.shop_app.app:app_from_env   (DSN in SHOP_DSN)
"""
