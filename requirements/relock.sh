#!/bin/sh
# Re-pin the runtime dependencies of pyproject.toml, every file's sha256, into
# requirements/gateway.lock: what the Pi installs with pip --require-hashes
# (docs/operations.md, "Install"). Run after a change to [project] dependencies;
# needs pip-tools (pip install pip-tools). The local pip configuration (wheel
# folders, constraints) is left out so the lock names the
# files of pip's default index.
set -eu
cd "$(dirname "$0")/.."
env -u PIP_FIND_LINKS -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null \
    pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url \
    --output-file requirements/gateway.lock pyproject.toml
