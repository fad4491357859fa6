-- Runs once, when the postgres container initialises its data directory (docker-entrypoint-initdb.d).
-- Demo passwords: change them (and the DSNs in docker-compose.yml) for anything but a laptop.
CREATE ROLE dbperf LOGIN PASSWORD 'dbperf';
GRANT pg_monitor TO dbperf;
CREATE ROLE shop LOGIN PASSWORD 'shop';
CREATE DATABASE shop OWNER shop;
-- pg_stat_statements is preloaded by the container's command line; the extension makes it readable
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
\connect shop
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
