#!/usr/bin/env python3
"""Checks what can be checked of the container files without a Docker engine: the compose file
parses and wires the server to a healthy database, the "fleet" profile runs several replicas behind
nginx within the database's connections, every setting it passes is a documented one, and the
Dockerfile builds the way the README says a release build is made."""
import pathlib
import re
import sys

try:
    import yaml
except ImportError:  # installed on demand so CI needs nothing by hand
    import subprocess
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "pyyaml"])
    import yaml

root = pathlib.Path(__file__).resolve().parent.parent
problems = []

compose = yaml.safe_load((root / "docker-compose.yml").read_text())
services = compose.get("services", {})
db, server = services.get("db"), services.get("server")
if not db or not server:
    problems.append("docker-compose.yml needs services 'db' and 'server'")
else:
    image = db.get("image", "")
    m = re.match(r"postgres:(\d+)", image)
    if not m or int(m.group(1)) < 15:
        problems.append(f"db image must be PostgreSQL 15 or newer, got {image!r}")
    if "healthcheck" not in db:
        problems.append("db needs a healthcheck")
    if server.get("depends_on", {}).get("db", {}).get("condition") != "service_healthy":
        problems.append("server must wait for db to be healthy")
    if server.get("build", {}).get("dockerfile") != "Dockerfile":
        problems.append("server must be built from ./Dockerfile")
    env = server.get("environment", {})
    if "@db:5432" not in env.get("DATABASE_URL", ""):
        problems.append("server's DATABASE_URL must point at the db service")

readme_text = (root / "README.md").read_text()
# Every variable in the README's configuration table (rows that start with | `NAME` |).
documented = set(re.findall(r"^\| `([A-Z_]+)` \|", readme_text, re.M))


def settings_of(name, service):
    env = service.get("environment", {})
    for key in env:
        if key not in documented:
            problems.append(f"{name} sets {key}, which the README's configuration table does not list")
    return env


def as_int(value, default):
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def seconds(value):
    m = re.fullmatch(r"(\d+)s", str(value or ""))
    return int(m.group(1)) if m else None


if server:
    settings_of("server", server)

# The fleet profile: replicas behind nginx.
replica, proxy = services.get("replica"), services.get("proxy")
if not replica or not proxy:
    problems.append("docker-compose.yml needs services 'replica' and 'proxy' (profile 'fleet')")
else:
    for name, svc in (("replica", replica), ("proxy", proxy)):
        if svc.get("profiles") != ["fleet"]:
            problems.append(f"{name} must be in the 'fleet' profile only")
    env = settings_of("replica", replica)
    count = as_int(replica.get("deploy", {}).get("replicas"), 1)
    if count < 2:
        problems.append("the fleet needs deploy.replicas of at least 2")
    if replica.get("build", {}).get("dockerfile") != "Dockerfile":
        problems.append("replica must be built from ./Dockerfile")
    if "@db:5432" not in env.get("DATABASE_URL", ""):
        problems.append("replica's DATABASE_URL must point at the db service")
    if replica.get("depends_on", {}).get("db", {}).get("condition") != "service_healthy":
        problems.append("replica must wait for db to be healthy")
    if replica.get("ports"):
        problems.append("replicas publish no port: traffic goes through the proxy")
    if "/ready" not in " ".join(replica.get("healthcheck", {}).get("test", [])):
        problems.append("replica's healthcheck must ask /ready")
    if server and replica.get("volumes") != server.get("volumes"):
        problems.append("replicas and server must share the same landing volume")
    grace = as_int(env.get("SHUTDOWN_GRACE_SECS"), 30) + as_int(env.get("SHUTDOWN_DELAY_SECS"), 0)
    stop = seconds(replica.get("stop_grace_period"))
    if stop is None or stop <= grace:
        problems.append(
            f"replica's stop_grace_period must exceed SHUTDOWN_DELAY_SECS + SHUTDOWN_GRACE_SECS ({grace}s)"
        )
    # Sizing: every pool within PostgreSQL's max_connections, leaving 3 superuser and 5 spare.
    command = " ".join(db.get("command", [])) if db else ""
    m = re.search(r"max_connections=(\d+)", command)
    max_connections = int(m.group(1)) if m else 100
    # Each process opens its HTTP pool and, when it runs the worker, the worker's own pool.
    def connections(environment):
        worker = str(environment.get("WORKER_ENABLED", "true")).lower() != "false"
        return as_int(environment.get("DB_POOL_SIZE"), 16) + (
            as_int(environment.get("WORKER_DB_POOL_SIZE"), 4) if worker else 0
        )

    pools = count * connections(env)
    if server:
        pools += connections(server.get("environment", {}))
    if pools > max_connections - 8:
        problems.append(
            f"pools need {pools} connections; db allows {max_connections} (keep 8 spare)"
        )
    if not proxy.get("image", "").startswith("nginx:"):
        problems.append("proxy must be nginx")
    if proxy.get("depends_on", {}).get("replica", {}).get("condition") != "service_healthy":
        problems.append("proxy must wait for healthy replicas")
    if not proxy.get("ports"):
        problems.append("proxy must publish a port")
    mounts = [v.split(":") for v in proxy.get("volumes", [])]
    configs = [root / m[0] for m in mounts if len(m) >= 2 and m[1].startswith("/etc/nginx/")]
    if not configs or not all(c.exists() for c in configs):
        problems.append("proxy must mount an nginx configuration that exists in the repository")
    for conf in configs:
        text = conf.read_text() if conf.exists() else ""
        if text.count("{") != text.count("}"):
            problems.append(f"{conf.name}: unbalanced braces")
        upstreams = dict(re.findall(r"upstream\s+(\w+)\s*\{([^}]*)\}", text))
        target = re.search(r"proxy_pass\s+http://(\w+)\s*;", text)
        if not target or target.group(1) not in upstreams:
            problems.append(f"{conf.name}: proxy_pass must name an upstream block")
        elif "replica:8080" not in upstreams[target.group(1)]:
            problems.append(f"{conf.name}: the upstream must be the replica service on 8080")
        if "non_idempotent" in text:
            problems.append(f"{conf.name}: never retry non-idempotent requests (a write could apply twice)")

dockerfile = (root / "Dockerfile").read_text()
readme = (root / "README.md").read_text()
build = "cargo build --release --locked"
if len(re.findall(r"^FROM ", dockerfile, re.M)) < 2:
    problems.append("Dockerfile must be multi-stage")
if f"RUN {build}" not in dockerfile:
    problems.append(f"Dockerfile must build with `{build}`")
if build not in readme:
    problems.append(f"README must give the same release build command `{build}`")
for path in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.M):
    for part in path.split():
        if not (root / part).exists():
            problems.append(f"Dockerfile copies {part}, which does not exist")

if problems:
    print("deployment files:\n  " + "\n  ".join(problems))
    sys.exit(1)
print("deployment files: ok")
