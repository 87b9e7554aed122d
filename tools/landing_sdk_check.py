#!/usr/bin/env python3
"""A real Azure client against the landing zones: the official Azure Storage SDK for Python
(azure-storage-blob, pinned in tools/requirements.txt) talks to a running server exactly as it
would to Azure, from the SASUri that Adobe's credentials endpoint hands out.

It uploads a small blob (one Put Blob) and a large one (Put Block + Put Block List, forced with
small single-put and block sizes), lists with a prefix, a delimiter and paging, downloads both
(the large one in ranged chunks), reads properties, refuses an overwrite when asked, deletes, and
checks that a tampered token is refused. It repeats the essentials through a host name instead of
an IP address (the SDK parses such URLs differently), and finally ingests an uploaded CSV with an
AIS run, from nothing to SUCCESS.

Usage: tools/.venv/bin/python tools/landing_sdk_check.py http://127.0.0.1:PORT
Exit status 0 when every check holds.
"""

import json
import os
import socket
import sys
import time
import urllib.parse

import requests
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.storage.blob import ContainerClient

BASE = sys.argv[1].rstrip("/") if len(sys.argv) > 1 else "http://127.0.0.1:8080"
HEADERS = {
    "Authorization": "Bearer sdk-check-token",
    "x-api-key": "sdk-check",
    "x-gw-ims-org-id": "1BD6382559DF0C130A49422D@AdobeOrg",
    "x-sandbox-name": "sdk-check",
}
# A host name that only this process resolves (to the server's address): the SDK parses URLs of
# host names differently from those of IP addresses and localhost.
HOSTNAME = "landing-zone.test"


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"  ok  {what}")


def api(method, path, body=None):
    res = requests.request(method, BASE + path, headers=HEADERS, json=body, timeout=30)
    if res.status_code >= 300:
        raise AssertionError(f"{method} {path}: {res.status_code} {res.text}")
    return res.json()


def credentials():
    return api("GET", "/data/foundation/connectors/landingzone/credentials?type=user_drop_zone")


def container(sas_uri, **kwargs):
    # Small sizes so a few MiB already go through blocks and ranged downloads.
    return ContainerClient.from_container_url(
        sas_uri,
        max_single_put_size=1024 * 1024,
        max_block_size=256 * 1024,
        max_single_get_size=512 * 1024,
        max_chunk_get_size=256 * 1024,
        **kwargs,
    )


def blob_operations(client, prefix):
    small = b"ppid,list_id\nalice@example.com,l1\n"
    large = bytes((i * 7 + i // 251) % 256 for i in range(3 * 1024 * 1024 + 12345))

    sent = []
    hook = lambda request: sent.append(request.http_request.url)  # noqa: E731
    client.upload_blob(f"{prefix}/small.csv", small, overwrite=True, raw_request_hook=hook)
    check(not any("comp=block" in u for u in sent), "a small upload is one Put Blob")

    sent.clear()
    result = client.get_blob_client(f"{prefix}/nested/large.bin").upload_blob(
        large, overwrite=True, max_concurrency=2, raw_request_hook=hook
    )
    blocks = [u for u in sent if "comp=block&" in u or u.endswith("comp=block")]
    check(len(blocks) >= 12, f"a large upload goes through Put Block ({len(blocks)} blocks)")
    check(any("comp=blocklist" in u for u in sent), "and one Put Block List")

    props = client.get_blob_client(f"{prefix}/nested/large.bin").get_blob_properties()
    check(props.size == len(large), "Get Blob Properties: the size")
    check(props.etag == result["etag"], "Get Blob Properties: the etag Put Block List answered")
    check(props.blob_type == "BlockBlob", "Get Blob Properties: a block blob")

    names = [b.name for b in client.list_blobs(name_starts_with=f"{prefix}/")]
    check(names == [f"{prefix}/nested/large.bin", f"{prefix}/small.csv"], f"List Blobs: {names}")
    top = [b.name for b in client.walk_blobs(name_starts_with=f"{prefix}/", delimiter="/")]
    check(top == [f"{prefix}/nested/", f"{prefix}/small.csv"], f"List Blobs with a delimiter: {top}")
    pages = list(client.list_blobs(name_starts_with=f"{prefix}/", results_per_page=1).by_page())
    paged = [[b.name for b in page] for page in pages]
    check(paged == [[f"{prefix}/nested/large.bin"], [f"{prefix}/small.csv"]], f"paging: {paged}")

    check(client.download_blob(f"{prefix}/small.csv").readall() == small, "Get Blob: small")
    check(client.download_blob(f"{prefix}/nested/large.bin").readall() == large,
          "Get Blob: large, in ranged chunks")
    part = client.download_blob(f"{prefix}/nested/large.bin", offset=1000, length=5000).readall()
    check(part == large[1000:6000], "Get Blob: a range")

    try:
        client.upload_blob(f"{prefix}/small.csv", b"other", overwrite=False)
        check(False, "an overwrite refused")
    except ResourceExistsError as e:
        check(e.error_code == "BlobAlreadyExists", "overwrite=False on an existing blob: BlobAlreadyExists")

    client.delete_blob(f"{prefix}/small.csv")
    client.delete_blob(f"{prefix}/nested/large.bin")
    try:
        client.get_blob_client(f"{prefix}/small.csv").get_blob_properties()
        check(False, "a deleted blob is gone")
    except ResourceNotFoundError:
        check(True, "a deleted blob is gone (HEAD 404)")
    try:
        client.download_blob(f"{prefix}/small.csv").readall()
        check(False, "a deleted blob cannot be downloaded")
    except ResourceNotFoundError as e:
        check(e.error_code == "BlobNotFound", "Get Blob of a deleted blob: BlobNotFound")
    left = [b.name for b in client.list_blobs(name_starts_with=f"{prefix}/")]
    check(left == [], "nothing left after the deletes")


def tampered(sas_uri):
    url = urllib.parse.urlsplit(sas_uri)
    query = urllib.parse.parse_qs(url.query)
    query["sp"] = ["r"]
    bad = url._replace(query=urllib.parse.urlencode(query, doseq=True)).geturl()
    try:
        ContainerClient.from_container_url(bad).upload_blob("x.csv", b"x", overwrite=True)
        check(False, "a tampered token is refused")
    except (ClientAuthenticationError, HttpResponseError) as e:
        check(e.status_code == 403 and e.error_code == "AuthenticationFailed",
              f"a tampered token: 403 AuthenticationFailed ({e.status_code} {e.error_code})")


def through_hostname(sas_uri):
    url = urllib.parse.urlsplit(sas_uri)
    address, port = url.hostname, url.port
    original = socket.getaddrinfo

    def resolve(host, *args, **kwargs):
        return original(address if host == HOSTNAME else host, *args, **kwargs)

    socket.getaddrinfo = resolve
    try:
        named = url._replace(netloc=f"{HOSTNAME}:{port}").geturl()
        client = container(named)
        check(client.account_name is None, "a host name: the SDK sees no account name, as documented")
        blob_operations(client, "sdk-hostname")
    finally:
        socket.getaddrinfo = original


def ingest(client):
    rows = "".join(f"user{i}@example.com,l{i % 3}\n" for i in range(250))
    client.upload_blob("DLZ/sdk/members.csv", "ppid,list_id\n" + rows, overwrite=True)
    accepted = api("POST", "/data/core/ais/external-audience/", {
        "name": f"SDK check {time.time_ns()}",
        "fields": [{"name": "ppid", "type": "string", "identityNs": "email"},
                   {"name": "list_id", "type": "string"}],
        "sourceSpec": {"params": {"path": "sdk/members.csv", "type": "file",
                                  "sourceType": "Cloud Storage"}},
        "originName": "CUSTOM_UPLOAD",
    })
    deadline = time.time() + 60
    while True:
        op = api("GET", f"/data/core/ais/external-audience/operations/{accepted['operationId']}")
        if op["status"] != "PROCESSING":
            break
        check(time.time() < deadline, "the creation operation ends")
        time.sleep(0.3)
    check(op["status"] == "SUCCESS", f"external audience created: {op['status']}")
    audience = op["audienceId"]
    run = api("POST", f"/data/core/ais/external-audience/{audience}/runs", {"dataFilterStartTime": 0})
    while True:
        got = api("GET", f"/data/core/ais/external-audience/{audience}/runs/{run['runId']}")
        if got["status"] != "PROCESSING":
            break
        check(time.time() < deadline, "the run ends")
        time.sleep(0.3)
    check(got["status"] == "SUCCESS", f"the run over the uploaded file: {got['status']} {json.dumps(got)[:300]}")
    check(got["details"][1]["profilesStored"] == 250, "250 profiles stored")
    client.delete_blob("DLZ/sdk/members.csv")


def main():
    creds = credentials()
    sas_uri = creds["SASUri"]
    print(f"landing zone {creds['storageAccountName']}, SASUri host {urllib.parse.urlsplit(sas_uri).netloc}")
    client = container(sas_uri)
    blob_operations(client, "sdk-ip")
    tampered(sas_uri)
    through_hostname(sas_uri)
    ingest(client)
    refreshed = api("POST", "/data/foundation/connectors/landingzone/credentials?type=user_drop_zone&action=refresh")
    try:
        container(sas_uri).upload_blob("after-refresh.csv", b"x", overwrite=True)
        check(False, "a refreshed-away token is refused")
    except (ClientAuthenticationError, HttpResponseError) as e:
        check(e.status_code == 403, "after a refresh the old token answers 403")
    container(refreshed["SASUri"]).upload_blob("after-refresh.csv", b"x", overwrite=True)
    container(refreshed["SASUri"]).delete_blob("after-refresh.csv")
    check(True, "the new token works")
    print("landing-zone SDK check: all passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"landing-zone SDK check FAILED: {e}", file=sys.stderr)
        sys.exit(1)
