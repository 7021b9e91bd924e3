"""The sources view: each source's name and how to send it events. Write keys are secrets and
are never shown: the snippets carry a placeholder the reader replaces with their own key."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from runtime.rules import Rules

KEY_PLACEHOLDER = "<WRITE_KEY>"


def snippets(edge_url: str) -> dict[str, str]:
    """Setup snippets for analytics.js, analytics-python, analytics-node and curl."""
    edge = edge_url.rstrip("/")
    parts = urlsplit(edge)
    api_host = f"{parts.netloc}{parts.path}/v1"
    protocol = parts.scheme or "https"
    key = KEY_PLACEHOLDER
    event = json.dumps(
        {"userId": "user-1", "event": "Order Completed", "properties": {"revenue": 9.5}}
    )
    return {
        "analytics.js": (
            "import { AnalyticsBrowser } from '@segment/analytics-next'\n\n"
            "// settings come from the edge: {cdn}/v1/projects/<WRITE_KEY>/settings\n"
            "export const analytics = AnalyticsBrowser.load(\n"
            f"  {{ writeKey: '{key}', cdnURL: '{edge}' }},\n"
            f"  {{ integrations: {{ 'Segment.io': {{ apiHost: '{api_host}', "
            f"protocol: '{protocol}' }} }} }}\n"
            ")\n"
            "analytics.track('Order Completed', { revenue: 9.5 })"
        ),
        "analytics-python": (
            "import segment.analytics as analytics\n\n"
            f"analytics.write_key = '{key}'\n"
            f"analytics.host = '{edge}'\n"
            "analytics.track('user-1', 'Order Completed', {'revenue': 9.5})\n"
            "analytics.flush()"
        ),
        "analytics-node": (
            "import { Analytics } from '@segment/analytics-node'\n\n"
            f"const analytics = new Analytics({{ writeKey: '{key}', host: '{edge}' }})\n"
            "analytics.track({ userId: 'user-1', event: 'Order Completed', "
            "properties: { revenue: 9.5 } })"
        ),
        "curl": (
            f"curl -u '{key}:' -H 'Content-Type: application/json' \\\n"
            f"  -d '{event}' \\\n"
            f"  {edge}/v1/track"
        ),
    }


def sources_view(rules: Rules, edge_url: str) -> dict[str, Any]:
    """Source names (the warehouse schema each loads into) and the snippets; no write key."""
    return {
        "sources": [
            {
                "name": s.name,
                "schema": s.name,
                "write_keys": len(s.write_keys),
                "rate_limit_per_s": s.rate_limit_per_s,
            }
            for s in rules.sources
        ],
        "edge_url": edge_url.rstrip("/"),
        "snippets": snippets(edge_url),
    }
