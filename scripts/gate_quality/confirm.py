"""Confirm on regression, on a recording: a stored baseline of one block against a head that, when
its first block is judged "regressed", is measured again once or twice and decided again.

In a recording of sessions (``recording.record``) the re-measurement is the same workload in the
next session(s) (~5 s later); in a recording with blocks (``recording.record_blocks``) it is the
next block, back to back. Every decision is ``decide.compare_samples`` (the default rule).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pytest_perfguard import decide

from .recording import valid
from .tables import share
from .workload import INDEX, VARIANTS

CONFIRM = {  # name: description (stored baseline = 1 block; head = 1st block + re-measurements)
    "one": "1 block, no confirmation",
    "pooled": "(a) confirm once, pooled: regressed on block 1 and on blocks 1+2",
    "and": "(b) confirm once, AND: regressed on block 1 and on block 2 alone",
    "pooled2": "(c) confirm twice, pooled: regressed on 1, 1+2 and 1+2+3",
}
CANDIDATES = ("A", "s05", "s10", "s20")


def head_blocks(data: np.ndarray, j: int, cand: str, blocks: int) -> list[np.ndarray]:
    """The first ``blocks`` measurements of workload ``cand`` from session ``j`` on.

    4-d recordings (with blocks): the back-to-back blocks of session j. 3-d recordings: the
    measurement of that workload in sessions j, j+1, ... (one session apart)."""
    c = INDEX[cand]
    if data.ndim == 4:
        return [valid(data[j, c, k]) for k in range(blocks)]
    return [valid(data[j + k, c]) for k in range(blocks)]


def confirm_verdicts(base: np.ndarray, hb: list[np.ndarray], tol: float) -> dict[str, bool]:
    def reg(h: np.ndarray) -> bool:
        return decide.compare_samples(base, h, tolerance=tol).verdict == "regressed"

    v1 = reg(hb[0])
    out = {"one": v1, "pooled": False, "and": False, "pooled2": False, "ran2": False}
    if v1:
        p12 = reg(np.concatenate(hb[:2]))
        out.update(pooled=p12, ran2=p12, **{"and": reg(hb[1])})
        if p12:
            out["pooled2"] = reg(np.concatenate(hb[:3]))
    return out


def confirm_pairs(data: np.ndarray, seed: int, n_pairs: int) -> tuple[list, list]:
    """(``n_pairs`` random pairs, all pairs): base session in the first half, head session in the
    second half (leaving room for two more sessions in a 3-d recording)."""
    n = data.shape[0]
    half = n // 2
    last = n if data.ndim == 4 else n - 2
    allp = [(i, j) for i in range(half) for j in range(half, last)]
    rng = np.random.default_rng(seed + 2)
    pick = rng.choice(len(allp), size=min(n_pairs, len(allp)), replace=False)
    return [allp[k] for k in sorted(pick)], allp


def analyse_confirm(rec: dict[str, Any], n_pairs: int, tolerance: float) -> dict[str, Any]:
    data = rec["samples"]
    pairs, allp = confirm_pairs(data, int(rec["seed"]), n_pairs)
    sel = set(pairs)
    res = {}
    for cand in CANDIDATES:
        cnt = {k: [0, 0] for k in (*CONFIRM, "ran2")}  # [in the n_pairs pairs, in all pairs]
        for i, j in allp:
            base = valid(data[i, INDEX["A"], 0] if data.ndim == 4 else data[i, INDEX["A"]])
            v = confirm_verdicts(base, head_blocks(data, j, cand, 3), tolerance)
            for k, x in v.items():
                cnt[k][1] += x
                if (i, j) in sel:
                    cnt[k][0] += x
        res[cand] = cnt
    return {"res": res, "n": len(pairs), "n_all": len(allp)}


def gaps_line(rec: dict[str, Any]) -> str:
    st = rec["stamps"]
    if st.ndim == 3:
        g = np.diff(st, axis=2)[:, [k for k, v in enumerate(VARIANTS) if v != "A2"]]
        what = "back-to-back blocks of one session"
    else:
        g = np.diff(st, axis=0)
        what = "the same workload in consecutive sessions"
    return (f"Start-to-start gap between consecutive measurements ({what}): median "
            f"{np.median(g):.1f} s (p5 {np.percentile(g, 5):.1f}, p95 {np.percentile(g, 95):.1f} s).")


def confirm_markdown(out: dict[str, Any], rec: dict[str, Any], tolerance: float, cmd: str, timing: str) -> str:
    shape = rec["samples"].shape
    res, n, na = out["res"], out["n"], out["n_all"]
    lines = [
        f"Command: `{cmd}`  ",
        f"Recording: {rec['date']} (UTC), seed {int(rec['seed'])}, samples {shape} (NaN-padded)  ",
        timing + "  ",
        gaps_line(rec) + "  ",
        f"Rule: `decide.compare_samples(base, head, tolerance={tolerance})` says `regressed`; "
        f"stored baseline = 1 block (`A` of a first-half session), head from a second-half "
        f"session. Cells: share failed in {n} random pairs (count; 95 % Wilson interval) "
        f"[share over all {na} base x head combinations]. Extra blocks: mean re-measurements "
        "per A/A test (the confirmation cost when nothing changed).",
        "",
        "| strategy | A/A false failures | +5 % caught | +10 % caught | +20 % caught "
        "| extra blocks per A/A test |",
        "|---|---|---|---|---|---|",
    ]
    for k, desc in CONFIRM.items():
        cells = [f"{share(res[c][k][0], n)} [{100 * res[c][k][1] / na:.1f} %]" for c in CANDIDATES]
        a = res["A"]
        extra = {"one": 0, "pooled": a["one"][1], "and": a["one"][1],
                 "pooled2": a["one"][1] + a["ran2"][1]}[k] / na
        lines.append(f"| {desc} | " + " | ".join(cells) + f" | {extra:.3f} |")
    return "\n".join(lines) + "\n"
