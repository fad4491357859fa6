"""MySQL and MariaDB as a kind of target (``kind: mysql``): :mod:`.dsn` (connection strings),
:mod:`.connection` (the bounded session), :mod:`.kind` (the probe and collectors)."""
