#!/usr/bin/env python3
"""Walks the default audience list by following `_links.next.href` and writes the hrefs met along
the way, one per line, with their `limit` set to the page size the benchmark reads (so a wrk script
can fetch pages spread over the whole list as a client following the links would reach them).

    python3 bench/walk.py --base http://127.0.0.1:18080 --out hrefs.txt [--walk-limit 1000] [--limit 20]
"""
import argparse
import http.client
import json
import re
import urllib.parse

HEADERS = {
    "Authorization": "Bearer bench-token",
    "x-api-key": "bench",
    "x-gw-ims-org-id": "BENCH@AdobeOrg",
    "x-sandbox-name": "prod",
}
BASE_PATH = "/data/core/ups"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--walk-limit", type=int, default=1000, help="page size of the walk itself")
    ap.add_argument("--limit", type=int, default=20, help="page size written into the hrefs")
    args = ap.parse_args()
    url = urllib.parse.urlparse(args.base)
    assert url.hostname in ("127.0.0.1", "localhost"), "walk only a loopback server"
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    path = f"{BASE_PATH}/audiences?start=0&limit={args.walk_limit}"
    hrefs, seen = [], 0
    while True:
        conn.request("GET", path, headers=HEADERS)
        res = conn.getresponse()
        data = res.read()
        if res.status != 200:
            raise SystemExit(f"walk failed: {res.status} {data[:200]!r}")
        doc = json.loads(data)
        seen += len(doc["children"])
        href = doc["_links"].get("next", {}).get("href")
        if not href:
            break
        assert href.startswith("@/"), href
        path = BASE_PATH + href[1:]
        hrefs.append(re.sub(r"(^|[?&])limit=\d+", rf"\g<1>limit={args.limit}", path))
    with open(args.out, "w") as f:
        f.write("\n".join(hrefs) + "\n")
    print(f"walked {seen} audiences, {len(hrefs)} next links")


if __name__ == "__main__":
    main()
