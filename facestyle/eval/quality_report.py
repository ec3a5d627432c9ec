"""Reports of ``facestyle quality``: one target's result dict as ``figures/<profile>/<name>.{md,json}``.

The markdown holds the main table (:func:`metrics.results_table`), the target's protocol - the "Protocol:" list
of its function's docstring, so the report and the code cannot disagree - per-factor tables and the command
that made it. Headline numbers can be merged into the checkpoint manifest's ``quality`` entries.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..utils import atomic_write, repo_relative
from ..world import FACTORS
from . import metrics as M
from .quality import _KIND_LABEL, CATEGORICAL_TARGET, ORACLE_WEAK_RECALL
from .quality_drift import drift_quality
from .quality_encoders import encoder_quality
from .quality_generator import generator_quality, generator_sweep
from .quality_oracle import oracle_quality
from .quality_pairs import pair_faithfulness

__all__ = ["write_report", "record_in_manifest", "manifest_entry_for"]

_PROTOCOLS = {"generator": generator_quality, "sweep": generator_sweep, "encoders": encoder_quality,
              "drift": drift_quality, "pairs": pair_faithfulness, "oracle": oracle_quality}


def _protocol_text(target: str) -> str:
    doc = (_PROTOCOLS[target].__doc__ or "").strip().splitlines()
    body = [line[4:] if line.startswith("    ") else line for line in doc[1:]]
    keep = []
    for line in body:  # the "Protocol:" bullet list only
        if line.startswith("Returns"):
            break
        keep.append(line)
    # Sphinx roles (":func:`x`") mean nothing in a markdown report; keep the name as code
    return re.sub(r":\w+:`", "`", "\n".join(keep).strip())


def _factor_table(header: Sequence[str], rows: Iterable[Sequence[Any]], precision: int = 3) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(M._fmt(v, precision) for v in r) + " |" for r in rows]
    return lines


def _report_parts(res: dict) -> tuple[str, list[dict], list[str], dict]:
    """(title, main rows, extra markdown lines, manifest headline per entry reference)."""
    target = res["target"]
    if target == "generator":
        title = f"Generator quality: {res['checkpoints']['generator']} (n = {res['n']})"
        rows = [
            {"comparison": "generated vs real A", "fid_oracle": res["fid_gen_vs_real"],
             "freq_gap": res["freq_gap"]["max"], "freq_pass": res["freq_pass"]},
            {"comparison": "real B vs real A (noise floor; freq_gap: oracle on real A)",
             "fid_oracle": res["fid_real_vs_real"], "freq_gap": res["freq_gap_oracle_on_real"]["max"],
             "freq_pass": None},
        ]
        extra = ["", f"## Categorical frequencies (pass: every value within +-{res['freq_tolerance_points']:g} points "
                     f"of real_probs)", ""]
        extra += _factor_table(
            ("factor", "value", "generated", "real_probs", "oracle on real A", "gap (points)", "pass",
             "gap vs oracle on real A"),
            [(f, v, d["generated"], d["real"], d["oracle_on_real"], d["gap_points"], d["pass"],
              d.get("gap_vs_oracle_on_real_points"))
             for f, vals in res["frequencies"].items() for v, d in vals.items()])
        extra += ["", f"Oracle puts {100 * res['domain_real_share']:.1f}% of generated samples in the real domain. "
                      f"Truncation {res['truncation']:g}. The last column reads real renders through the same "
                      "oracle (its own misreadings cancel); the pass column is the issue's criterion, against "
                      "real_probs."]
        fid = res.get("content_fidelity")
        if fid:
            extra += ["", "## Content fidelity (does G(z) draw the content z stands for?)", ""]
            extra += _factor_table(("factor", "oracle(G(z)) = content", "oracle(render(content)) = content"),
                                   [(f, d["g"], d["render"]) for f, d in fid.items()])
            failing = [f for f, vals in res["frequencies"].items() if not all(v["pass"] for v in vals.values())]
            for f in failing:
                d = fid[f]
                extra += ["", f"Confusion of {f} (rows: the content's value; columns: the oracle's reading of G(z) "
                              "| of the render):", ""]
                extra += _factor_table(["content"] + [f"G: {v}" for v in d["values"]]
                                       + [f"render: {v}" for v in d["values"]],
                                       [[v] + d["confusion_g"][j] + d["confusion_render"][j]
                                        for j, v in enumerate(d["values"])], precision=0)
        head = {res["checkpoints"]["generator"]: {"generator": {
            "fid_oracle_gen_vs_real": res["fid_gen_vs_real"], "fid_oracle_real_vs_real": res["fid_real_vs_real"],
            "freq_gap_max_points": res["freq_gap"]["max"], "freq_within_5_points": res["freq_pass"],
            "freq_gap_vs_oracle_on_real_max_points": res["freq_gap_vs_oracle_on_real"]["max"],
            "n": res["n"], "seed": res["seed"], "truncation": res["truncation"]}}}
    elif target == "sweep":
        title = f"Generator checkpoints compared (n = {res['n']}, validation seed {res['seed']})"
        rows = []
        for r in res["runs"]:
            gaps = {k: v for k, v in r["freq_gap"].items() if k != "max"}
            worst = max(gaps, key=gaps.get)
            rows.append({"checkpoint": r["checkpoints"]["generator"], "fid_oracle": r["fid_gen_vs_real"],
                         "fid floor": r["fid_real_vs_real"], "freq_gap": r["freq_gap"]["max"],
                         "worst factor": worst, "gap vs oracle on real": r["freq_gap_vs_oracle_on_real"]["max"],
                         "freq_pass": r["freq_pass"]})
        names = [f for f in res["runs"][0]["frequencies"]]
        extra = ["", "## Max frequency gap per factor (points, against real_probs)", ""]
        extra += _factor_table(["checkpoint"] + names,
                               [[r["checkpoints"]["generator"]] + [r["freq_gap"][f] for f in names]
                                for r in res["runs"]], precision=1)
        head = {}
    elif target == "encoders":
        title = f"Encoder reconstruction quality (n = {res['n']} held-out real renders, seed {res['seeds']['heldout']})"
        rows = []
        for k, r in res["kinds"].items():
            rows.append({"encoder": _KIND_LABEL[k], "lpips_alex": r["lpips_alex"],
                         "attr_agreement": r["agreement"]["mean_all"],
                         "categorical": r["agreement"]["mean_categorical"],
                         "continuous": r["agreement"]["mean_continuous"],
                         "categorical vs truth": r["agreement_truth"]["mean_categorical"],
                         f"categorical >= {CATEGORICAL_TARGET:.0%}": r["meets_target"],
                         "decoder = G": r["decoder_matches_g"]})
        c = res["oracle_ceiling"]
        rows.append({"encoder": "oracle ceiling (oracle(x) vs truth)", "attr_agreement": c["mean_all"],
                     "categorical": c["mean_categorical"], "continuous": c["mean_continuous"]})
        kinds = list(res["kinds"])
        extra = ["", "## Agreement per factor (oracle(x) vs oracle(G(E(x))))", ""]
        extra += _factor_table(["factor"] + [_KIND_LABEL[k] for k in kinds] + ["oracle ceiling"],
                               [[f.name] + [res["kinds"][k]["agreement_per_factor"][f.name] for k in kinds]
                                + [res["oracle_ceiling_per_factor"][f.name]] for f in FACTORS])
        extra += ["", f"The issue requires the W+ encoder to reach >= {CATEGORICAL_TARGET:.0%} categorical agreement."]
        head = {r["checkpoint"]: {"reconstruction": {
            "lpips_alex": r["lpips_alex"], "attr_agreement_categorical": r["agreement"]["mean_categorical"],
            "attr_agreement_continuous": r["agreement"]["mean_continuous"],
            "attr_agreement_all": r["agreement"]["mean_all"],
            "oracle_ceiling_categorical": c["mean_categorical"], "n": res["n"],
            "heldout_seed": res["seeds"]["heldout"]}} for r in res["kinds"].values()}
    elif target == "drift":
        title = f"Semantic drift: {res['checkpoints']['finetuned']} vs {res['checkpoints']['generator']} " \
                f"({res['style']}, n = {res['n']})"
        rows = [{"style": res["style"], "attr_agreement": res["agreement"]["mean_all"],
                 "categorical": res["agreement"]["mean_categorical"],
                 "continuous": res["agreement"]["mean_continuous"], "style_accuracy": res["style_accuracy"],
                 "freq_gap": res["freq_gap_vs_g"]["max"]}]
        extra = ["", "## Agreement per factor (oracle(G(w)) vs oracle(G'(w)))", ""]
        extra += _factor_table(("factor", "agreement"), [(f.name, res["agreement_per_factor"][f.name])
                                                         for f in FACTORS])
        extra += ["", "`freq_gap` here is against the frequencies of G's own outputs, not real_probs. "
                      f"Oracle puts {100 * res['g_real_share']:.1f}% of G(w) in the real domain."]
        if res.get("confusion"):
            extra += ["", "## Which way each categorical factor drifts", "",
                      "Rows: the oracle's value in G(w); columns: its value in G'(w) (counts), then each value's "
                      "share of G(w), of G'(w) and of the style set G' was finetuned on (its true content)."]
            for f, m in res["confusion"].items():
                values = next(x.values for x in FACTORS if x.name == f)
                extra += ["", f"**{f}**", ""]
                extra += _factor_table(["G \\ G'"] + list(values) + ["share in G", "share in G'", "style set"],
                                       [[v] + m[j] + [res["frequencies_g"][f][j], res["frequencies_g_prime"][f][j],
                                                      res["frequencies_style_set"][f][j]]
                                        for j, v in enumerate(values)])
        head = {res["checkpoints"]["finetuned"]: {f"drift_{res['style']}": {
            "attr_agreement_categorical": res["agreement"]["mean_categorical"],
            "attr_agreement_continuous": res["agreement"]["mean_continuous"],
            "attr_agreement_all": res["agreement"]["mean_all"], "style_accuracy": res["style_accuracy"],
            "freq_gap_vs_g_points": res["freq_gap_vs_g"]["max"], "n": res["n"], "seed": res["seed"]}}}
    elif target == "pairs":
        title = f"Pseudo-pair faithfulness: {res['style']} (n = {res['n']} style images)"
        labels = list(res["agreement"])
        rows = [{"images read": lab, "categorical": res["agreement"][lab]["mean_categorical"],
                 "continuous": res["agreement"][lab]["mean_continuous"]} for lab in labels]
        extra = ["", "## Agreement with the true content of S, per factor", ""]
        extra += _factor_table(["factor"] + labels, [[f.name] + [res["agreement_per_factor"][lab][f.name]
                                                                 for lab in labels] for f in FACTORS])
        extra += ["", "## Categorical value shares: the truth of S and the oracle's reading of each image set", ""]
        extra += _factor_table(["factor", "value", "truth"] + labels,
                               [[f.name, v, res["frequencies_truth"][f.name][j]]
                                + [res["frequencies"][lab][f.name][j] for lab in labels]
                                for f in FACTORS if f.kind == "categorical" for j, v in enumerate(f.values)])
        extra += ["", "Pair files: " + ", ".join(f"{k} `{v}`" for k, v in res["files"].items()) + "."]
        head = {}
    elif target == "oracle":
        title = f"Oracle reading per domain: {res['checkpoints']['oracle']} (n = {res['n']} contents per domain" + \
            (f", renders blurred with sigma {res['blur']:g} px)" if res.get("blur") else ")")
        rows = [{"domain": dom, "domain_accuracy": res["domain_accuracy"][dom], **res["mean"][dom]}
                for dom in res["accuracy"]]
        doms = list(res["accuracy"])
        extra = ["", "## Accuracy per factor and domain (categorical: exact; continuous: within 0.1)", ""]
        extra += _factor_table(["factor"] + doms, [[f.name] + [res["accuracy"][d][f.name] for d in doms]
                                                   for f in FACTORS])
        weak = []
        for d in doms:
            for f in FACTORS:
                if f.kind != "categorical":
                    continue
                for j, (v, r) in enumerate(res["recall"][d][f.name].items()):
                    if r is None or r >= ORACLE_WEAK_RECALL:
                        continue
                    row = res["confusion"][d][f.name][j]
                    other = max((jj for jj in range(len(row)) if jj != j), key=row.__getitem__)
                    weak.append((d, f.name, v, r, f"{f.values[other]} ({row[other]} of {sum(row)})"))
        extra += ["", "## Recall per categorical value (share of the renders holding it that are read as it)", ""]
        extra += _factor_table(["factor", "value"] + doms,
                               [[f.name, v] + [res["recall"][d][f.name][v] for d in doms]
                                for f in FACTORS if f.kind == "categorical" for v in f.values])
        extra += ["", f"## Values read back less than {ORACLE_WEAK_RECALL:.0%} of the time", ""]
        extra += _factor_table(["domain", "factor", "value", "recall", "most often read as"], weak) if weak \
            else ["none"]
        head = {res["checkpoints"]["oracle"]: {"reading_per_domain": {
            "categorical": {r["domain"]: r["categorical"] for r in rows},
            "continuous_within_0.1": {r["domain"]: r["continuous"] for r in rows}, "n": res["n"],
            "seed": res["seed"]}}}
    else:
        raise ValueError(f"unknown result target {target!r}: expected generator, sweep, encoders, drift, pairs or "
                         "oracle")
    return title, rows, extra, head


def manifest_entry_for(ref: str | None) -> str | None:
    """The manifest entry a checkpoint reference stands for: the name itself, or the entry whose shipped file is
    that path; None when there is none (e.g. a checkpoint in runs/ or a temporary directory)."""
    from .. import manifest

    if not ref:
        return None
    files = manifest.read().get("files", {})
    if ref in files:
        return ref
    p = Path(ref).expanduser()
    if p.is_file():
        rp = p.resolve()
        for name, e in files.items():
            if isinstance(e, dict) and e.get("file") and (manifest.MINI_DIR / e["file"]).resolve() == rp:
                return name
    return None


def record_in_manifest(head: dict[str, dict], command: str | None = None,
                       names: dict[str, str] | None = None) -> dict[str, str | None]:
    """Merge headline numbers into manifest entries' ``quality`` dicts (other keys of ``quality`` are kept).

    ``head`` maps a checkpoint reference to ``{section: numbers}``; ``names`` may map a reference to an explicit
    manifest entry name. References without an entry are skipped with a message on stderr. Returns
    ``{reference: entry name or None}``.
    """
    from .. import manifest

    done = {}
    for ref, sections in head.items():
        name = (names or {}).get(ref) or manifest_entry_for(ref)
        data = manifest.read().get("files", {})
        if name is None or name not in data:
            print(f"facestyle quality: {ref} has no manifest entry yet; numbers not recorded in the manifest "
                  f"(they are in the report)", file=sys.stderr)
            done[ref] = None
            continue
        quality = dict(data[name].get("quality") or {})
        for sec, nums in sections.items():
            quality[sec] = {**{k: M._plain_value(v) for k, v in nums.items()},
                            **({"command": command} if command else {})}
        manifest.update(name, quality=quality)
        done[ref] = name
    return done


def write_report(results: dict, name: str | None = None, *, record_manifest: bool = False,
                 manifest_names: dict[str, str] | None = None, command: str | None = None) -> dict:
    """Write ``results`` (one target's dict) as ``figures/<profile>/<name>.md`` and ``.json``.

    The main table goes through :func:`metrics.results_table` (so registered metric columns carry their
    protocol lines); the markdown then gets the target's protocol, per-factor tables and the command that made
    it; the JSON's ``meta`` holds the full results dict. Default names: ``mini_quality_generator``,
    ``mini_quality_encoders``, ``mini_quality_drift_<style>``. With ``record_manifest`` the headline numbers are
    merged into the manifest entries of the checkpoints measured (see :func:`record_in_manifest`).
    Returns ``{"md", "json", "manifest"}``.
    """
    from ..manifest import invoked_command
    from ..viz import figure_path

    target = results.get("target")
    profile = results.get("profile", "mini")
    if name is None:
        name = f"{profile}_quality_" + ("generator_sweep" if target == "sweep" else target) \
            + (f"_{results['style']}" if target in ("drift", "pairs") else "")
    command = command or invoked_command()
    title, rows, extra, head = _report_parts(results)
    md_path = figure_path(profile, f"{name}.md")
    json_path = figure_path(profile, f"{name}.json")
    meta = {**results, "command": command}
    if results.get("figure"):
        meta["figure"] = repo_relative(results["figure"])
    M.results_table(rows, md_path, json_path, title=title, meta=meta)
    lines = [md_path.read_text().rstrip("\n"), ""]
    if results.get("figure"):
        lines += [f"![{target}]({Path(results['figure']).name})", ""]
    lines += ["## Protocol", "", _protocol_text(target)] + extra
    lines += ["", f"Measured by `{command}` in {results.get('runtime_s', float('nan')):.0f} s."]
    with atomic_write(md_path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    out = {"md": str(md_path), "json": str(json_path), "manifest": None}
    if record_manifest:
        out["manifest"] = record_in_manifest(head, command=command, names=manifest_names)
    return out
