#!/usr/bin/env python3
"""Checks what can be checked of the container files without a Docker engine: the compose file
parses and wires the server to a healthy database, and the Dockerfile builds the way the README
says a release build is made."""
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
