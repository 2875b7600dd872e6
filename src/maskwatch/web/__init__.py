"""The web app of `maskwatch serve`: page, dashboard and HTTP API (needs the web extra)."""
