#!/usr/bin/env python3
"""tools/eval_summary.py OUT: the markdown tables of a tools/eval_sweep.sh run (stdlib only).

Reads OUT/jobs/NAME.{json,rc,log}, OUT/plan.txt and OUT/missing.txt and prints:
  - what ran: jobs finished, failed (with the last line of the log: a refused setting says why),
    killed at the deadline or never started;
  - perplexity per bit width: bytes/token, ppl and delta vs fp16 per text, all settings of a text
    on the same first N tokens: the longest prefix every setting finished (the shards of a
    setting add up: ppl = exp(sum nll / sum scored) over contiguous windows from the start);
  - the same for the longer run (the settings that went past N);
  - seconds per protocol window per setting (one core), for planning;
  - greedy agreement with fp16: tokens equal until the first divergence and in total;
  - the kv error tables (decoserve-eval kv's rows), compression time per page on one core.
"""
import glob
import json
import math
import os
import re
import sys


def load_jobs(out):
    jobs = {}
    plan = os.path.join(out, "plan.txt")
    if os.path.exists(plan):
        with open(plan) as f:
            for line in f:
                name = line.split("\t", 1)[0].strip()
                if name:
                    jobs[name] = {"name": name, "rc": None, "json": [], "log": ""}
    for path in glob.glob(os.path.join(out, "jobs", "*.rc")):
        name = os.path.basename(path)[:-3]
        job = jobs.setdefault(name, {"name": name, "rc": None, "json": [], "log": ""})
        try:
            with open(path) as f:
                job["rc"] = int(f.read().strip() or -1)
        except ValueError:
            job["rc"] = -1
        log = os.path.join(out, "jobs", name + ".log")
        if os.path.exists(log):
            with open(log, errors="replace") as f:
                job["log"] = f.read()
        js = os.path.join(out, "jobs", name + ".json")
        if job["rc"] == 0 and os.path.exists(js):
            with open(js) as f:
                job["json"] = [json.loads(l) for l in f if l.strip()]
    return jobs


def text_name(path):
    base = os.path.basename(path)
    return {"emma.txt": "Emma", "brown.txt": "Brown"}.get(base, base)


def status_section(jobs, out):
    lines = ["## Jobs", ""]
    ok = [j for j in jobs.values() if j["rc"] == 0]
    killed = [j for j in jobs.values() if j["rc"] == 124]
    unstarted = [j for j in jobs.values() if j["rc"] in (125, None)]
    failed = [j for j in jobs.values() if j["rc"] not in (0, 124, 125, None)]
    lines.append(f"{len(jobs)} jobs: {len(ok)} finished, {len(failed)} failed, "
                 f"{len(killed)} killed at the deadline, {len(unstarted)} not started.")
    missing = os.path.join(out, "missing.txt")
    if os.path.exists(missing):
        for m in open(missing).read().split("\n"):
            if m.strip():
                lines.append(f"- missing input: {m.strip()}")
    for j in sorted(failed, key=lambda j: j["name"]):
        last = [l for l in j["log"].strip().split("\n") if l.strip()]
        lines.append(f"- failed (rc {j['rc']}): {j['name']}: {last[-1] if last else '(no output)'}")
    if killed:
        lines.append("- killed at the deadline: " + ", ".join(sorted(j["name"] for j in killed)))
    if unstarted:
        lines.append(f"- not started: {len(unstarted)} jobs")
    return lines + [""]


def ppl_shards(jobs):
    """{text: {config: [records sorted by first_scored]}}"""
    by = {}
    for j in jobs.values():
        if not j["name"].startswith("ppl_"):
            continue
        for r in j["json"]:
            by.setdefault(text_name(r["text"]), {}).setdefault(r["config"], []).append(r)
    for configs in by.values():
        for recs in configs.values():
            recs.sort(key=lambda r: (r["first_scored"], r["end_scored"]))
    return by


def prefix(recs, limit=None):
    """Contiguous shards from token 1: (nll_sum, n_scored, end token, records used)."""
    nll, n, end, used = 0.0, 0, 1, []
    for r in recs:
        if r["first_scored"] != end or (limit is not None and r["end_scored"] > limit):
            if r["first_scored"] > end:
                break
            continue
        nll, n, end = nll + r["nll_sum"], n + r["n_scored"], r["end_scored"]
        used.append(r)
    return nll, n, end, used


def config_key(config):
    if config == "fp16":
        return (16, "")
    method, bits = config.rsplit(":", 1)
    return (int(bits), method)


def ppl_table(by, target):
    """Rows per bit width at `target(text, ends)` tokens per text; returns markdown lines."""
    texts = sorted(by, key=lambda t: {"Emma": 0, "Brown": 1}.get(t, 2))
    at, results, bytes_per = {}, {}, {}
    for t in texts:
        ends = {c: prefix(recs)[2] for c, recs in by[t].items()}
        n_tokens = target(t, ends)
        if not n_tokens:
            continue
        at[t] = n_tokens
        for c, recs in by[t].items():
            nll, n, end, used = prefix(recs, n_tokens)
            if end == n_tokens and n:
                results[(t, c)] = (math.exp(nll / n), used)
                bytes_per[c] = used[0]["bytes_per_token"]
    if not at:
        return []
    configs = sorted({c for (_, c) in results}, key=config_key, reverse=True)
    head = "| kv config | bytes/tok |" + "".join(
        f" {t} ppl ({at[t]} tok) | delta |" for t in at) + " read |"
    lines = []
    widths = sorted({config_key(c)[0] for c in configs if c != "fp16"}, reverse=True)
    for bits in widths:
        rows = ["fp16"] + [c for c in configs if config_key(c)[0] == bits]
        best = {t: min((results[(t, c)][0] for c in rows[1:] if (t, c) in results), default=None)
                for t in at}
        lines += [f"{bits} bits:", "", head, "| --- | --- |" + " --- | --- |" * len(at) + " --- |"]
        for c in rows:
            if c not in bytes_per:
                continue
            cells, reads = [], set()
            for t in at:
                if (t, c) not in results:
                    cells.append(" | |")
                    continue
                p, used = results[(t, c)]
                reads |= {r["read"] for r in used}
                base = results.get((t, "fp16"))
                delta = f"{100 * (p / base[0] - 1):+.2f}%" if base and c != "fp16" else ""
                ps = f"**{p:.4f}**" if c != "fp16" and p == best[t] else f"{p:.4f}"
                cells.append(f" {ps} | {delta} |")
            lines.append(f"| {c} | {bytes_per[c]:.0f} |" + "".join(cells) + f" {'/'.join(sorted(reads))} |")
        lines.append("")
    return lines


def seconds_table(by):
    lines = ["| kv config | CPU seconds per window (mean over shards, one thread) | wall seconds |",
             "| --- | --- | --- |"]
    per = {}
    for configs in by.values():
        for c, recs in configs.items():
            for r in recs:
                n = r["end_window"] - r["first_window"]
                per.setdefault(c, []).append((r.get("cpu_seconds", 0) / n, r["seconds"] / n))
    for c in sorted(per, key=config_key, reverse=True):
        cpu = sum(x[0] for x in per[c]) / len(per[c])
        wall = sum(x[1] for x in per[c]) / len(per[c])
        lines.append(f"| {c} | {cpu:.2f} | {wall:.2f} |")
    return lines + [""]


def greedy_section(jobs):
    runs = {}
    for j in jobs.values():
        if j["name"].startswith("greedy_"):
            for r in j["json"]:
                runs[r["config"]] = r
    if "fp16" not in runs:
        return ["No greedy results with the fp16 reference." if runs else "No greedy results.", ""]
    ref = runs["fp16"]
    n_prompts, max_tokens = len(ref["prompts"]), ref["max_tokens"]
    lines = [f"Greedy agreement with fp16: {n_prompts} fixture prompts, {max_tokens} tokens each "
             "(tokens equal until the first divergence / equal position by position).", "",
             "| kv config | bytes/tok |" + "".join(f" prompt {i} |" for i in range(n_prompts)) +
             " until divergence | equal | read |",
             "| --- | --- |" + " --- |" * n_prompts + " --- | --- | --- |"]
    for c in sorted(runs, key=config_key, reverse=True):
        r = runs[c]
        cells, sp, se = [], 0, 0
        for mine, want in zip(r["prompts"], ref["prompts"]):
            a, b = mine["tokens"], want["tokens"]
            equal = sum(x == y for x, y in zip(a, b))
            first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            sp, se = sp + first, se + equal
            cells.append(f" {first} / {equal} |")
        total = n_prompts * max_tokens
        lines.append(f"| {c} | {r['bytes_per_token']:.0f} |" + "".join(cells) +
                     f" {sp} / {total} | {se} / {total} | {r['read']} |")
    return lines + [""]


KV_ROW = re.compile(r"^(\S+)\s+(\d+)\s+(.*?)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x\s+([\d.]+)\s+([\d.]+)"
                    r"\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$")


def kv_section(jobs):
    lines = []
    for j in sorted(jobs.values(), key=lambda j: j["name"]):
        if not j["name"].startswith("kv_") or j["rc"] != 0:
            continue
        log = j["log"].split("\n")
        lines += [f"`{j['name']}`: {log[0].strip()}", "",
                  "| method | bits | variant | bytes/tok | K err | V err | attn err | K us/page | "
                  "V us/page |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for l in log:
            m = KV_ROW.match(l.strip())
            if m:
                g = m.groups()
                lines.append(f"| {g[0]} | {g[1]} | {g[2]} | {float(g[3]):.0f} | {g[6]} | {g[7]} | "
                             f"{g[10]} | {g[11]} | {g[12]} |")
        lines.append("")
    return lines or ["No kv tables.", ""]


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: tools/eval_summary.py OUT (a tools/eval_sweep.sh --out directory)")
    out = sys.argv[1]
    jobs = load_jobs(out)
    by = ppl_shards(jobs)
    lines = ["# KV codec sweep (tools/eval_sweep.sh)", ""] + status_section(jobs, out)
    lines += ["## Perplexity", "",
              "Every setting of a text on the same first N tokens (the longest prefix all of them "
              "finished); bytes/tok: all layers, K+V; bold: the lowest ppl at that width.", ""]
    common = lambda t, ends: min(ends.values()) if ends else 0
    lines += ppl_table(by, common) or ["No perplexity results.", ""]
    longer = {}
    for t, configs in by.items():
        ends = {c: prefix(recs)[2] for c, recs in configs.items()}
        beyond = [e for e in ends.values() if e > common(t, ends)]
        if beyond:
            longer[t] = min(beyond)
    if longer:
        lines += ["### The longer run", ""]
        lines += ppl_table(by, lambda t, ends: longer.get(t, 0))
    lines += ["### Time", ""] + seconds_table(by)
    lines += ["## Greedy agreement", ""] + greedy_section(jobs)
    lines += ["## KV error tables", "",
              "us/page: CPU time of one dq_compress_page call (one core; the sweep's other jobs ran "
              "on the other cores).", ""] + kv_section(jobs)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
