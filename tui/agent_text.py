"""The readable form of a record (``watch`` and ``verdicts`` without ``--json``): one line each."""

from __future__ import annotations

from typing import Any


def _number(value: Any) -> str:
    return "nan" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))


def _fix(fixes: list[dict[str, Any]]) -> str:
    return "; ".join(" ".join([f["op"], *(f"{k}={_number(v)}" for k, v in f["args"].items())]) for f in fixes)


def text_line(rec: dict[str, Any]) -> str:
    """One line a person reads for any record of :mod:`octa_tui.tui.agent_records`."""
    kind = rec.get("type")
    if kind == "run":
        return (f"run {rec['run_id']}: {rec['task']} {rec['model']}, {len(rec['channels'])} channels, "
                f"{rec['steps']} steps so far ({rec['source']})")
    if kind == "summary":
        values = "  ".join(f"{name} {_number(value)}" for name, value in rec["last"].items())
        rate = f"  {rec['steps_per_s']:.3g} steps/s" if rec.get("steps_per_s") is not None else ""
        return f"step {rec['step']}  epoch {rec['epoch']}{rate}  {values}"
    if kind == "verdict":
        fix = f"  fix: {_fix(rec['fixes'])}" if rec["fixes"] and rec["change"] != "cleared" else ""
        return f"step {rec['at_step']}  {rec['change']}: {rec['severity']} {rec['code']}: {rec['title']} ({rec['evidence']}){fix}"
    if kind == "event":
        return f"step {rec['step']}  {rec['kind']}: {rec['message']}"
    if kind == "epoch":
        val = "  ".join(f"val {k} {_number(v)}" for k, v in rec["val"].items())
        train = "  ".join(f"train {k} {_number(v)}" for k, v in rec["train"].items())
        return f"epoch {rec['epoch']} ended at step {rec['step']}  {train}  {val}".rstrip()
    if kind == "reply":
        how = f"applied at step {rec['step']}" if rec["status"] == "ok" else f"refused: {rec['reason']}"
        return f"{_fix([{'op': rec['op'], 'args': rec['args']}])}: {how}"
    if kind == "state":
        by = f" (by {rec['by']})" if rec.get("by") else ""
        return f"step {rec['step']}  run {rec['state']}{by}"
    if kind == "final":
        if not rec["verdicts"]:
            return f"at the end (step {rec['last_step']}): no verdict"
        return "\n".join([f"at the end (step {rec['last_step']}):"] + [
            f"  {v['severity']} {v['code']}: {v['title']} ({v['evidence']})"
            + (f"  fix: {_fix(v['fixes'])}" if v["fixes"] else (f"  {v['instruction']}" if v["instruction"] else ""))
            for v in rec["verdicts"]])
    if kind == "end":
        return f"watch ended: {rec['reason']} at step {rec['step']}"
    if kind == "error":
        return f"error ({rec['error']}): {rec['reason']}"
    if kind == "warning":
        return f"warning: {rec['message']}"
    return str(rec)
