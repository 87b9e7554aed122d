#!/usr/bin/env python3
"""Seeds a tenant with audiences through the HTTP API, concurrently, and writes "id etag" lines.

    python3 bench/seed.py --base http://127.0.0.1:18080 --count 100000 --out /tmp/bench-ids.txt
"""
import argparse
import http.client
import json
import threading
import urllib.parse

HEADERS = {
    "Authorization": "Bearer bench-token",
    "x-api-key": "bench",
    "x-gw-ims-org-id": "BENCH@AdobeOrg",
    "x-sandbox-name": "prod",
    "Content-Type": "application/json",
}


def body(i: int) -> str:
    return json.dumps({
        "name": f"Seeded audience {i:06d}",
        "profileInstanceId": "ups",
        "description": "People who ordered in the last 30 days",
        "type": "SegmentDefinition",
        "expression": {"type": "PQL", "format": "pql/text", "value": f"workAddress.country = \"US\" and person.id > {i}"},
        "schema": {"name": "_xdm.context.profile"},
        "mergePolicyId": "ef006bbe-750e-4e81-85f0-0c6902192dcc",
        "evaluationInfo": {"batch": {"enabled": False}, "continuous": {"enabled": True}, "synchronous": {"enabled": False}},
        "dataGovernancePolicy": {"excludeOptOut": True},
        "labels": ["core/C1"],
        "ttlInDays": 60,
    })


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--out", required=True)
    ap.add_argument("--org", default=HEADERS["x-gw-ims-org-id"], help="the tenant's organisation")
    args = ap.parse_args()
    HEADERS["x-gw-ims-org-id"] = args.org
    url = urllib.parse.urlparse(args.base)
    assert url.hostname in ("127.0.0.1", "localhost"), "seed only a loopback server"
    lines: list[str] = []
    lock = threading.Lock()
    counter = iter(range(args.count))

    def work() -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            conn.request("POST", "/data/core/ups/audiences", body(i), HEADERS)
            res = conn.getresponse()
            data = res.read()
            if res.status != 200:
                raise SystemExit(f"seed failed: {res.status} {data[:200]!r}")
            doc = json.loads(data)
            with lock:
                lines.append(f"{doc['id']} {doc['_etag']}")

    threads = [threading.Thread(target=work) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"seeded {len(lines)} audiences")
    if len(lines) < args.count:
        # A thread that met a refusal stopped (its error is printed above): the tenant is short.
        raise SystemExit(f"seeding stopped early: {len(lines)} of {args.count}")


if __name__ == "__main__":
    main()
