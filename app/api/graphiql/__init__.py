"""GraphiQL served whole by Lodge: its page and every file the page loads, with no CDN.

The files are exact npm releases vendored under `static/` and pinned in `assets.PACKAGES`;
`python -m app.api.graphiql.vendor` fetches them again from the npm registry (NOTICE.md).
"""

from app.api.graphiql.assets import ASSET_PATH, GraphiQLFiles, load

__all__ = ["ASSET_PATH", "GraphiQLFiles", "load"]
