"""Deployment: the Ansible playbook, the systemd units and the Vagrant lab.

The slow tests build a Debian bookworm root with debootstrap, converge the playbook into it
through Ansible's chroot connection (twice, then once in check mode) and inspect the result.
Nothing starts inside the root: a policy-rc.d script refuses every service start, and the
roles only enable units when the target is a chroot. scripts/ci_deploy_deps.sh installs
the tools, and a test whose tool is missing is skipped with the tool's name as the reason.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance import __version__
from appliance.config import parse_config
from appliance.tokens import verify_token

REPO = Path(__file__).resolve().parents[1]
ANSIBLE_DIR = REPO / "ansible"
SYSTEMD_DIR = REPO / "systemd"
ROLES = ("wirewatch", "wirewatch_sensor", "wirewatch_controller")
UNITS = ("wirewatch-api.service", "wirewatch-worker.service", "wirewatch-capture@.service")
#: Highest `systemd-analyze security` exposure each unit may have (0 = locked, 10 = open).
EXPOSURE_LIMITS = {
    "wirewatch-api.service": 2.0,
    "wirewatch-worker.service": 2.0,
    "wirewatch-capture@eth1.service": 4.0,
}
#: Parts of the checkout the playbook installs from; the tests converge a copy of them.
SOURCE_MEMBERS = ("pyproject.toml", "README.md", "appliance", "worker", "api", "systemd")
INSTALL_HINT = "run scripts/ci_deploy_deps.sh to install it"
#: Kernel filter the test inventory sets, to see it reach both configuration files.
CAPTURE_FILTER = "udp port 53 or tcp port 80"
RECAP = re.compile(r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
                   r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)", re.MULTILINE)
EXPOSURE = re.compile(r"Overall exposure level for (?P<unit>\S+): (?P<score>[\d.]+)")


def require(tool: str) -> str:
    """Return the path of ``tool`` or skip the test naming it."""
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed; {INSTALL_HINT}")
    return path


def run(argv: list[str], timeout: float = 600, **kwargs: object) -> subprocess.CompletedProcess:
    """Run a command, capturing text output; the caller checks the return code."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          check=False, **kwargs)


def exposure(unit: str, root: Path | None = None) -> float:
    """Return the `systemd-analyze security --offline=yes` exposure of ``unit``."""
    argv = [require("systemd-analyze"), "security", "--offline=yes", "--no-pager"]
    if root is not None:
        argv.append(f"--root={root}")
    result = run(argv + [unit], timeout=120)
    match = EXPOSURE.search(result.stdout + result.stderr)
    assert match, f"no exposure level in the output for {unit}:\n{result.stdout}{result.stderr}"
    return float(match["score"])


def unit_settings(path: Path) -> dict[str, list[str]]:
    """Return each key of a unit file with all its values (a key may repeat)."""
    settings: dict[str, list[str]] = {}
    text = path.read_text(encoding="utf-8").replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


# Unit files ---------------------------------------------------------------------------------

@pytest.mark.parametrize("unit", UNITS)
def test_unit_exposure_within_limit(unit: str) -> None:
    limit = 4.0 if unit.startswith("wirewatch-capture@") else 2.0
    score = exposure(str(SYSTEMD_DIR / unit))
    assert score <= limit, f"{unit} exposure {score} > {limit}"


def test_only_capture_unit_has_capabilities() -> None:
    for unit in UNITS:
        settings = unit_settings(SYSTEMD_DIR / unit)
        bounding = " ".join(settings.get("CapabilityBoundingSet", [""])).split()
        ambient = " ".join(settings.get("AmbientCapabilities", [""])).split()
        expected = ["CAP_NET_RAW", "CAP_NET_ADMIN"] if unit.startswith("wirewatch-capture") else []
        assert bounding == expected, f"{unit}: CapabilityBoundingSet {bounding}"
        assert ambient == expected, f"{unit}: AmbientCapabilities {ambient}"
        assert settings["User"] == ["wirewatch"], unit
        assert settings["NoNewPrivileges"] == ["yes"], unit
        assert settings["ProtectSystem"] == ["strict"], unit
        assert settings["Restart"] == ["on-failure"], unit
        for key in ("PrivateTmp", "ProtectHome", "RestrictAddressFamilies", "SystemCallFilter"):
            assert key in settings, f"{unit} lacks {key}"


# Ansible sources ----------------------------------------------------------------------------

@pytest.mark.parametrize("role", ROLES)
def test_role_defaults_commented_and_listed(role: str) -> None:
    role_dir = ANSIBLE_DIR / "roles" / role
    lines = (role_dir / "defaults" / "main.yml").read_text(encoding="utf-8").splitlines()
    readme = (role_dir / "README.md").read_text(encoding="utf-8")
    names = []
    for number, line in enumerate(lines):
        match = re.match(r"^([a-z_]+):", line)
        if match is None:
            continue
        name = match[1]
        names.append(name)
        assert name.startswith(role), f"{role}: variable {name} lacks the role prefix"
        assert lines[number - 1].startswith("# "), f"{role}: {name} has no comment line above it"
        assert f"`{name}`" in readme, f"{role}: README.md does not list {name}"
    assert names, f"{role} has no defaults"


def test_playbook_syntax_check() -> None:
    playbook = require("ansible-playbook")
    result = run([playbook, "--syntax-check", "-i", "inventory.example.yml", "site.yml"],
                 cwd=ANSIBLE_DIR, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_ansible_lint_clean() -> None:
    lint = require("ansible-lint")
    result = run([lint, "--offline", "site.yml", "roles"], cwd=ANSIBLE_DIR, timeout=600,
                 env={**os.environ, "NO_COLOR": "1"})
    assert result.returncode == 0, result.stdout + result.stderr


def test_vagrantfile_uses_playbook() -> None:
    vagrantfile = (REPO / "Vagrantfile").read_text(encoding="utf-8")
    playbook = re.search(r'ansible\.playbook = "([^"]+)"', vagrantfile)
    assert playbook, "the Vagrantfile has no Ansible provisioner"
    assert (REPO / playbook[1]).is_file(), f"{playbook[1]} does not exist"
    site = (ANSIBLE_DIR / "site.yml").read_text(encoding="utf-8")
    hosts = re.search(r"^\s*hosts: (\S+)$", site, re.MULTILINE)
    assert hosts, "site.yml names no hosts"
    for group in hosts[1].split(":"):
        assert f'"{group}" => ["sensor"]' in vagrantfile, f"the lab sensor is not in {group}"


@pytest.mark.slow
def test_vagrantfile_validates(tmp_path: Path) -> None:
    vagrant = require("vagrant")
    # Vagrant writes a .vagrant directory beside the Vagrantfile, so validate a copy.
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy2(REPO / "Vagrantfile", project / "Vagrantfile")
    env = {**os.environ, "VAGRANT_HOME": str(tmp_path / "vagrant.d"),
           "VAGRANT_CHECKPOINT_DISABLE": "1"}
    result = run([vagrant, "validate", "--ignore-provider"], cwd=project, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Vagrantfile validated successfully" in result.stdout


# Converging into a Debian bookworm root -----------------------------------------------------

@dataclass
class Converge:
    """One ansible-playbook run against the chroot: its output and recap counters."""

    output: str
    returncode: int
    ok: int
    changed: int
    failed: int
    unreachable: int


class Bookworm:
    """A debootstrap root, the inventory pointing at it and a frozen copy of the sources."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "root"
        self.source = base / "source"
        self.inventory = base / "inventory.yml"
        #: An API token in the form `wirewatch token create` prints.
        self.token = f"ww_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"

    def create(self) -> None:
        for tool in ("debootstrap", "ansible-playbook", "chroot"):
            require(tool)
        result = run(["debootstrap", "--variant=minbase",
                      "--include=python3,python3-apt,systemd,systemd-sysv,ca-certificates",
                      "bookworm", str(self.root)], timeout=900)
        if result.returncode != 0:
            pytest.fail(f"debootstrap failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
        self._refuse_service_starts()
        self._trust_local_certificates()
        self._freeze_sources()
        self._write_inventory()

    def _refuse_service_starts(self) -> None:
        # invoke-rc.d and deb-systemd-invoke ask this script; exit status 101 means "forbidden".
        policy = self.root / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n", encoding="ascii")
        policy.chmod(0o755)

    def _trust_local_certificates(self) -> None:
        """Trust the host's extra CA certificates, so pip in the root reaches PyPI as the host."""
        local = Path("/usr/local/share/ca-certificates")
        certificates = sorted(local.glob("*.crt")) if local.is_dir() else []
        if not certificates:
            return
        target = self.root / "usr/local/share/ca-certificates"
        target.mkdir(parents=True, exist_ok=True)
        for certificate in certificates:
            shutil.copy2(certificate, target / certificate.name)
        result = run(["chroot", str(self.root), "update-ca-certificates"], timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr

    def _freeze_sources(self) -> None:
        """Copy the installable parts of the checkout, so edits during the run change nothing."""
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for member in SOURCE_MEMBERS:
            path = REPO / member
            if path.is_dir():
                shutil.copytree(path, self.source / member, ignore=ignore)
            else:
                self.source.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, self.source / member)

    def _write_inventory(self) -> None:
        self.inventory.write_text(
            "all:\n"
            "  vars:\n"
            "    ansible_connection: community.general.chroot\n"
            f"    ansible_host: {self.root}\n"
            "    ansible_become: false\n"
            "    ansible_python_interpreter: /usr/bin/python3\n"
            f"    wirewatch_source_dir: {self.source}\n"
            "    wirewatch_srcid: sensor1\n"
            "    wirewatch_broker_url: redis://127.0.0.1:6379/0\n"
            "    wirewatch_sensor_interfaces: [eth1, eth2]\n"
            f"    wirewatch_capture_filter: '{CAPTURE_FILTER}'\n"
            "    wirewatch_api_tokens:\n"
            f"      - {{token: '{self.token}', scopes: [read, jobs], label: ci}}\n"
            "  children:\n"
            "    wirewatch_controllers:\n"
            "      hosts:\n"
            "        sensor1:\n"
            "    wirewatch_sensors:\n"
            "      hosts:\n"
            "        sensor1:\n",
            encoding="utf-8")

    def converge(self, *extra: str) -> Converge:
        env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0",
               "ANSIBLE_RETRY_FILES_ENABLED": "0"}
        result = run(["ansible-playbook", "-i", str(self.inventory), "site.yml", *extra],
                     cwd=ANSIBLE_DIR, env=env, timeout=900)
        output = result.stdout + result.stderr
        recaps = list(RECAP.finditer(output))
        assert recaps, f"no play recap (exit {result.returncode}):\n{output[-6000:]}"
        recap = recaps[-1]
        return Converge(output=output, returncode=result.returncode, ok=int(recap["ok"]),
                        changed=int(recap["changed"]), failed=int(recap["failed"]),
                        unreachable=int(recap["unreachable"]))

    def processes_inside(self) -> list[int]:
        """Return the pids of processes whose root directory is this root."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if Path(os.readlink(entry / "root")) == self.root:
                    pids.append(int(entry.name))
            except OSError:
                continue
        return pids

    def remove(self) -> None:
        """Unmount anything below the root, then delete the tree (never across a mount)."""
        mounts = [line.split()[4] for line in
                  Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines()]
        below = sorted((m for m in mounts if m.startswith(f"{self.root}/")), reverse=True)
        for mount in below:
            subprocess.run(["umount", mount], check=False)
        still = [m for m in below if os.path.ismount(m)]
        if still:
            raise RuntimeError(f"not removing {self.base}: still mounted {still}")
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def bookworm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bookworm]:
    if os.geteuid() != 0:
        pytest.skip("debootstrap and the chroot connection need root")
    for tool in ("debootstrap", "ansible-playbook"):
        require(tool)
    target = Bookworm(tmp_path_factory.mktemp("bookworm"))
    try:
        target.create()
        yield target
    finally:
        target.remove()


@pytest.fixture(scope="session")
def fresh_check(bookworm: Bookworm) -> Converge:
    """Run the playbook in check mode on the root before anything is installed."""
    return bookworm.converge("--check")


@pytest.fixture(scope="session")
def converged(bookworm: Bookworm, fresh_check: Converge) -> Converge:
    first = bookworm.converge()
    assert first.failed == 0, first.output[-8000:]
    assert first.returncode == 0, first.output[-8000:]
    return first


@pytest.mark.slow
def test_check_mode_on_fresh_host(bookworm: Bookworm, fresh_check: Converge) -> None:
    assert fresh_check.failed == 0, fresh_check.output[-6000:]
    assert fresh_check.returncode == 0, fresh_check.output[-6000:]
    assert fresh_check.changed > 0, "check mode found nothing to change on a fresh host"
    passwd = (bookworm.root / "etc/passwd").read_text(encoding="utf-8")
    assert "wirewatch:" not in passwd, "check mode created the user"
    assert not (bookworm.root / "opt/wirewatch").exists(), "check mode created /opt/wirewatch"


@pytest.mark.slow
def test_first_converge_succeeds(converged: Converge) -> None:
    assert converged.changed > 0
    assert converged.unreachable == 0


@pytest.mark.slow
def test_converged_user_directories_config(bookworm: Bookworm,
                                                          converged: Converge) -> None:
    root = bookworm.root
    passwd = {line.split(":")[0]: line.split(":")
              for line in (root / "etc/passwd").read_text(encoding="utf-8").splitlines()}
    assert "wirewatch" in passwd, "no wirewatch user"
    assert passwd["wirewatch"][6] == "/usr/sbin/nologin"
    assert int(passwd["wirewatch"][2]) < 1000, "wirewatch should be a system user"
    uid = int(passwd["wirewatch"][2])

    for directory, mode in (("var/lib/wirewatch", 0o750), ("var/lib/wirewatch/archive", 0o750),
                            ("var/lib/wirewatch/results", 0o750),
                            ("var/lib/wirewatch/capture/eth2", 0o750)):
        info = (root / directory).stat()
        assert info.st_uid == uid, f"/{directory} is not owned by wirewatch"
        assert info.st_mode & 0o777 == mode, f"/{directory} mode {oct(info.st_mode & 0o777)}"

    main = root / "etc/wirewatch/wirewatch.toml"
    config = parse_config(tomllib.loads(main.read_text(encoding="utf-8")), Path(
        "/etc/wirewatch/wirewatch.toml"))
    assert config.srcid == "sensor1"
    assert config.queue == "sensor.sensor1"
    assert config.capture.source == "eth1"
    assert config.broker_url == "redis://127.0.0.1:6379/0"
    assert str(config.archive_dir) == "/var/lib/wirewatch/archive"
    assert config.capture.filter == CAPTURE_FILTER
    assert config.retention.max_age_days == 30
    record = verify_token(config.api.tokens, bookworm.token)
    assert record is not None, "the API token from the inventory does not verify"
    assert record.scopes == ("read", "jobs")
    assert bookworm.token not in main.read_text(encoding="utf-8"), "the token is stored in clear"

    first = root / "etc/wirewatch/capture/eth1.toml"
    assert first.is_symlink(), "capture/eth1.toml is not a symbolic link"
    assert os.readlink(first) == "../wirewatch.toml"
    second = parse_config(tomllib.loads(
        (root / "etc/wirewatch/capture/eth2.toml").read_text(encoding="utf-8")))
    assert second.capture.source == "eth2"
    assert str(second.data_dir) == "/var/lib/wirewatch/capture/eth2"
    assert str(second.archive_dir) == "/var/lib/wirewatch/archive/eth2"
    assert second.capture.filter == CAPTURE_FILTER

    dropin = (root / "etc/systemd/system/wirewatch-worker.service.d/wirewatch.conf")
    assert "Environment=WIREWATCH_WORKER_CONCURRENCY=2" in dropin.read_text(encoding="utf-8")


@pytest.mark.slow
def test_converged_virtualenv_runs_wirewatch(bookworm: Bookworm, converged: Converge) -> None:
    result = run(["chroot", str(bookworm.root), "/opt/wirewatch/venv/bin/wirewatch",
                  "--version"], timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wirewatch {__version__}"

    # Loading the file compiles the kernel filter with the root's libpcap.
    load = ("from appliance.config import load_config; "
            "print(load_config('/etc/wirewatch/capture/eth2.toml').capture.filter)")
    result = run(["chroot", str(bookworm.root), "/opt/wirewatch/venv/bin/python", "-c", load],
                 timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == CAPTURE_FILTER
    for program in ("gunicorn", "celery"):
        assert (bookworm.root / "opt/wirewatch/venv/bin" / program).is_file(), program

    # The install compiled the packet-path kernels, so capture starts without numba.
    mode = ("import sys, appliance.flows.table, appliance.jit as jit; "
            "print(jit.prebuilt_module() is not None, 'numba' in sys.modules)")
    result = run(["chroot", str(bookworm.root), "/opt/wirewatch/venv/bin/python", "-c", mode],
                 timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "False"], result.stdout


@pytest.mark.slow
def test_converged_units_verify_and_stay_stopped(bookworm: Bookworm,
                                                        converged: Converge) -> None:
    root = bookworm.root
    units = ["wirewatch-api.service", "wirewatch-worker.service",
             "wirewatch-capture@eth1.service", "wirewatch-capture@eth2.service"]
    for unit in units:
        result = run([require("systemd-analyze"), "verify", f"--root={root}", unit],
                     cwd=root, timeout=120)
        assert result.returncode == 0, f"{unit}: {result.stdout}{result.stderr}"
        assert (root / "etc/systemd/system/multi-user.target.wants" / unit).is_symlink(), unit
    for unit, limit in EXPOSURE_LIMITS.items():
        score = exposure(unit, root)
        assert score <= limit, f"installed {unit} exposure {score} > {limit}"
    assert (root / "etc/systemd/system/multi-user.target.wants/redis-server.service").exists()
    assert bookworm.processes_inside() == [], "a process is running inside the chroot"


@pytest.mark.slow
def test_second_converge_changes_nothing(bookworm: Bookworm, converged: Converge) -> None:
    second = bookworm.converge()
    assert second.failed == 0, second.output[-6000:]
    assert second.returncode == 0, second.output[-6000:]
    changed = re.findall(r"^(?:TASK \[.*\]|changed: .*)$", second.output, re.MULTILINE)
    assert second.changed == 0, "\n".join(line for line in changed)[-4000:]


@pytest.mark.slow
def test_check_mode_changes_nothing(bookworm: Bookworm,
                                                        converged: Converge) -> None:
    check = bookworm.converge("--check")
    assert check.failed == 0, check.output[-6000:]
    assert check.returncode == 0, check.output[-6000:]
    assert check.changed == 0, check.output[-6000:]
