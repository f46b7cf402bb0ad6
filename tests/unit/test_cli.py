"""The ``netemu`` command finds its subcommands, and loads only the one it runs."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from netemu.cli import build_parser, main


def _commands(parser: argparse.ArgumentParser) -> set[str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def test_every_command_module_registers_the_command_it_is_named_after() -> None:
    everything = _commands(build_parser())
    assert {"plan", "route", "run", "demo", "test", "agent", "bp", "clean"} <= everything
    for name in everything:
        assert _commands(build_parser(name)) == {name}


def test_an_unknown_command_lists_the_real_ones(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["nosuch"])
    err = capsys.readouterr().err
    assert "invalid choice: 'nosuch'" in err and "'plan'" in err and "'route'" in err


def test_plan_command_does_not_load_the_emulator() -> None:
    code = ("import sys; from netemu.cli import build_parser; build_parser('plan'); "
            "print(sorted(m for m in ('netemu.emulator', 'mininet', 'netemu.run') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_run_cluster_refuses_what_it_cannot_spread(capsys: pytest.CaptureFixture[str]) -> None:
    # refused before anything connects to Ray or builds a namespace
    tiny = Path(__file__).resolve().parents[2] / "topologies/tiny.yaml"
    rc = main(["run", str(tiny), "--cluster", "auto", "--cli",
               "--duration-s", "60"])
    assert rc != 0
    assert "--cluster: --cli, --shaper netem and ip_routing frr, bird or plugin are not " \
        "supported" in capsys.readouterr().err
    rc = main(["run", str(tiny), "--cluster", "auto", "--ip-routing", "frr",
               "--duration-s", "60"])
    assert rc != 0 and "ip_routing frr, bird or plugin are not supported" in capsys.readouterr().err


def test_run_cluster_refuses_a_live_view(capsys: pytest.CaptureFixture[str]) -> None:
    # said, not ignored: the run would go on without the page the user asked for
    tiny = Path(__file__).resolve().parents[2] / "topologies/tiny.yaml"
    rc = main(["run", str(tiny), "--cluster", "auto", "--view", "--duration-s", "60"])
    assert rc != 0
    err = capsys.readouterr().err
    assert "--view and --cluster: a run spread over a cluster has no live view yet" in err
    assert "--view" in err.split("yet", 1)[1]  # and it says which option to drop


def test_run_cluster_without_ray_running_says_how_to_start_it(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))  # no Ray session of this machine found
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    tiny = Path(__file__).resolve().parents[2] / "topologies/tiny.yaml"
    rc = main(["run", str(tiny), "--cluster", "auto", "--duration-s", "60"])
    assert rc != 0
    err = capsys.readouterr().err
    assert "--cluster auto: no Ray cluster to join" in err and "ray start --head" in err


def test_agents_and_out_only_go_with_a_cluster_run(capsys: pytest.CaptureFixture[str],
                                                   tmp_path: Path) -> None:
    tiny = Path(__file__).resolve().parents[2] / "topologies/tiny.yaml"
    assert main(["run", str(tiny), "--agents", "--duration-s", "60"]) != 0
    assert "--agents goes with --cluster" in capsys.readouterr().err
    assert main(["run", str(tiny), "--cluster", "auto", "--out", str(tmp_path / "r"),
                 "--duration-s", "60"]) != 0
    assert "--out is the run directory of --cluster --agents" in capsys.readouterr().err


def test_test_cluster_refuses_view_and_jobs(capsys: pytest.CaptureFixture[str]) -> None:
    tiny = Path(__file__).resolve().parents[2] / "topologies/tiny.yaml"
    assert main(["test", str(tiny), str(tiny), "--cluster", "auto", "-j", "2"]) != 0
    assert "--cluster runs one scenario per host at a time" in capsys.readouterr().err
