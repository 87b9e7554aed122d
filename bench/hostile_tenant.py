#!/usr/bin/env python3
"""A hostile tenant for bench/hostile.sh: runs every bounded attack of issue #8 in a loop against
one server, in its own organisation, and counts the answers per attack.

    python3 bench/hostile_tenant.py --base http://127.0.0.1:18080 --setup --work /tmp/hostile
    python3 bench/hostile_tenant.py --base http://127.0.0.1:18080 --duration 20 --work /tmp/hostile

`--setup` prepares what the loop reuses (a parent audience, big audiences for the page budget, an
external audience whose landing zone holds a 100 MB CSV with an unbalanced quote near its start)
and writes it to `<work>/state.json`. The loop then attacks from several threads until the
duration is over and prints one JSON line of counts: {"attack": {"2xx": n, "4xx": n, "5xx": n,
"503": n, "error": n}}. Only loopback servers are attacked.
"""
import argparse
import http.client
import json
import os
import random
import threading
import time
import urllib.parse
import uuid

ORG = "HOSTILE@AdobeOrg"
SANDBOX = "attack"


def headers(sandbox: str = SANDBOX, org: str = ORG) -> dict:
    return {
        "Authorization": "Bearer hostile-token",
        "x-api-key": "hostile",
        "x-gw-ims-org-id": org,
        "x-sandbox-name": sandbox,
        "Content-Type": "application/json",
    }


class Client:
    """One keep-alive connection; reconnects after errors."""

    def __init__(self, base: str):
        url = urllib.parse.urlparse(base)
        assert url.hostname in ("127.0.0.1", "localhost"), "attack only a loopback server"
        self.host, self.port = url.hostname, url.port
        self.conn = None

    def call(self, method: str, path: str, body=None, hdrs=None, timeout=30):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        try:
            self.conn.request(method, path, body, hdrs or headers())
            res = self.conn.getresponse()
            data = res.read()
            return res.status, data, res
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = None
            return None, b"", None


UPS = "/data/core/ups/audiences"
AIS = "/data/core/ais/external-audience"
ZONE = "/data/foundation/connectors/landingzone/credentials?type=user_drop_zone"


def expression(refs) -> dict:
    value = " or ".join(f'inSegment("{r}")' for r in refs)
    return {"type": "PQL", "format": "pql/text", "value": value}


# --- payloads, built once: the attacker shares the machine with the server, so its own CPU goes
# to sending bytes, not to building them -------------------------------------------------------
LONG_NAME = json.dumps({"name": "".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(20_000))})
LONG_NAMESPACE = json.dumps({"name": "n", "namespace": "n" * 9_000, "audienceId": "x"})
LONG_ORG = "O" * 8_000 + "@AdobeOrg"
MANY_REFERENCES = json.dumps({"name": "refs", "expression": {
    "type": "PQL", "format": "pql/text",
    "value": " or ".join(f'inSegment("{uuid.uuid4()}")' for _ in range(40_000))}})
DEEP = "[" * 20_000 + "]" * 20_000
TOO_BIG = json.dumps({"name": "big", "blob": "x" * (2 * 1024 * 1024)})
AUDIENCE_TOO_BIG = json.dumps({"name": "big", "blob": "x" * (1800 * 1024)})
TOO_MANY_LABELS = json.dumps({"name": "labels", "labels": [f"l{i}" for i in range(5000)]})
TOO_MANY_OPS = json.dumps([{"op": "test", "path": "/name", "value": "n"}] * 500)
AMPLIFY = json.dumps([{"op": "add", "path": "/x", "value": [1]}]
                     + [{"op": "copy", "from": "/x", "path": "/x/-"}] * 22)
DOUBLE = json.dumps([{"op": "add", "path": "/a", "value": "x" * 1000}] + [
    op for _ in range(19) for op in (
        {"op": "copy", "from": "/a", "path": "/b"},
        {"op": "add", "path": "/t", "value": []},
        {"op": "move", "from": "/a", "path": "/t/-"},
        {"op": "move", "from": "/b", "path": "/t/-"},
        {"op": "move", "from": "/t", "path": "/a"})])
TOO_MANY_IDS = json.dumps({"ids": [str(uuid.uuid4()) for _ in range(101)]})


# --- attacks: each makes one or a few requests and returns their statuses -----------------------

def patch_amplification(c: Client, state: dict):
    return [c.call("PATCH", f"{UPS}/{state['victim']}", AMPLIFY)[0]]


def doubling_patch(c: Client, state: dict):
    # Each round makes /a = [a, a] through a second name: the size doubles per five operations.
    return [c.call("PATCH", f"{UPS}/{state['victim']}", DOUBLE)[0]]


def long_strings(c: Client, state: dict):
    out = [c.call("POST", UPS, LONG_NAME)[0]]
    out.append(c.call("POST", UPS, LONG_NAMESPACE)[0])
    out.append(c.call("GET", f"{UPS}?limit=1", hdrs=headers(org=LONG_ORG))[0])
    return out


def many_references(c: Client, state: dict):
    return [c.call("POST", UPS, MANY_REFERENCES)[0]]


def deep_json(c: Client, state: dict):
    return [c.call("POST", UPS, DEEP)[0]]


def big_bodies(c: Client, state: dict):
    out = [c.call("POST", UPS, TOO_BIG)[0]]
    out.append(c.call("POST", UPS, AUDIENCE_TOO_BIG)[0])
    out.append(c.call("POST", UPS, TOO_MANY_LABELS)[0])
    out.append(c.call("PATCH", f"{UPS}/{state['victim']}", TOO_MANY_OPS)[0])
    return out


def wide_reads(c: Client, state: dict):
    ids = [{"id": random.choice(state["big"])} for _ in range(100)]
    out = [c.call("POST", f"{UPS}/bulk-get", {"ids": ids})[0]]
    out.append(c.call("GET", f"{UPS}?limit=1000&sort=name:asc")[0])
    out.append(c.call("POST", f"{UPS}/bulk-get", TOO_MANY_IDS)[0])
    return out


def sandbox_minting(c: Client, state: dict):
    name = f"mint-{uuid.uuid4().hex[:20]}"
    return [c.call("GET", f"{UPS}?limit=1", hdrs=headers(sandbox=name))[0]]


def dependency_races(c: Client, state: dict):
    parent = state["parent"]
    status, data, _ = c.call("POST", UPS, {"name": f"child {uuid.uuid4()}", "expression": expression([parent])})
    out = [status]
    if status == 200:
        child = json.loads(data)["id"]
        out.append(c.call("PATCH", f"{UPS}/{child}", [{"op": "add", "path": "/description", "value": "d"}])[0])
        out.append(c.call("DELETE", f"{UPS}/{parent}")[0])  # refused: a child is alive
        out.append(c.call("DELETE", f"{UPS}/{child}")[0])
    return out


def ingestion(c: Client, state: dict):
    # A run over the 100 MB file whose quote never closes: fails at the record bound; once the
    # guardrails are reached, 422.
    ext = state.get("external")
    if not ext:
        return []
    return [c.call("POST", f"{AIS}/{ext}/runs", {"dataFilterStartTime": 0})[0]]


ATTACKS = [patch_amplification, doubling_patch, long_strings, many_references, deep_json,
           big_bodies, wide_reads, sandbox_minting, dependency_races, ingestion]


# --- setup -----------------------------------------------------------------------------------

def must(status, data, what):
    if status is None or status >= 300:
        raise SystemExit(f"setup: {what} answered {status}: {data[:300]!r}")
    return json.loads(data) if data else None


def write_bad_csv(path: str, size: int) -> None:
    """A CSV of `size` bytes whose second line opens a quote that never closes."""
    with open(path, "wb") as f:
        f.write(b"ppid,list_id\n\"a@example.com,l1\n")
        chunk = b"user@example.com,list\n" * 4096
        written = 0
        while written < size:
            f.write(chunk)
            written += len(chunk)


def setup(base: str, work: str) -> None:
    c = Client(base)
    os.makedirs(work, exist_ok=True)
    victim = must(*c.call("POST", UPS, {"name": "victim"})[:2], "victim")["id"]
    parent = must(*c.call("POST", UPS, {"name": "parent"})[:2], "parent")["id"]
    big = []
    for i in range(40):
        doc = must(*c.call("POST", UPS, {"name": f"big {i:03d}", "blob": "y" * 250_000})[:2], "big")
        big.append(doc["id"])
    # The landing zone gets the bad file; the external audience reads it.
    creds = must(*c.call("GET", ZONE)[:2], "credentials")
    sas = urllib.parse.urlparse(creds["SASUri"])
    path = os.path.join(work, "unbalanced.csv")
    write_bad_csv(path, 100 * 1024 * 1024)
    up = http.client.HTTPConnection(sas.hostname, sas.port, timeout=300)
    with open(path, "rb") as f:
        up.request("PUT", f"{sas.path}/DLZ/hostile/unbalanced.csv?{creds['SASToken']}", f,
                   {"x-ms-blob-type": "BlockBlob", "Content-Length": str(os.path.getsize(path))})
        res = up.getresponse()
        res.read()
        if res.status != 201:
            raise SystemExit(f"setup: upload answered {res.status}")
    os.remove(path)
    body = {
        "name": f"hostile {uuid.uuid4().hex[:8]}",
        "fields": [{"name": "ppid", "type": "string", "identityNs": "email"},
                   {"name": "list_id", "type": "string"}],
        "sourceSpec": {"params": {"path": "hostile/unbalanced.csv", "type": "file",
                                  "sourceType": "Cloud Storage", "cloudType": "DLZ"}},
        "originName": "CUSTOM_UPLOAD",
    }
    op = must(*c.call("POST", AIS, body)[:2], "external audience")["operationId"]
    external = None
    for _ in range(600):
        doc = must(*c.call("GET", f"{AIS}/operations/{op}")[:2], "operation")
        if doc["status"] == "SUCCESS":
            external = doc["audienceId"]
            break
        if doc["status"] == "FAILED":
            raise SystemExit(f"setup: operation failed: {doc}")
        time.sleep(0.1)
    state = {"victim": victim, "parent": parent, "big": big, "external": external}
    with open(os.path.join(work, "state.json"), "w") as f:
        json.dump(state, f)
    print(json.dumps(state))


# --- the loop --------------------------------------------------------------------------------

def attack(base: str, work: str, duration: float, threads: int, only: str = "") -> None:
    attacks = [a for a in ATTACKS if not only or a.__name__ in only.split(",")]
    with open(os.path.join(work, "state.json")) as f:
        state = json.load(f)
    counts: dict = {a.__name__: {"2xx": 0, "4xx": 0, "429": 0, "5xx": 0, "503": 0, "error": 0} for a in attacks}
    lock = threading.Lock()
    stop_at = time.monotonic() + duration

    def work_loop(offset: int) -> None:
        c = Client(base)
        i = offset
        while time.monotonic() < stop_at:
            fn = attacks[i % len(attacks)]
            i += 1
            statuses = fn(c, state)
            with lock:
                row = counts[fn.__name__]
                for s in statuses:
                    if s is None:
                        row["error"] += 1
                    elif s == 503:
                        row["503"] += 1
                    elif s == 429:
                        row["429"] += 1
                    elif s >= 500:
                        row["5xx"] += 1
                    elif s >= 400:
                        row["4xx"] += 1
                    else:
                        row["2xx"] += 1

    pool = [threading.Thread(target=work_loop, args=(n * 3,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    # The attacker's own CPU seconds: it runs on the server's machine, so they are load too.
    print(json.dumps({"counts": counts, "cpu_seconds": round(time.process_time(), 1)}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--setup", action="store_true")
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--only", default="", help="comma-separated attack names (default: all)")
    args = ap.parse_args()
    if args.setup:
        setup(args.base, args.work)
    else:
        attack(args.base, args.work, args.duration, args.threads, args.only)


if __name__ == "__main__":
    main()
