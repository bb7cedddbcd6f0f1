"""A stand-in Alertmanager webhook receiver: prints one line per alert it is sent.

Replace it with a real receiver; it exists so the Compose stack shows an alert
travelling all the way from corral to a notification.
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        for alert in body.get("alerts", []):
            labels = alert.get("labels", {})
            summary = alert.get("annotations", {}).get("summary", "")
            print(f"{alert.get('status')}: {labels.get('alertname')} {summary}", flush=True)
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()


if __name__ == "__main__":
    HTTPServer(("0.0.0.0", 5001), Handler).serve_forever()
