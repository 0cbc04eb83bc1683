"""liftcard-demo --walkthrough: the virtual reader (real firmware under the real MicroPython)
lives through the scripted morning; its decisions, fees and log are checked."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from liftcard_tools import demo

CAP = demo.MONTHLY_CAP_FEN


def run_json(capsys, *args):
    code = demo.main(["--walkthrough", "--json", *args])
    out, err = capsys.readouterr()
    assert code == 0, err + out
    return json.loads(out)


def taps_of(doc, card_name):
    want = "%016x" % demo.CARDS[card_name].card_id
    return [t for t in doc["taps"] if t.get("card_id") == want]


@pytest.fixture(scope="module")
def morning(tmp_path_factory):
    # One fresh run shared by the checks below (as JSON, parsed).
    d = tmp_path_factory.mktemp("demo") / "work"
    res = subprocess.run(
        [sys.executable, "-m", "liftcard_tools.demo", "--walkthrough", "--json", "--dir", str(d)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr + res.stdout
    return json.loads(res.stdout), d, res.stdout


def test_runs_clean(morning):
    doc, _, _ = morning
    assert doc["ok"] and doc["problems"] == []
    assert doc["reader_exit_code"] == 0
    recorded = [t for t in doc["taps"] if "seq" in t]
    assert all(t["model_agrees"] for t in recorded)
    assert all(t["logged"] for t in recorded)


def test_decisions(morning):
    doc, _, _ = morning
    first = lambda name: taps_of(doc, name)[0]  # noqa: E731
    assert first("zhang_wei")["result"] == "GRANTED" and first("zhang_wei")["fee_fen"] == 50
    assert first("chen_lan")["flags"] == ["FREE_CLASS"] and first("chen_lan")["fee_fen"] == 0
    assert first("zhao_gang")["result"] == "SUSPENDED"
    assert first("stranger")["result"] == "UNKNOWN_CARD" and first("stranger")["household"] == 0
    assert first("sun_li_old")["result"] == "LOST"
    assert first("wang_carer")["result"] == "EXPIRED"
    nurse = first("liu_nurse")
    assert nurse["result"] == "NO_FLOOR" and nurse["floor"] == 0
    assert first("sun_li")["at"] is None and first("sun_li")["floor"] == 2 and first("sun_li")["fee_fen"] == 10
    failed = [t for t in doc["taps"] if t["line"].startswith("FAIL")]
    assert [t["result"] for t in failed] == ["AUTH_FAILED"]
    for t in doc["taps"]:
        granted = t.get("result") == "GRANTED"
        if "seq" in t:
            assert t["signals"] == (["RELAY ON", "LED GREEN", "BEEP OK"] if granted else ["LED RED", "BEEP DENY"])
        if not granted:
            assert t.get("fee_fen", 0) == 0


def test_debounced_retap_is_logged_not_charged(morning):
    doc, _, _ = morning
    first, again = taps_of(doc, "liu_fang")
    assert first["result"] == "GRANTED" and first["fee_fen"] == 20 and first["flags"] == []
    assert again["result"] == "GRANTED" and again["flags"] == ["DEBOUNCED"] and again["fee_fen"] == 0
    assert again["seq"] == first["seq"] + 1  # logged all the same
    liu = next(h for h in doc["households"] if h["household"] == 301)
    assert liu["fen"] == 20 and liu["rides"] == 2 and liu["charged"] == 1


def test_capped_household_pays_the_cap(morning):
    doc, _, _ = morning
    zhang = next(h for h in doc["households"] if h["household"] == 601)
    assert zhang["fen"] == CAP == zhang["month_fen"]
    hao, xin = taps_of(doc, "zhang_hao")[0], taps_of(doc, "zhang_xin")[0]
    assert hao["flags"] == ["CAPPED"] and 0 < hao["fee_fen"] < 50
    assert xin["flags"] == ["CAPPED"] and xin["fee_fen"] == 0
    zhang_taps = [t for t in doc["taps"] if t.get("household") == 601]
    assert sum(t["fee_fen"] for t in zhang_taps) == CAP


def test_lost_card_denied_after_delta(morning):
    doc, _, _ = morning
    before, after = taps_of(doc, "wang_jun")
    assert before["result"] == "GRANTED"
    assert after["result"] == "LOST"
    delta = next(e for e in doc["events"] if e["who"] == "gateway" and e["what"].startswith("delta"))
    assert before["time"] < delta["time"] < after["time"]
    assert delta["reader"].startswith("OK whitelist v")
    assert taps_of(doc, "wang_jun_new")[0]["result"] == "GRANTED"
    forged = next(e for e in doc["events"] if e["who"] == "intruder")
    assert forged["reader"].startswith("ERR")


def test_garbled_line_is_refused_and_the_reader_goes_on(morning):
    doc, _, _ = morning
    i = next(i for i, t in enumerate(doc["taps"]) if "seq" not in t)
    assert doc["taps"][i]["reader"].startswith("ERR bad tap")
    assert doc["taps"][i + 1]["seq"] == doc["taps"][i - 1]["seq"] + 1


def test_summary_totals_equal_the_fees_shown(morning):
    doc, _, _ = morning
    recorded = [t for t in doc["taps"] if "seq" in t]
    shown = sum(t["fee_fen"] for t in recorded)
    assert shown == doc["totals"]["fen"] == doc["log"]["fen"] == doc["run"]["log_fen"] == doc["run"]["shown_fen"]
    assert shown == sum(h["fen"] for h in doc["households"])
    assert doc["totals"]["taps"] == len(recorded) == doc["log"]["records"]
    assert doc["totals"]["charged"] == sum(1 for t in recorded if t["fee_fen"])
    assert (doc["log"]["seq_first"], doc["log"]["seq_last"]) == (1, len(recorded))
    assert doc["log"]["gaps"] == []
    assert all(t["fee_yuan"] == "%d.%02d" % divmod(t["fee_fen"], 100) for t in recorded)


def test_secrets_stay_secret(morning):
    doc, d, stdout = morning
    cfg = json.loads((d / "config.json").read_text())
    assert stat.S_IMODE(os.stat(d / "config.json").st_mode) == 0o600
    assert cfg["key"] not in stdout and "key" not in doc["config"]
    assert (d / "fs.img").exists() and (d / "log.img").exists() and (d / "cards.json").exists()


def test_text_output(tmp_path, capsys):
    assert demo.main(["--walkthrough", "--dir", tmp_path / "w"]) == 0
    out = capsys.readouterr().out
    assert "liftcard demo" in out and demo.TAP_HEAD in out
    for word in (
        "GRANTED",
        "DEBOUNCED",
        "FREE_CLASS",
        "CAPPED",
        "SUSPENDED",
        "UNKNOWN_CARD",
        "LOST",
        "EXPIRED",
        "NO_FLOOR",
        "AUTH_FAILED",
        "ERR bad tap",
        "ERR delta MAC does not verify",
    ):
        assert word in out, word
    rows = [ln for ln in out.splitlines() if ln[:2].isdigit() and ln[2] == ":" and ln[9:14].strip().isdigit()]
    assert len(rows) == 17
    # Aligned columns: the yuan amount always ends at the same place.
    ends = {ln.index("  relay") for ln in rows}
    assert len(ends) == 1
    end = ends.pop()
    shown_fen = sum(int(r[end - 6 : end].strip().replace(".", "")) for r in rows)
    total = next(ln for ln in out.splitlines() if ln.startswith("total "))
    assert total.split()[-1] == demo.yuan(shown_fen) == "1.90"
    assert "all checks passed" in out and "exit code 0" in out


def test_keep_resumes_sequence_numbers(tmp_path, capsys):
    d = tmp_path / "w"
    one = run_json(capsys, "--dir", d)
    two = run_json(capsys, "--dir", d, "--keep")
    n = one["log"]["records"]
    assert two["run"]["seq_first"] == one["log"]["seq_last"] + 1 == n + 1
    assert two["log"]["records"] == 2 * n and two["log"]["seq_last"] == 2 * n
    assert two["log"]["gaps"] == [] and two["log"]["boots"] == [1, 2]
    assert two["day"] > one["day"]
    assert two["log"]["fen"] == one["log"]["fen"] + two["run"]["log_fen"]
    if two["month"] == one["month"]:
        # The monthly cap survived the reboot: the Zhang family rides free.
        assert all(t["fee_fen"] == 0 for t in two["taps"] if t.get("household") == 601)
        zhang = next(h for h in two["households"] if h["household"] == 601)
        assert zhang["month_fen"] == CAP
    # Without --keep the reader starts afresh.
    three = run_json(capsys, "--dir", d)
    assert three["log"]["seq_first"] == 1 and three["log"]["records"] == n


def test_console_script(tmp_path):
    exe = Path(sys.executable).with_name("liftcard-demo")
    if not exe.exists():
        pytest.skip("liftcard-demo is not installed next to this python")
    res = subprocess.run(
        [str(exe), "--walkthrough", "--quiet", "--dir", str(tmp_path / "w")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "all checks passed" in res.stdout and "DEBOUNCED" not in res.stdout


def _one_line_error(res_err):
    lines = res_err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("liftcard-demo: error: "), res_err
    assert "Traceback" not in res_err


def test_dir_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert demo.main(["--walkthrough", "--dir", f]) == 1
    _one_line_error(capsys.readouterr().err)


def test_dir_with_space(tmp_path, capsys):
    assert demo.main(["--walkthrough", "--dir", tmp_path / "a b"]) == 1
    _one_line_error(capsys.readouterr().err)


def test_bad_kept_config(tmp_path, capsys):
    d = tmp_path / "w"
    d.mkdir()
    (d / "config.json").write_text("{not json")
    assert demo.main(["--walkthrough", "--dir", d, "--keep"]) == 1
    _one_line_error(capsys.readouterr().err)


def test_micropython_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert demo.main(["--walkthrough", "--dir", tmp_path / "w"]) == 1
    err = capsys.readouterr().err
    _one_line_error(err)
    assert "micropython not found" in err


def test_bad_option(capsys):
    with pytest.raises(SystemExit) as e:
        demo.main(["--walkthrough", "--nope"])
    assert e.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_yuan_is_exact():
    assert demo.yuan(0) == "0.00" and demo.yuan(5) == "0.05" and demo.yuan(120) == "1.20"
    assert demo.yuan(10**7 + 1) == "100000.01" and demo.yuan(-30) == "-0.30"
