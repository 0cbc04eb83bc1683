"""What the Pi is installed and started from (docs/operations.md): the lock of
the runtime dependencies (every one of pyproject.toml's, pinned, with hashes)
and the systemd units in deploy/systemd (the commands they start are the
project's, as the guide lays the Pi out)."""

from __future__ import annotations

import configparser
import re
import shlex
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from liftcard_gateway import cli
from liftcard_gateway.__main__ import main as gateway_main
from liftcard_gateway.config import load_config

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "gateway.lock"
UNITS = REPO / "deploy" / "systemd"
GUIDE = (REPO / "docs" / "operations.md").read_text()
ETC_CONFIG = "/etc/liftcard/gateway.toml"  # where the guide puts the config


def lock_pins() -> dict:
    """name -> (version, [sha256...]) of the lock's requirements."""
    pins, current = {}, None
    for line in LOCK.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)", line)
        if m:
            current = canonicalize_name(m.group(1))
            pins[current] = (m.group(2), [])
            continue
        for h in re.findall(r"--hash=sha256:([0-9a-f]+)", line):
            assert current is not None and len(h) == 64, line
            pins[current][1].append(h)
    return pins


def test_the_lock_pins_every_runtime_dependency_with_hashes():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = lock_pins()
    assert pins
    for name, (version, hashes) in pins.items():
        assert hashes, "%s has no hash: pip --require-hashes would refuse the lock" % name
    for dep in deps:
        req = Requirement(dep)
        name = canonicalize_name(req.name)
        assert name in pins, "%s (pyproject.toml) is not in %s: run requirements/relock.sh" % (req.name, LOCK.name)
        assert Version(pins[name][0]) in req.specifier, "%s==%s does not meet %s" % (name, pins[name][0], dep)


def test_the_guide_installs_from_the_lock():
    assert "pip install --require-hashes -r /opt/liftcard/requirements/gateway.lock" in GUIDE
    assert "pip install --no-deps /opt/liftcard" in GUIDE


def unit(name: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # systemd's keys are case-sensitive
    cp.read_string((UNITS / name).read_text())
    return cp


@pytest.mark.parametrize("name", ["liftcard-broker.service", "liftcard-gateway.service"])
def test_units_run_as_liftcard_and_are_in_the_guide(name):
    u = unit(name)
    assert u["Service"]["User"] == "liftcard" and u["Service"]["Group"] == "liftcard"
    assert u["Install"]["WantedBy"] == "multi-user.target"
    assert "deploy/systemd/%s" % name in GUIDE


def test_gateway_unit_starts_the_daemon_after_the_liftcard_broker_not_mosquitto_service():
    u = unit("liftcard-gateway.service")
    ordering = " ".join(u["Unit"].get(k, "") for k in ("After", "Wants", "Requires", "BindsTo")).split()
    assert "liftcard-broker.service" in u["Unit"]["After"].split()
    assert "mosquitto.service" not in ordering  # the guide disables that one
    argv = shlex.split(u["Service"]["ExecStart"])
    exe = Path(argv[0])
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert exe.name in scripts and scripts[exe.name] == "liftcard_gateway.__main__:main"
    assert str(exe.parent) == "/opt/liftcard/.venv/bin" and "/opt/liftcard/.venv" in GUIDE
    args = cli.parser().parse_args(argv[1:])
    assert (args.cmd, args.config) == ("run", ETC_CONFIG)
    assert "/var/lib/liftcard" in u["Service"]["ReadWritePaths"].split()  # init's default data_dir


def test_broker_unit_starts_mosquitto_on_the_rendered_config_and_reloads_it(tmp_path, capsys):
    u = unit("liftcard-broker.service")
    argv = shlex.split(u["Service"]["ExecStart"])
    assert argv[0] == "/usr/sbin/mosquitto" and argv[1] == "-c"
    # init puts the broker's files beside the config, in broker/: for the guide's
    # /etc/liftcard/gateway.toml, that is the file the unit starts Mosquitto on.
    conf = tmp_path / "liftcard" / "gateway.toml"
    assert (
        gateway_main(["init", "--config", str(conf), "--data-dir", str(tmp_path / "var"), "--gateway-id", "gw-1"]) == 0
    )
    rel = load_config(conf).broker.dir.relative_to(conf.parent)
    assert argv[2] == str(Path(ETC_CONFIG).parent / rel / "mosquitto.conf")
    assert shlex.split(u["Service"]["ExecReload"]) == ["/bin/kill", "-HUP", "$MAINPID"]
    capsys.readouterr()


def guide_commands() -> list[str]:
    """The shell lines of the guide's ```sh blocks, continuation lines joined."""
    out = []
    for block in re.findall(r"```sh\n(.*?)```", GUIDE, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


def test_every_gateway_command_of_the_guide_runs_as_a_user_that_reads_the_config():
    """/etc/liftcard is 0700 of liftcard: an operator's plain command there is
    refused (Permission denied). Each runs as liftcard, or as root where it
    writes only outside liftcard's directories (backup)."""
    cmds = [c for c in guide_commands() if "liftcard-gateway " in c and ETC_CONFIG in c]
    assert len(cmds) > 10
    for c in cmds:
        assert c.startswith("sudo -u liftcard liftcard-gateway ") or c.startswith("sudo liftcard-gateway backup "), c


def test_every_program_the_guide_runs_is_installed_by_it():
    """On a fresh Pi only what step 1 installs is there (and what its own
    lines install later): no `sqlite3` shell, no `jq`, unless apt brings it."""
    installed = set()
    for c in guide_commands():
        m = re.match(r"sudo apt-get install -y (.*)", c)
        if m:
            installed |= set(m.group(1).split())
    provides = {"jq": "jq", "sqlite3": "sqlite3", "gpg": "gnupg", "mosquitto": "mosquitto", "git": "git"}
    for c in guide_commands():
        for word in re.findall(r"(?:^|[|;&]\s*|sudo (?:-u \w+ )?)([a-z][\w.-]*)", c):
            if word in provides:
                assert provides[word] in installed, "%s in %r: the guide never installs %s" % (word, c, provides[word])
