#!/usr/bin/env python
"""docs/benchmarks.md's tables from the benchmarks' CSV rows (``bench_utils.Row``), so that a
round's tables are made from what it wrote, never copied by hand.

    python scripts/benchmarks/tables.py op.csv [more.csv ...] [--kind op] [--commit 1a2b3c4] [--gpu H200]

Kinds (default: every kind that has rows):
  op       bench_op.py's cases: ours and the best SDPA backend (graph replays), speed-ups graph and
           eager, the floor fraction
  compare  compare_versions.py: each case's old time, each variant's and its change
  host     bench_host_time.py: host time of one eager call, ours and SDPA's
  memory   bench_memory.py: peak memory of one call over the bytes of q, k, v and the output
  model    bench_models.py: whole encoders, eager, GPU time and compiled, with the attention-free bound
  heal     bench_heal_step.py: ms per healing step on SDPA and converted, the rate over SDPA and its bound
One table per kind and code commit, each after a line giving the commit, GPU, versions and date
of its rows; where several runs of one commit timed a case, its later rows (in file order) win.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from typing import Callable, Iterable

KINDS = ("op", "compare", "host", "memory", "model", "heal")


def kind_of(row: dict) -> str:
    """Which table a row belongs to ("" for rows no table shows: ``variant:`` and ``variant-<commit>:`` rows)."""
    kernel = row["kernel"]
    if kernel == "host-time":
        return "host"
    prefix = kernel.split(":", 1)[0]
    if prefix in ("compare", "memory", "model", "heal"):
        return prefix
    return "op" if ":" not in kernel else ""


def read_rows(paths: Iterable[str]) -> list[dict]:
    rows = []
    for path in paths:
        with open(path, newline="") as f:
            rows += list(csv.DictReader(f))
    return rows


def provenance(rows: list[dict]) -> str:
    """One line: the code, GPU, versions, date and copy bandwidth of ``rows``."""
    def values(field: str) -> str:
        seen = dict.fromkeys(r[field] for r in rows if r.get(field))
        return ", ".join(seen) or "unknown"

    copy = sorted({r["copy_gbps"] for r in rows if r.get("copy_gbps")})
    bandwidth = f"; copy bandwidth {', '.join(copy)} GB/s (read + write)" if copy else ""
    return (f"Code `{values('commit')}` on an {values('gpu')} ({values('versions')}), "
            f"{values('date')}{bandwidth}.")


def markdown(header: list[str], body: list[list[str]]) -> str:
    """A markdown table, without the columns that hold nothing ("-" or "nan") in every row."""
    body = [["-" if cell == "nan" else cell for cell in cells] for cells in body]
    keep = [i for i in range(len(header)) if not body or any(cells[i] != "-" for cells in body)]
    header, body = [header[i] for i in keep], [[cells[i] for i in keep] for cells in body]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])


def _ratio(x: str) -> str:
    return f"{float(x):.2f}x" if x else "-"


def _ms(row: dict | None, digits: int) -> str:
    return f"{float(row['median_ms']):.{digits}f}" if row else "-"


def _shape(r: dict) -> tuple:
    return (r["dtype"], int(r["batch"]), int(r["seq"]), int(r["block"]), int(r["steps"]), float(r["pad_frac"]))


def _by_case(rows: list[dict], case: Callable[[dict], tuple],
             column: Callable[[dict], str] = lambda r: r["provider"]) -> dict[tuple, dict[str, dict]]:
    """``rows`` by case, then by column (default: the provider); a later row of a cell wins."""
    cases: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for r in rows:
        cases[case(r)][column(r)] = r
    return cases


def op_table(rows: list[dict]) -> str:
    body = []
    for (name, dtype, B, N, b, T, pad), by in _by_case(rows, lambda r: (r["kernel"], *_shape(r))).items():
        graph, eager = by.get("triton+graph"), by.get("triton")
        if graph is None:
            continue
        best = by.get(graph["best_sdpa"])
        best_name = graph["best_sdpa"].removesuffix("+graph")
        body.append([name, dtype, str(B), str(N), str(b), str(T), f"{pad:.0%}", _ms(graph, 4),
                     f"{_ms(best, 4)} ({best_name})" if best else "-",
                     _ratio(graph["speedup_vs_best_sdpa"]), _ratio(eager["speedup_vs_best_sdpa"]) if eager else "-",
                     graph["floor_fraction"] or "-"])
    return markdown(["case", "dtype", "B", "N", "b", "T", "padding", "ours ms (graph)", "best SDPA ms (graph)",
                     "x best SDPA (graph)", "x best SDPA (eager)", "floor fraction (graph)"], body)


def compare_table(rows: list[dict]) -> str:
    """``compare:<variant>:<case>`` rows: the variants against ``old``."""
    def variant(r: dict) -> str:
        return r["kernel"].split(":")[1]

    cases = _by_case(rows, lambda r: (r["kernel"].split(":", 2)[2], *_shape(r)), variant)
    variants = [v for v in dict.fromkeys(map(variant, rows)) if v != "old"]
    header = ["case", "B", "N", "T", "padding", "old ms"]
    for v in variants:
        header += [f"{v} ms", "change"]
    body = []
    for (case, _, B, N, _, T, pad), by in cases.items():
        old = by.get("old")
        cells = [case, str(B), str(N), str(T), f"{pad:.0%}", _ms(old, 4)]
        for v in variants:
            new = by.get(v)
            change = float(new["median_ms"]) / float(old["median_ms"]) - 1 if new and old else None
            cells += [_ms(new, 4), "-" if change is None else f"{change:+.1%}"]
        body.append(cells)
    return markdown(header, body)


def host_table(rows: list[dict]) -> str:
    cases = _by_case(rows, lambda r: (int(r["batch"]), int(r["seq"]), int(r["steps"]), float(r["pad_frac"]) > 0))
    providers = list(dict.fromkeys(r["provider"] for r in rows))
    body = [[str(B), str(N), str(T), "yes" if masked else "no",
             *(f"{float(by[p]['median_ms']) * 1e3:.1f}" if p in by else "-" for p in providers)]
            for (B, N, T, masked), by in sorted(cases.items())]
    return markdown(["B", "N", "T", "mask", *(f"{p} µs" for p in providers)], body)


# bench_memory.py's note fields that name knobs, with the value each has by default.
MEMORY_KNOB_DEFAULTS = (("variant", "default"), ("chunk_bytes", "None"))


def memory_table(rows: list[dict]) -> str:
    """The peak and the knobs it was measured under where they are not the default (``bench_memory.py
    --variant`` and ``--chunk-bytes``: the note's ``variant`` and ``chunk_bytes``); that column only
    where some row has such knobs."""
    body = []
    for r in rows:
        fields = dict(field.split(" ", 1) for field in map(str.strip, r["note"].split(";")) if " " in field)
        knobs = [f"{name} {fields[name]}" for name, default in MEMORY_KNOB_DEFAULTS
                 if fields.get(name, default) != default]
        body.append([r["kernel"].removeprefix("memory:"), r["batch"], r["seq"], r["steps"],
                     f"{float(r['pad_frac']):.0%}", ", ".join(knobs) or "-",
                     fields["peak/(q,k,v,out)"]])
    return markdown(["case", "B", "N", "T", "padding", "knobs", "peak / bytes of q, k, v, out"], body)


def model_table(rows: list[dict]) -> str:
    cases = _by_case(rows, lambda r: (r["kernel"].removeprefix("model:"), int(r["batch"]), int(r["seq"])))
    header = ["model", "B", "N"]
    kinds = (("", "eager"), ("+gpu", "GPU"), ("+compile", "compiled"))
    for _, label in kinds:
        header += [f"SDPA {label} ms", f"converted {label} ms", "x", "bound x"]
    body = []
    for (name, B, N), by in cases.items():
        cells = [name, str(B), str(N)]
        for suffix, _ in kinds:
            sdpa, ours, free = (by.get(p + suffix) for p in ("sdpa", "monarch-triton", "attention-free"))
            cells += [_ms(sdpa, 3), _ms(ours, 3), _ratio(ours["speedup_vs_best_sdpa"]) if ours else "-",
                      _ratio(free["speedup_vs_best_sdpa"]) if free else "-"]
        body.append(cells)
    return markdown(header, body)


def heal_table(rows: list[dict]) -> str:
    cases = _by_case(rows, lambda r: (r["kernel"].removeprefix("heal:"), r["dtype"], int(r["batch"]), int(r["seq"])))
    body = []
    for (name, dtype, B, N), by in cases.items():
        body.append([name, dtype, str(B), str(N), _ms(by.get("sdpa"), 2), _ms(by.get("monarch-triton"), 2),
                     *(_ratio(by[p]["speedup_vs_best_sdpa"]) if p in by else "-"
                       for p in ("monarch-triton", "attention-free"))])
    return markdown(["model", "dtype", "B", "N", "SDPA ms/step", "converted ms/step", "x", "bound x"], body)


TABLES: dict[str, Callable[[list[dict]], str]] = {
    "op": op_table, "compare": compare_table, "host": host_table, "memory": memory_table, "model": model_table,
    "heal": heal_table}


def tables(rows: list[dict], kinds: Iterable[str] = KINDS) -> str:
    """Each kind's table of ``rows`` per code commit, after its provenance line."""
    out = []
    for kind in kinds:
        by_commit: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            if kind_of(r) == kind:
                by_commit[r.get("commit", "")].append(r)
        out += [f"{provenance(mine)}\n\n{TABLES[kind](mine)}" for mine in by_commit.values()]
    return "\n\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("csv", nargs="+", help="CSV files of bench_utils.Row rows")
    p.add_argument("--kind", nargs="+", choices=KINDS, default=list(KINDS), help="tables to make (default: all)")
    p.add_argument("--commit", nargs="+", help="only rows of these code commits")
    p.add_argument("--gpu", help="only rows whose GPU name contains this")
    args = p.parse_args(argv)
    try:
        rows = read_rows(args.csv)
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        print(f"tables.py: cannot read the CSV: {e}", file=sys.stderr)
        return 2
    rows = [r for r in rows if (not args.commit or r.get("commit") in args.commit)
            and (not args.gpu or args.gpu in r.get("gpu", ""))]
    text = tables(rows, args.kind)
    if not text:
        print("tables.py: no rows of the kinds asked match", file=sys.stderr)
        return 1
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
