"""car-daemon.1 and `car-daemon --help` agree: every flag one names, the other names too; the page
renders without a groff warning; and meson installs it. The page is the operator's reference, so
a flag added to the command line without its paragraph fails here."""

import json
import os
import re
import subprocess

from harness import DAEMON, ROOT

MAN_PAGE = os.path.join(ROOT, "examples", "car-daemon", "car-daemon.1")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")


def help_flags():
    out = subprocess.run([DAEMON, "--help"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    text = out.stdout + out.stderr
    flags = set(FLAG.findall(text))
    assert len(flags) > 20, f"--help names only {sorted(flags)}"
    return flags


def man_text():
    """The page's source with roff escapes turned back into plain text (\\- is a hyphen, \\fB etc.
    switch fonts), so flags read as they are typed. Comment lines are left out: they are not
    part of the page."""
    with open(MAN_PAGE, encoding="ascii") as f:
        lines = [line for line in f if not line.startswith('.\\"')]
    text = "".join(lines)
    text = re.sub(r"\\f[BIRP]", "", text)
    return text.replace("\\-", "-").replace("\\&", "")


def test_every_help_flag_is_in_the_man_page_and_back():
    in_help = help_flags()
    in_man = set(FLAG.findall(man_text()))
    assert not in_help - in_man, f"flags in --help but not in car-daemon.1: {sorted(in_help - in_man)}"
    assert not in_man - in_help, f"flags in car-daemon.1 but not in --help: {sorted(in_man - in_help)}"


def test_the_man_page_has_the_operator_sections():
    text = man_text()
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "ENVIRONMENT", "FILES",
                    "SIGNALS", "EXIT STATUS"):
        assert re.search(rf"^\.SH {section}\s*$", text, re.M), f"no .SH {section}"
    # Exit codes of PROTOCOL.md §9 are each described.
    exit_section = text.split(".SH EXIT STATUS", 1)[1].split(".SH ", 1)[0]
    for code in ("0", "1", "2"):
        assert re.search(rf"^\.B {code}\s*$", exit_section, re.M), f"exit status {code} not described"
    # Every variable the daemon reads is documented.
    for variable in ("CAR_AUTH_TOKEN", "CAR_NO_AUTH", "CAR_NO_APPROVALS", "CAR_TOOL_TIMEOUT", "CAR_AGENT_ID"):
        assert variable in text, f"{variable} not in ENVIRONMENT"


def test_the_man_page_renders_without_warnings():
    out = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", MAN_PAGE],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stderr == "", out.stderr


def test_meson_installs_the_man_page():
    build_dir = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(DAEMON))))
    out = subprocess.run(["meson", "introspect", "--installed", build_dir],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    installed = json.loads(out.stdout).values()
    assert any(path.endswith("/man1/car-daemon.1") for path in installed), sorted(installed)
