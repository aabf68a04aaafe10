"""Render ``results/<table>.md`` from ``results/<table>.json`` and the table's YAML files.

    python scripts/report.py experiments/ptb                  # results/ptb.json -> results/ptb.md
    python scripts/report.py experiments/ptb --results /tmp/ptb

The runner (``scripts/run_experiments.py``) calls ``render`` after every run; this command renders
again without running anything (after editing a row's description or reference, say). The page:
the table (one line per run, rows not run yet in their place), a published-number column with its
source, the BLEU convention each value was computed under, which rows were trained under an earlier
recipe, how long each run's collapse-strategy phase lasted (aggressive training, autoencoder
pretraining), the VAE rows compared with the baseline, the settings and commands that made each row,
then samples and homotopies.
"""

import argparse
import json
import math
import shlex
import sys
from pathlib import Path

from textvae.checkpoint import atomic_write
from textvae.config_files import parse_overrides
from textvae.errors import TextVAEError
from textvae.experiments import evaluation, load_table
from textvae.run_summary import describe_phase

REPO = Path(__file__).resolve().parents[1]
STOPPED = {"early": "early stop", "time": "time budget", "max_steps": "step limit", "max_epochs": "epoch limit"}
# settings the runner derives (the first of each in a run's overrides): not command-line settings
DERIVED_ONCE = ("train.eval_every", "objective.pretrain_ae_steps", "train.seed")
OLD_BLEU = "‡"
UNCOUNTED = "◊"  # a current-recipe run left out of the means, comparisons and goal (shortfalls)


def num(v, fmt="{:.2f}") -> str:
    return "–" if v is None else fmt.format(v)


def duration(s: float | None) -> str:
    if s is None:
        return "–"
    if s < 60:
        return f"{s:.0f}s"
    h, m = divmod(int(round(s / 60)), 60)
    return f"{h}h {m:02d}m" if h else f"{m}m"


def md(text: str) -> str:
    return text.replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")


def stop_reason(result: dict, config: dict) -> str:
    """Why training ended: "early" (lr halvings exhausted), "time" (train.max_minutes), "max_steps",
    "max_epochs". Runs from before the trainer reported it: early if it ended before max_epochs."""
    if result.get("stopped"):
        return result["stopped"]
    t = config.get("train", {})
    if t.get("max_steps") and result["step"] >= t["max_steps"]:
        return "max_steps"
    return "max_epochs" if result["epoch"] >= t.get("max_epochs", 0) else "early"


def stopped(r: dict) -> str:
    """The record's stop reason (``stop_reason``'s keys), worked out for records from before it was kept."""
    return r.get("stopped") or stop_reason({"epoch": r["epochs"], "step": r.get("steps", 0)}, r.get("config", {}))


def epochs(r: dict) -> str:
    return f"{r['epochs']} ({STOPPED[stopped(r)]})"


def device(r: dict) -> str:
    """The device, the rows one command trained at once, and the machine's mean load average over the
    training sittings (where recorded): the load shows a training started beside it by another command."""
    n = r.get("concurrent_rows", 1)
    return md(r["device"]) + (f", {n} rows at once" if n > 1 else "") + (f", {load(r)}" if load(r) else "")


def load(r: dict) -> str:
    """'load 2.0 on 2 cores' (the run's ``train_load``), 'over 40% of its training' added when its
    earlier sittings were not measured; '' when none was."""
    if r.get("train_load") is None:
        return ""
    share = r.get("train_load_share", 1.0)
    return f"load {r['train_load']:.1f} on {r['cpu_cores']} cores" + (
        f" over {share:.0%} of its training" if share < 0.95 else "")


def row_of(rows, record: dict):
    name = record.get("experiment", record["row"])
    return next((x for x in rows if x.name == name), None)


def row_name(rows, record: dict) -> str | None:
    """The name of the row ``record`` is a run of (None for a row whose file is gone)."""
    row = row_of(rows, record)
    return None if row is None else row.name


def command_line_settings(record: dict, table, rows) -> list[str]:
    """The record's overrides that came from the command line (--max-epochs, --set ...), not from its row
    or the table's recipe; the data directory and the derived values (the first ``train.eval_every``,
    ``objective.pretrain_ae_steps`` and ``train.seed``, which the runner puts before the command line's)
    are left out."""
    row = row_of(rows, record)
    own = row.overrides if row else []
    derived, out = set(DERIVED_ONCE), []
    for o in record.get("overrides", []):
        key = o.split("=", 1)[0]
        if key in derived:
            derived.discard(key)  # a later one was given on the command line
        elif o not in own and o not in table.recipe and key != "data.data_dir":
            out.append(o)
    return out


def recipe_gaps(record: dict, table) -> list[str]:
    """The items of the table's recipe that the record's run was not trained with: it was trained under
    an earlier recipe (the json keeps rows trained elsewhere), so it compares with the rows missing the
    same items, not with the rest. Read from the run's resolved config (``config``), which says what it
    trained with whatever the command line, preset or row said; a record without one (written before
    the runner kept it) from its overrides, where a later override of the same key (``--set``) wins."""
    if record.get("config"):
        return [o for o in table.recipe if not _config_has(record["config"], *o.split("=", 1))]
    given = dict(o.split("=", 1) for o in record.get("overrides", []))
    return [o for o in table.recipe if given.get(o.split("=", 1)[0]) != o.split("=", 1)[1]]


def _config_has(config: dict, key: str, raw: str) -> bool:
    """Whether the config's ``key`` (``train.lr``) holds the override value ``raw`` (``2e-3``), the
    value read as the configuration reads an override."""
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    want = parse_overrides([f"value={raw}"])["value"]
    if isinstance(node, str) and not isinstance(want, str) and want is not None:
        # a text key given a number-like value keeps it as written (textvae.config._coerce): '010', not 8
        return node == (getattr(want, "text", None) or str(want))
    if isinstance(node, bool) or isinstance(want, bool):
        return node is want
    if isinstance(node, (int, float)):
        try:
            return math.isclose(float(want), float(node), rel_tol=1e-9)
        except (TypeError, ValueError):
            return False
    return node == want


def shortfalls(record: dict, table, rows) -> list[str]:
    """Why a run, whatever its recipe, does not measure what its row's other runs measure: in a table
    whose runs train to their early stop (``to_early_stop``), it stopped at a budget (a time budget, a
    step limit, an epoch limit given on the command line below its row's); in any table, it was
    evaluated otherwise than its row says (another number of importance samples, or only the first N
    test sentences: ``--eval-sentences``, when the split has more)."""
    out = []
    why = stopped(record) if "epochs" in record else None
    if table.to_early_stop and (why in ("time", "max_steps") or (why == "max_epochs" and any(
            o.startswith("train.max_epochs=") for o in command_line_settings(record, table, rows)))):
        out.append(f"stopped at its {STOPPED[why]}, epoch {record['epochs']}")
    row = row_of(rows, record)
    k = evaluation(table, row)["iw_samples"] if row is not None else None
    if k and record.get("iw_samples") and record["iw_samples"] != k:
        out.append(f"k = {record['iw_samples']} importance samples, not the row's {k}")
    limit = eval_sentences(record)
    if limit is not None and record.get("test_sentences") is not None and record["test_sentences"] >= limit:
        out.append(f"evaluated on the first {record['test_sentences']:,} test sentences only (--eval-sentences)")
    return out


def eval_sentences(record: dict) -> int | None:
    """The ``--eval-sentences`` limit of the record's evaluation (None: the whole split), read from the
    record or, for records from before it was kept there, from its evaluation command."""
    if "eval_sentences" in record:
        return record["eval_sentences"]
    words = shlex.split(record.get("eval_command") or "")
    for i, word in enumerate(words):
        value = word.split("=", 1)[1] if word.startswith("--eval-sentences=") else (
            words[i + 1] if word == "--eval-sentences" and i + 1 < len(words) else None)
        if value is not None:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def counted(table, rows, records: list[dict]) -> list[dict]:
    """The runs the means over seeds, the comparisons and the goal count: trained under the table's
    current recipe (no † gaps), to their stop, and evaluated as their row says (no shortfalls)."""
    return [r for r in records if not recipe_gaps(r, table) and not shortfalls(r, table, rows)]


def marks(r: dict, table, rows) -> str:
    """' †' (an earlier recipe) and ' ◊' (a shortfall) after a run's or a row's name, as they apply."""
    return (" †" if recipe_gaps(r, table) else "") + (f" {UNCOUNTED}" if shortfalls(r, table, rows) else "")


def _against_baseline(rows, records: list[dict], table):
    """The baseline row's NLLs and mean PPL (IW), and for every other row with runs under the current
    recipe: (name, its NLLs, mean KL, mean AU, mean PPL (IW), latent in use). None without a baseline
    or its runs."""
    spec = table.baseline or {}
    current = counted(table, rows, records)
    vals = {m: seed_values(rows, current, m) for m in ("nll_iw", "ppl_iw", "kl", "au")}
    base = vals["nll_iw"].get(spec.get("row"))
    if not base:
        return None
    others = []
    for row in rows:
        nll = vals["nll_iw"].get(row.name)
        if row.name == spec["row"] or not nll:
            continue
        kl, au, ppl = (mean_sd(vals[m][row.name])[0] for m in ("kl", "au", "ppl_iw"))
        in_use = kl >= spec.get("min_kl", 5.0) and au >= spec.get("min_au", 10)
        others.append((row.name, nll, kl, au, ppl, in_use))
    return base, mean_sd(vals["ppl_iw"][spec["row"]])[0], others


def baseline_comparison(rows, records: list[dict], table) -> list[str]:
    """The table's ``baseline`` goal, row by row, over seed means of the runs under the current recipe:
    each VAE row whose latent is in use (mean KL >= min_kl nats, mean AU >= min_au) with its mean PPL
    (IW) and mean NLL against the baseline row's, and whether it meets the goal: PPL at most ``max_ppl``
    (when given) and NLL below the baseline's by more than twice the pooled sd (2 or more seeds each).
    Empty without a baseline or its runs."""
    against = _against_baseline(rows, records, table)
    if against is None:
        return []
    spec, (base, base_ppl, others) = table.baseline, against
    out = []
    for name, nll, kl, au, ppl, in_use in others:
        if not in_use:
            continue
        diff, sd = mean_sd(nll)[0] - mean_sd(base)[0], pooled_sd(nll, base)
        short = []
        if spec.get("max_ppl") is not None and ppl > spec["max_ppl"]:
            short.append(f"PPL above {spec['max_ppl']:g}")
        if min(len(nll), len(base)) < 2:
            short.append("one seed, so no verdict on the margin")
        elif diff >= -2 * sd:
            short.append("NLL not below the baseline's by more than 2 pooled sd")
        verdict = "**meets the goal**" if not short else "does not meet it (" + "; ".join(short) + ")"
        out.append(f"{name} ({len(nll)} seed{'s' if len(nll) > 1 else ''}): PPL (IW) {ppl:.2f} against "
                   f"{base_ppl:.2f}, NLL {diff:+.3f} nats per sentence (pooled sd {sd:.3f}), KL {kl:.2f}, "
                   f"AU {au:.1f}: {verdict}")
    return out


def unused_latent_below_baseline(rows, records: list[dict], table) -> list[str]:
    """Rows whose mean NLL (IW) is below the baseline's while their latent is not in use (mean KL or AU
    under the goal's bounds): not candidates for the goal, and named so that a reader does not take a
    low perplexity for a VAE that uses its latent."""
    against = _against_baseline(rows, records, table)
    if against is None:
        return []
    base, _, others = against
    return [f"{name} ({len(nll)} seed{'s' if len(nll) > 1 else ''}: NLL {mean_sd(nll)[0] - mean_sd(base)[0]:+.3f}, "
            f"PPL (IW) {ppl:.2f}, KL {kl:.2f}, AU {au:.1f})"
            for name, nll, kl, au, ppl, in_use in others if not in_use and mean_sd(nll)[0] < mean_sd(base)[0]]


def goal_section(table, rows, records: list[dict]) -> list[str]:
    """The paragraph on the table's ``baseline`` goal (:func:`baseline_comparison`); empty without one."""
    compared = baseline_comparison(rows, records, table)
    if not compared:
        return []
    spec = table.baseline
    ppl_goal = f"mean PPL (IW) at most {spec['max_ppl']:g} and " if spec.get("max_ppl") is not None else ""
    met = [line.split(" (")[0] for line in compared if "meets the goal" in line]
    unused = unused_latent_below_baseline(rows, records, table)
    not_counted = (f" Below the {spec['row']} row's mean NLL but not counted, because the latent is not in use: "
                   + "; ".join(unused) + ".") if unused else ""
    return ["", f"Goal: a VAE row whose latent is in use (mean KL ≥ {spec.get('min_kl', 5.0):g} nats, mean AU ≥ "
            f"{spec.get('min_au', 10)}) with {ppl_goal}a mean NLL (IW) below the {spec['row']} row's by more than "
            f"twice the pooled sd, over the runs trained under the current recipe to their stop and evaluated as "
            f"their row says (none marked † or {UNCOUNTED}). Rows that meet it: {', '.join(met) or 'none'}. " + "; ".join(compared) + "."
            + not_counted]


def bleu_cell(r: dict, table) -> str:
    """BLEU under the table's convention as a number; under another (13a on pre-tokenised text) only a
    mark: the value is in a footnote, not in the column beside current numbers."""
    if r.get("bleu_rec") is None:
        return "–"
    if table.bleu_tokenize is None or r.get("bleu_tokenize") == table.bleu_tokenize:
        return num(r["bleu_rec"], "{:.1f}")
    return OLD_BLEU


def old_bleu_footnote(records: list[dict], table) -> list[str]:
    old = [r for r in records if bleu_cell(r, table) == OLD_BLEU]
    if not old:
        return []
    values = ", ".join(f"{r['row']} {r['bleu_rec']:.1f}" for r in old)
    return ["", f"{OLD_BLEU} BLEU rec computed with sacrebleu's `13a` tokeniser, the old convention: on this "
            f"pre-tokenised corpus it splits `<unk>` into `< unk >` (and `u.s.` into `u . s .`) and so invents "
            f"n-gram matches; this table scores BLEU with `tokenize=\"{table.bleu_tokenize}\"`. The old values, "
            f"not comparable with the column: {values}. Their models were not kept, so they cannot be "
            "recomputed; running a row again replaces its value."]


def phases_section(records: list[dict]) -> list[str]:
    """How long each run's collapse-strategy phase lasted (the json's ``phases``, from its metrics.jsonl)."""
    lines = [f"- {r['row']}: {describe_phase(phase, r['steps'])}."
             for r in records for phase in r.get("phases") or []]
    return ["", "Collapse-strategy phases, read from each run's metrics.jsonl:", "", *lines] if lines else []


def reference_cell(row, record: dict) -> str:
    """The published numbers beside a row, with their source (the row file's, else the json's)."""
    ref = row.reference if row is not None and row.reference else None
    if ref is None:
        if record is None or record.get("reference_ppl") is None:
            return ""
        return f"PPL {record['reference_ppl']} ({md(record['reference_source'])})"
    parts = [f"{key.upper()} {ref[key]}" for key in ("nll", "kl", "ppl") if ref.get(key) is not None]
    return f"{', '.join(parts)} ({md(ref['source'])})"


def references_section(rows) -> list[str]:
    lines = [f"- {r.name}: {reference_cell(r, None)}, {r.reference.get('status', 'status not stated')}; "
             f"differs: {md(r.reference.get('differs', 'not stated'))}." for r in rows if r.reference]
    return ["", "Published numbers beside the rows, their status and what differs from ours:", "", *lines] if lines else []


def unrecorded(r: dict) -> bool:
    """Whether a run lacks the command of its evaluation or of any of its training sittings: it ran
    before the runner kept its command line, and only training it again puts one on record."""
    sittings = r.get("sittings") or []
    return not r.get("eval_command") or not sittings or not all(s.get("command") for s in sittings)


def commands_section(records: list[dict]) -> list[str]:
    """For each row whose run recorded them, the commands of its training sittings (each with its machine,
    time and whether it finished; ≈ where the time was estimated afterwards, the sitting's ``estimated``
    saying how) and of the evaluation in the table: what to type to redo the row."""
    items, none_recorded = [], []
    for r in records:
        sittings = r.get("sittings") or []
        if not r.get("eval_command") and not any(s.get("command") for s in sittings):
            none_recorded.append(r["row"])
            continue
        steps = [f"`{s.get('command') or 'not recorded'}` ({md(s['device'])}, "
                 + ("≈" if s.get("estimated") else "") + duration(s["seconds"])
                 + ("" if s.get("completed", True) else ", interrupted")
                 + (", time estimated from its logs" if s.get("estimated") else "") + ")" for s in sittings]
        steps.append(f"evaluated by `{r.get('eval_command') or 'not recorded'}` "
                     f"({md(r.get('eval_device') or '?')}, {duration(r.get('eval_seconds'))})")
        items.append(f"- {r['row']}: " + "; then ".join(steps) + ".")
    if not items:
        return []
    out = ["", "Commands that made each row, in order (training sittings, then the evaluation in the table):", ""]
    out += items
    if none_recorded:
        out += ["", f"Not recorded for {', '.join(none_recorded)}: they ran before the runner kept its command "
                "line (docs/ptb.md lists what is known); `--missing` trains such runs again."]
    return out


def samples_section(records: list[dict], table) -> list[str]:
    """Samples and a homotopy of each row (of its first seed's run, where it has several), from runs
    trained under the table's recipe only: a † run's model is not the row's current one."""
    lines = ["", "## Samples and homotopies", ""]
    first, old = {}, []
    for r in records:
        if recipe_gaps(r, table):
            old.append(r["row"])
        else:
            first.setdefault(r.get("experiment", r["row"]), r)
    if old:
        lines += [f"Not shown: {', '.join(old)}, trained under an earlier recipe (†).", ""]
    for r in first.values():
        lines += [f"### {r['row']}: {md(r['method'])}", "", f"{md(r['paper'])}.", "",
                  "Three samples from the prior (ancestral sampling):", ""]
        lines += [f"- {md(s)}" for s in r["samples"]]
        if r.get("homotopy"):
            lines += ["", f"Homotopy between the posterior means of two test sentences (greedy decoding, "
                      f"{len(r['homotopy']) - 2} intermediate points; Bowman et al. 2016, sec. 5):", ""]
            last = len(r["homotopy"]) - 1
            lines += [f"{i + 1}. " + (f"**{md(s)}**" if i in (0, last) else md(s)) for i, s in enumerate(r["homotopy"])]
            lines += ["", f"(inputs: “{md(r['homotopy_ends'][0])}” → “{md(r['homotopy_ends'][1])}”)"]
        lines.append("")
    return lines


HEADERS = {"nll_iw": "NLL (IW)", "ppl_iw": "PPL (IW)", "rec": "rec NLL", "kl": "KL", "mi_full": "MI",
           "decomposition_mi": "MI (decomp.)", "decomposition_tc": "TC", "decomposition_dimwise_kl": "dim-wise KL",
           "au": "AU", "elbo": "−ELBO", "mig": "MIG", "dci_disentanglement": "DCI dis.",
           "dci_completeness": "DCI compl.", "dci_informativeness": "DCI info.", "bleu_rec": "BLEU rec",
           "train_seconds": "train time", "distinct_2": "distinct-2", "self_bleu": "self-BLEU",
           "train_tokens_per_s": "train tok/s"}


def seed_values(rows, records: list[dict], metric: str, table=None) -> dict[str, list[float]]:
    """Each row's values of ``metric`` over its seeds' records (rows with none left out); BLEU only
    where it was scored under ``table``'s convention (:func:`bleu_cell`)."""
    out: dict[str, list[float]] = {}
    for r in records:
        row = row_of(rows, r)
        if metric == "bleu_rec" and table is not None and bleu_cell(r, table) == OLD_BLEU:
            continue
        if row is not None and r.get(metric) is not None:
            out.setdefault(row.name, []).append(float(r[metric]))
    return out


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    m = sum(values) / len(values)
    return m, (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0


def pooled_sd(a: list[float], b: list[float]) -> float:
    """The pooled sample standard deviation of two groups."""
    dof = len(a) + len(b) - 2
    return ((mean_sd(a)[1] ** 2 * (len(a) - 1) + mean_sd(b)[1] ** 2 * (len(b) - 1)) / dof) ** 0.5 if dof else 0.0


def summary_section(table, rows, records: list[dict], every_seed: str = "the table below and the json") -> list[str]:
    """Mean ± sd over seeds of the table's ``summary`` metrics, one line per row; ``every_seed``: where
    the page's reader finds each seed's numbers."""
    if not table.summary:
        return []
    # a row with runs that count (the current recipe, trained to their stop, evaluated as the row says)
    # is summarised over those alone; its † or ◊ runs are not averaged in. A row with none that count is
    # summarised over the runs it has, marked as they are.
    counts = counted(table, rows, records)
    current = {row_name(rows, r) for r in counts} - {None}
    records = [r for r in records if r in counts or row_name(rows, r) not in current]
    cols = {m: seed_values(rows, records, m, table) for m in table.summary}
    lines = ["", f"Mean ± sd over training seeds (sample sd; every seed's numbers are in {every_seed}):",
             "", "| row | method | seeds | " + " | ".join(HEADERS.get(m, m) for m in table.summary) + " |",
             "|---|---|---|" + "---|" * len(table.summary)]
    for row in rows:
        n = max((len(v.get(row.name, [])) for v in cols.values()), default=0)
        if not n:
            continue
        cells = []
        for m in table.summary:
            vals = cols[m].get(row.name)
            if not vals:
                cells.append("–")
            elif m == "train_seconds":
                cells.append(duration(mean_sd(vals)[0]))
            else:  # one seed has no sd: its value alone, not "± 0.00"
                mean, sd = mean_sd(vals)
                fmt = "{:,.0f}" if m == "train_tokens_per_s" else "{:.3f}" if m.startswith(("mig", "dci")) else "{:.2f}"
                cells.append(fmt.format(mean) + (f" ± {fmt.format(sd)}" if len(vals) > 1 else ""))
            if vals and len(vals) < n:  # e.g. BLEU under the current convention for some seeds only
                cells[-1] += f" ({len(vals)} of {n} seeds)"
        used = [r for r in records if row_of(rows, r) is row]  # marked as in the per-run table
        mark = ((" †" if any(recipe_gaps(r, table) for r in used) else "")
                + (f" {UNCOUNTED}" if any(shortfalls(r, table, rows) for r in used) else ""))
        lines.append(f"| {row.name}{mark} | {md(row.method)} | {n} | " + " | ".join(cells) + " |")
    return lines


def compare_section(table, rows, records: list[dict]) -> list[str]:
    """For each ``compare`` entry: every row's mean (or each of the entry's ``rows``) against the baseline
    row's, called better only when the difference exceeds twice the pooled sd of the two (both need 2 or
    more seeds for that); an entry with ``ratio: true`` shows the ratio of the means instead of their
    difference (training time: a method's cost). Only the runs that count (:func:`counted`) are compared."""
    out = []
    records = counted(table, rows, records)  # † and ◊ runs are left out
    for c in table.compare:
        vals = seed_values(rows, records, c["metric"])
        base = vals.get(c["baseline"])
        if not base:
            continue
        sign = 1 if c["better"] == "higher" else -1
        verdicts = []
        for row in rows:
            mine = vals.get(row.name)
            if row.name == c["baseline"] or not mine or row.name not in c.get("rows", [row.name]):
                continue
            (m, _), (b, _) = mean_sd(mine), mean_sd(base)
            diff, sd = m - b, pooled_sd(mine, base)
            if min(len(mine), len(base)) < 2:
                verdict = "one seed: no verdict"
            elif sign * diff > 2 * sd:
                verdict = "**better** (beyond 2 pooled sd)"
            elif sign * diff < -2 * sd:
                verdict = "worse (beyond 2 pooled sd)"
            else:
                verdict = "within 2 pooled sd"
            if c.get("ratio"):
                shown = duration if c["metric"] == "train_seconds" else "{:.3f}".format
                load = loads(records, rows, (row.name, c["baseline"])) if c["metric"] == "train_seconds" else ""
                verdicts.append(f"{row.name} {m / b:.2f}x ({shown(m)} against {shown(b)}{load}): {verdict}")
            else:
                verdicts.append(f"{row.name} {diff:+.3f} (pooled sd {sd:.3f}): {verdict}")
        if not verdicts:
            continue
        measure = "ratio of the means" if c.get("ratio") else "mean difference"
        out += ["", f"{HEADERS.get(c['metric'], c['metric'])} against {c['baseline']} ({c['better']} is better; "
                f"{measure} over seeds): " + "; ".join(verdicts) + "."]
    return out


def loads(records: list[dict], rows, names: tuple[str, ...]) -> str:
    """'; machine load during training: a load 2.0 on 2 cores, b not recorded' for the rows ``names``:
    each run's ``train_load`` (the machine's load average against its cores), so that a ratio of times
    says whether the rows trained under the same load."""
    parts = []
    for name in names:
        runs = [r for r in records if row_name(rows, r) == name]
        shown = [load(r) for r in runs]
        parts.append(f"{name} " + ("; ".join(shown) if all(shown) else "not recorded" if not any(shown)
                                   else f"not recorded for {sum(not x for x in shown)} of {len(runs)} runs"))
    return "; machine load during training: " + ", ".join(parts)


def seeded_names(rows, records: list[dict]) -> list[dict]:
    """The records with the run names the rows give them now: a run recorded while its row had one
    seed is named after the row alone (``lstm-lm``); once the row lists several seeds, the run of that
    seed is ``lstm-lm-seed1234`` (textvae.experiments.Experiment.runs). A run of a row that had no seeds
    (``seed`` None) trained its preset's, which its config says. Other records are unchanged."""
    out = []
    for r in records:
        row = row_of(rows, r)
        seed = r.get("seed") if r.get("seed") is not None else ((r.get("config") or {}).get("train") or {}).get("seed")
        if row is not None and len(row.seeds) > 1 and r["row"] == row.name and seed in row.seeds:
            r = {**r, "row": f"{row.name}-seed{seed}", "seed": seed}
        out.append(r)
    return out


def commits_line(records: list[dict]) -> str:
    """The commits of :func:`sitting_commits`, each with the runs that had uncommitted changes there."""
    shown = [commit[:12] + (f" (with uncommitted changes: {', '.join(dirty)})" if dirty else "")
             for commit, dirty in sorted(sitting_commits(records).items())]
    return ", ".join(shown) or "–"


def sitting_commits(records: list[dict]) -> dict[str, list[str]]:
    """Every commit a training sitting ran at, with the runs whose sittings there ran with uncommitted
    changes in the working tree (their code was not exactly that commit's); records without sittings
    give their ``commit`` and ``commit_dirty``."""
    out: dict[str, list[str]] = {}
    for r in records:
        for s in r.get("sittings") or [{"commit": r.get("commit"), "dirty": r.get("commit_dirty")}]:
            if s.get("commit"):
                dirty = out.setdefault(s["commit"], [])
                if s.get("dirty") and r["row"] not in dirty:
                    dirty.append(r["row"])
    return out


def render(table, rows, records: list[dict]) -> str:
    """The table's page: ``records`` (the json's objects) in the rows' order, rows not run yet in place."""
    records = seeded_names(rows, records)
    ks = sorted({r["iw_samples"] for r in records if r.get("iw_samples")})
    folder = table.folder.resolve()
    folder = folder.relative_to(REPO) if folder.is_relative_to(REPO) else folder
    lines = [
        f"# {table.title}", "",
        f"Rendered by `scripts/report.py` from `{table.table}.json`; the rows are the YAML files in "
        f"`{folder}/` (run them with `python scripts/run_experiments.py {folder}`). {table.description} "
        f"Recipe: {' '.join(f'`{o}`' for o in table.recipe) or 'none'}. NLL (IW) with k = "
        f"{', '.join(map(str, ks)) or '–'} importance samples. BLEU: sacrebleu, "
        f"`tokenize=\"{table.bleu_tokenize}\"`.", "",
        f"Commits of the training sittings: {commits_line(records)}.",
        *summary_section(table, rows, records), *compare_section(table, rows, records),
        *goal_section(table, rows, records),
        "", *(["Every run:", ""] if table.summary else []),
        "| row | method | NLL (IW) | PPL (IW) | KL | MI | AU | −ELBO | PPL (ELBO) | BLEU rec | epochs | train time "
        "| eval time | device | published |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    names = [n for row in rows for n, _ in row.runs()]
    by_name = {r["row"]: r for r in records}
    # the rows' order; rows whose file is gone are kept, last
    ordered = [by_name[n] for n in names if n in by_name] + [r for r in records if r["row"] not in names]
    lines += _table_lines(table, rows, ordered)
    earlier: dict[str, list[str]] = {}
    for r in ordered:
        if recipe_gaps(r, table):
            earlier.setdefault(" ".join(f"`{o}`" for o in recipe_gaps(r, table)), []).append(r["row"])
    for missing, names in earlier.items():
        lines += ["", f"† Trained under an earlier recipe, without {missing}: {', '.join(names)}. Compare "
                  "these rows with each other, not with the rest; to bring one up to date, run it again "
                  "(`--rows`) without its old run directory."]
    short = [f"{r['row']} ({'; '.join(shortfalls(r, table, rows))})" for r in ordered if shortfalls(r, table, rows)]
    if short:
        lines += ["", f"{UNCOUNTED} Not counted in the means over seeds, the comparisons or the goal: "
                  + "; ".join(short) + ". A run stopped at a budget trains on with `--extend` (one evaluated "
                  "otherwise is evaluated again by the same command without `--iw-samples` or "
                  "`--eval-sentences`); `--missing --extend` does both for every run."]
    lines += old_bleu_footnote(ordered, table)
    lines += phases_section(ordered)
    extras: dict[str, list[str]] = {}
    for r in ordered:
        extras.setdefault(" ".join(f"`{o}`" for o in command_line_settings(r, table, rows)) or "none",
                          []).append(r["row"])
    if ordered:
        lines += ["", "Settings given on the command line (on top of the preset and each row's own): " + "; ".join(
            f"{', '.join(names)}: {md(settings) if settings == 'none' else settings}"
            for settings, names in extras.items())
            + ". `train.max_epochs` below the preset's and `train.max_minutes` are compute budgets: a row "
              "that stopped at its epoch limit or time budget had not converged. Train and eval times are "
              "wall-clock; where several rows ran at once (`--jobs`) they shared the machine."]
    lines += commands_section(ordered)
    lines += references_section(rows)
    for note in table.notes:
        lines += ["", note.strip()]
    lines += samples_section(ordered, table)
    return "\n".join(lines).rstrip() + "\n"


def _table_lines(table, rows, ordered: list[dict]) -> list[str]:
    """The table's body: each run's line in its row's place, "not run yet" for a run without a record."""
    by_name, out = {r["row"]: r for r in ordered}, []
    for row in rows:
        for name, _ in row.runs():
            r = by_name.pop(name, None)
            out.append(_line(table, row, r, rows) if r is not None else
                       f"| {name} | {md(row.method)} | not run yet |  |  |  |  |  |  |  |  |  |  |  | "
                       f"{reference_cell(row, None)} |")
    return out + [_line(table, None, r, rows) for r in by_name.values()]


def _line(table, row, r: dict, rows) -> str:
    mark = marks(r, table, rows)
    return (f"| {r['row']}{mark} | {md(r['method'])} | {num(r['nll_iw'])} | {num(r['ppl_iw'])} | {num(r['kl'])} | "
            f"{num(r['mi_full'])} | {r['au']} | {num(r['elbo'])} | {num(r['ppl_elbo'])} | {bleu_cell(r, table)} | "
            f"{epochs(r)} | {duration(r['train_seconds'])} | {duration(r.get('eval_seconds'))} | {device(r)} | "
            f"{reference_cell(row, r)} |")


def docs_markers(table) -> tuple[str, str]:
    """The two lines of the table's docs page between which ``write_docs`` puts ``docs_block``."""
    return (f"<!-- from here to the end marker: written by scripts/report.py from results/{table.table}.json -->",
            f"<!-- end of what scripts/report.py writes from results/{table.table}.json -->")


def docs_block(table, rows, records: list[dict]) -> str:
    """What the table's docs page shows of it: the mean ± sd over seeds, the comparisons, the goal."""
    records = seeded_names(rows, records)
    every_seed = f"[results/{table.table}.md](../results/{table.table}.md) and its json"
    lines = [*summary_section(table, rows, records, every_seed), *compare_section(table, rows, records),
             *goal_section(table, rows, records)]
    return "\n".join(lines).strip() + "\n"


def write_docs(table, rows, records: list[dict], repo: Path = REPO) -> Path | None:
    """Put ``docs_block`` between the markers of the table's docs page (``docs`` in table.yaml), so the
    page cannot drift from the json; None when the table names no page."""
    if not table.docs:
        return None
    path = repo / table.docs
    begin, end = docs_markers(table)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise TextVAEError(f"{table.folder / 'table.yaml'}: docs: {table.docs} cannot be read ({e})") from e
    if begin not in text or end not in text.split(begin, 1)[1]:
        raise TextVAEError(f"{path} lacks the lines where the {table.table} table's summary goes (docs: in "
                           f"{table.folder / 'table.yaml'} names the page): put\n{begin}\n{end}\nwhere it belongs")
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    atomic_write(path, f"{head}{begin}\n\n{docs_block(table, rows, records)}\n{end}{tail}")
    return path


def writes_docs(results: Path) -> bool:
    """Whether a table written to ``results`` is the repository's own, whose docs page follows it."""
    return results.resolve() == (REPO / "results").resolve()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("tables", nargs="+", type=Path, help="table folders (experiments/ptb)")
    p.add_argument("--results", type=Path, default=REPO / "results", help="where T.json is and T.md goes")
    args = p.parse_args(argv)
    for folder in args.tables:
        try:
            table, rows = load_table(folder)
        except TextVAEError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        path = args.results / f"{table.table}.json"
        if not path.is_file():
            print(f"error: {path} not found: run the table first (python scripts/run_experiments.py {folder})",
                  file=sys.stderr)
            return 2
        records = json.loads(path.read_text(encoding="utf-8"))
        (args.results / f"{table.table}.md").write_text(render(table, rows, records), encoding="utf-8")
        print(f"{args.results / (table.table + '.md')}: {len(records)} run(s) of {table.table}")
        try:
            docs = write_docs(table, rows, records) if writes_docs(args.results) else None
        except TextVAEError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if docs:
            print(f"{docs}: its summary of {table.table} rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
