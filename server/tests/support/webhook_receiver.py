"""A webhook receiver for the tests: verifies every request with the Standard
Webhooks project's reference library (PyPI `standardwebhooks`), answers 500 to the
first FAIL_FIRST attempts of each message, then 204, and appends one JSON line per
request to LOG.

Usage: webhook_receiver.py SECRET_FILE LOG FAIL_FIRST   (prints the port it listens on)
The secret is read from SECRET_FILE on each request (the test writes it after it
creates the webhook, which needs the receiver's URL first).
"""

import json
import sys
from collections import Counter
from http.server import BaseHTTPRequestHandler, HTTPServer

from standardwebhooks.webhooks import Webhook

SECRET_FILE, LOG, FAIL_FIRST = sys.argv[1], sys.argv[2], int(sys.argv[3])
seen = Counter()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k: v for k, v in self.headers.items()}
        try:
            with open(SECRET_FILE) as f:
                secret = f.read().strip()
            payload = Webhook(secret).verify(body, headers)
            ok, error = True, None
        except Exception as e:  # any failure is recorded, and answered 400
            payload, ok, error = None, False, repr(e)
        msg_id = headers.get("webhook-id") or headers.get("Webhook-Id")
        seen[msg_id] += 1
        status = 400 if not ok else (500 if seen[msg_id] <= FAIL_FIRST else 204)
        with open(LOG, "a") as f:
            f.write(json.dumps({"id": msg_id, "verified": ok, "error": error,
                                "attempt": seen[msg_id], "answered": status,
                                "payload": payload}) + "\n")
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
