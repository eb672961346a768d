"""DuckDB's own sandbox on every connection raysweep opens: what a query may reach is the sweep dirs."""

from __future__ import annotations


def sql_literal(text) -> str:
    """A string as a SQL literal, quotes doubled: for the statements DuckDB takes no parameters in
    (a view's file list, ATTACH, SET)."""
    return "'" + str(text).replace("'", "''") + "'"


def lock_down(con, allowed_dirs: list) -> None:
    """No file or network access beyond `allowed_dirs` (external access off, those dirs allowed), no extension
    autoload or autoinstall, and the configuration locked, so no later statement can undo any of it. Run it
    after the connection has attached or opened what it needs."""
    allowed = ", ".join(sql_literal(str(d).rstrip("/") + "/") for d in allowed_dirs)
    con.execute(f"SET allowed_directories = [{allowed}]")
    for setting in ("enable_external_access", "autoload_known_extensions", "autoinstall_known_extensions"):
        con.execute(f"SET {setting} = false")
    con.execute("SET lock_configuration = true")
