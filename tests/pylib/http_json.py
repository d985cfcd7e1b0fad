"""http_json — what the HTTP tests share: one request on an http.client connection (plain or
TLS), its answer parsed as JSON when it is JSON."""

import json


def exchange(conn, method, path, body=None, headers=None):
    """(status, parsed JSON or text) of one request on conn, which is closed after; a dict or list
    body goes as JSON."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read().decode()
    conn.close()
    try:
        return r.status, json.loads(data)
    except ValueError:
        return r.status, data
