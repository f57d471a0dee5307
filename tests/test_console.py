"""The terminal layer (console.py): text stays text, logs stay plain, NO_COLOR is honoured."""

import io

from rich.console import Console

from amp_advisor.console import StatusLine, TuneDisplay, facts, grid, print_out, to_text


def test_brackets_in_names_and_reasons_are_text_not_markup():
    table = grid("configuration", "status", title="runs [/x]")
    table.add_row("fp16 bs=8 +fp32[encoder.attn]", "error: KeyError('[/tmp]')")
    fact = facts()
    fact.add_row("why", "keep [encoder.attn] in fp32")
    text = to_text(table) + to_text(fact)
    for literal in ("runs [/x]", "+fp32[encoder.attn]", "KeyError('[/tmp]')", "keep [encoder.attn] in fp32"):
        assert literal in text


def test_the_live_table_keeps_brackets_and_ends_with_every_row():
    screen = io.StringIO()
    display = TuneDisplay(console=Console(file=screen, force_terminal=True, width=150, color_system=None))
    display({"event": "tune_phase", "phase": "repair", "planned": 1, "budget_s": 60})
    display({"event": "trial_start", "number": 1, "label": "fp16 bs=8 +fp32[attn]", "role": "repair"})
    display({"event": "trial_end", "number": 1, "label": "fp16 bs=8 +fp32[attn]", "role": "repair", "status": "error",
             "samples_per_s": None, "feasible": False, "why_not": "raised [/x]", "best": None,
             "peak_memory_bytes": None, "wall_s": 1.0})
    display.stop()
    final = screen.getvalue().rsplit("\x1b[2K", 1)[-1]
    assert "fp16 bs=8 +fp32[attn]" in final and "error: raised [/x]" in final and "budget 1:00" in final


def test_off_a_terminal_the_status_line_prints_a_line_per_phase():
    log = io.StringIO()
    line = StatusLine(prefix="mlp bf16: ", console=Console(file=log, force_terminal=False))
    for phase, step in (("warmup", 1), ("warmup", 2), ("measured", 1)):
        line(f"{phase} step {step}", key=phase)
    line.done()
    assert log.getvalue().splitlines() == ["mlp bf16: warmup step 1 ...", "mlp bf16: measured step 1 ..."]


def test_printed_tables_end_where_their_text_does_off_a_terminal(capsys):
    table = facts()
    table.add_row("a", "short")
    table.add_row("b", "a much longer value than the first")
    print_out(table)
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["a  short", "b  a much longer value than the first"]


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_no_color_is_honoured_on_a_terminal(monkeypatch):
    from rich.text import Text

    from amp_advisor.console import err_console

    def drawn() -> str:
        monkeypatch.setattr("sys.stderr", FakeTerminal())
        monkeypatch.setenv("TERM", "xterm-256color")
        err_console().print(Text("ok", style="green"))
        return __import__("sys").stderr.getvalue()

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert "\x1b[" in drawn()  # colour on a terminal ...
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" not in drawn()  # ... none with NO_COLOR
