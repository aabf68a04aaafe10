"""``textvae`` command line: each verb parses, builds a config, and calls one API function.

Every verb is testable as ``main([...])``, which returns the exit status: 0 on success, 2 for bad
input or an unusable path (one readable paragraph on stderr, no traceback unless ``--debug``), 130
when interrupted (SIGINT or SIGTERM: training saves a checkpoint first), 141 (128 + SIGPIPE, what
``seq`` or ``cat`` give) when the reader of stdout goes away (``textvae sample -n 3000 | head -1``):
quietly, since the reader asked for no more. Warnings (unknown words, cut sentences) print as one
line each, ``textvae VERB: warning: ...``. ``key=value`` overrides and sentences may be written
before, between or after the options.
"""

import argparse
import contextlib
import json
import os
import sys
import warnings
from pathlib import Path

from .errors import TextVAEError
from .signals import StopSignals
from .version import __version__

EXIT_BROKEN_PIPE = 128 + 13  # the shell's status for a process ended by SIGPIPE
# verb -> the positional list that words left over after the options join (overrides, sentences)
TRAILING = {"train": "overrides", "reconstruct": "sentences", "interpolate": "sentences"}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, unless there is none to show (None, a flag's False)."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        hidden = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if "%(default)" in help_text or hidden or action.nargs == 0:
            return help_text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return f"{help_text} (default: %(default)s)".lstrip()
        return help_text


def _device_name(text: str) -> str:
    """An argparse type: auto | cpu | cuda | cuda:N."""
    if text in ("auto", "cpu", "cuda") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"--device must be auto, cpu, cuda or cuda:N, got {text!r}")


def _int_at_least(name: str, minimum: int, maximum: int | None = None):
    """An argparse type: a whole number >= minimum (and <= maximum), with a message naming the option."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{name} must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{name} must be at most {maximum}, got {value}")
        return value
    return parse


def _positive_int(name: str):
    return _int_at_least(name, 1)


def _nonneg_int(name: str):
    return _int_at_least(name, 0)


# every --seed: what torch's generators, numpy's and scikit-learn's random_state all accept
_seed = _int_at_least("--seed", 0, 2**32 - 1)


def _add_sampling(p: argparse.ArgumentParser, greedy_default: bool) -> None:
    g = p.add_argument_group("decoding (a SampleConfig; not part of the model)")
    g.add_argument("--temperature", type=float, default=1.0, help="softmax temperature when sampling")
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 disables)")
    g.add_argument("--beam", type=_positive_int("--beam"), default=1, help="beam size (> 1: beam search)")
    g.add_argument("--greedy", action="store_true", default=greedy_default,
                   help="argmax decoding" + (" (the default here)" if greedy_default else ""))
    g.add_argument("--sample", dest="greedy", action="store_false",
                   help="sample instead of greedy" + ("" if greedy_default else " (the default here)"))
    g.add_argument("--max-len", type=_positive_int("--max-len"), default=50, help="max tokens generated")
    g.add_argument("--form", metavar="LxN", help="poems of N lines of L characters, e.g. 5x4 or 7x4: "
                   "'，' after odd lines, '。' after even ones (character-level models)")
    p.add_argument("--label", help="a conditional model's label to encode and decode with (model.conditional)")
    _add_device(p)


def _add_device(p: argparse.ArgumentParser) -> None:
    """--device, and --revision for a --model given as a hub repo id (every verb that loads one)."""
    p.add_argument("--device", type=_device_name, default="auto",
                   help="where the model runs: auto (a GPU when there is one), cpu, cuda, cuda:N")
    p.add_argument("--revision", help="with a Hugging Face Hub repo id as --model: a branch, tag or commit")


def _load_model(args):
    """``args.model`` loaded onto ``args.device``."""
    import torch

    from .model import TextVAE

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise TextVAEError(f"--device {args.device}: CUDA is not available on this machine; use --device cpu "
                           f"(or auto)")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    return TextVAE.from_pretrained(args.model, device=device, revision=args.revision)


def _sample_config(args):
    from .config import SampleConfig

    return SampleConfig(max_len=args.max_len, temperature=args.temperature, top_p=args.top_p,
                        greedy=args.greedy, beam=args.beam, form=args.form)


class _SubParser(argparse.ArgumentParser):
    """A verb's parser: its help shows every default."""

    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(**kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="textvae", description="Sentence variational autoencoders "
                                     "(Bowman et al. 2016): train, sample, reconstruct, interpolate, evaluate.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"textvae {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB", parser_class=_SubParser)

    p = sub.add_parser("train", help="train a model (built-in corpus when no data is given)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", help="a shipped preset (see `textvae presets`); default: 'default'")
    src.add_argument("--config", help="a YAML or JSON config file")
    p.add_argument("--data", "--data-dir", dest="data_dir", metavar="PATH",
                   help="your corpus: one .txt/.jsonl/.csv file (split train/valid/test by data.split_ratio, "
                        "default 0.9/0.05/0.05, data.split_seed), or a folder with train/valid/test .txt "
                        "(or ptb.*.txt, .jsonl, .csv; a lone train file is split the same way)")
    p.add_argument("--out", required=True, help="run directory (checkpoints, metrics.jsonl, best/)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    p.add_argument("--encoding-errors", choices=("strict", "replace"), help="invalid UTF-8: fail or replace")
    p.add_argument("--no-summary", action="store_true", help="skip the final valid/test table, samples and homotopy")
    p.add_argument("--summary-iw", type=_nonneg_int("--summary-iw"), default=0, metavar="K",
                   help="add importance-weighted NLL/PPL (K samples per sentence) to the summary; slow: "
                        "minutes on PTB for K=50; 0: ELBO-based numbers only")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. train.max_steps=300 model.latent_dim=32")

    p = sub.add_parser("sample", help="sentences from the prior")
    p.add_argument("--model", required=True, help="run directory (its best model) or model directory")
    p.add_argument("-n", type=_positive_int("-n"), default=10, help="how many sentences")
    p.add_argument("--seed", type=_seed, default=0, help="random seed of the latent codes and of sampling")
    _add_sampling(p, greedy_default=False)

    p = sub.add_parser("reconstruct", help="encode sentences and decode them back")
    p.add_argument("--model", required=True, help="run directory (its best model) or model directory")
    p.add_argument("sentences", nargs="*", help="sentences (one per line on stdin when none)")
    p.add_argument("--seed", type=_seed, default=0, help="random seed of sampling (--sample)")
    _add_sampling(p, greedy_default=True)

    p = sub.add_parser("interpolate", help="homotopy between two sentences (Bowman et al. 2016, sec. 5)")
    p.add_argument("--model", required=True, help="run directory (its best model) or model directory")
    p.add_argument("--steps", type=_positive_int("--steps"), default=5, help="points strictly between the ends")
    p.add_argument("--prior", action="store_true", help="between two prior samples instead of two sentences")
    p.add_argument("--seed", type=_seed, default=0,
                   help="random seed of the two prior codes (--prior) and of sampling (--sample)")
    p.add_argument("--markdown", action="store_true", help="endpoints in bold, like the paper's tables")
    p.add_argument("--path", choices=("line", "codes"), default="line",
                   help="line: the straight path (gumbel, vq: each step made a code); codes: a discrete latent's "
                        "code homotopy, A's M codes swapped for B's one position at a time")
    p.add_argument("sentences", nargs="*", metavar="SENTENCE", help="the two endpoint sentences")
    _add_sampling(p, greedy_default=True)

    p = sub.add_parser("traverse", help="decode a sentence (or the prior's centre) with one latent dimension swept")
    p.add_argument("--model", required=True, help="run directory (its best model) or model directory")
    p.add_argument("sentence", nargs="?", metavar="SENTENCE", help="the sentence whose code is swept (default: "
                   "the prior's centre)")
    p.add_argument("--dim", default="all", help="dimensions to sweep: an index, a comma list (0,3) or all")
    p.add_argument("--values", default="-3:3:7", help="values the dimension takes: START:STOP:COUNT or a comma list")
    p.add_argument("--factors", action="store_true", help="also measure each dimension's intervention effect on "
                   "the corpus's known factors (classifiers trained on its labelled train split)")
    p.add_argument("--bases", type=_positive_int("--bases"), default=50,
                   help="with --factors: test sentences whose codes are swept")
    p.add_argument("--data-dir", help="corpus folder for --factors (default: the corpus the model was trained on)")
    p.add_argument("--seed", type=_seed, default=0, help="which test sentences --factors sweeps, and the noise of "
                   "--sample decoding")
    p.add_argument("--plot", metavar="PNG", help="also draw the traversal (and with --factors the intervention "
                   "effect) into this image (needs matplotlib)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_sampling(p, greedy_default=True)

    p = sub.add_parser("evaluate", help="test-set metrics: IW-NLL/PPL, ELBO, KL, MI, AU, BLEU, diversity")
    p.add_argument("--model", required=True, help="run directory (its best model) or model directory")
    p.add_argument("--data-dir", help="corpus folder (default: the corpus the model was trained on)")
    p.add_argument("--split", choices=("valid", "test"), default="test", help="which split to measure")
    p.add_argument("--iw-samples", type=_nonneg_int("--iw-samples"), default=500,
                   help="importance samples per sentence for nll_iw (0 skips it)")
    p.add_argument("--batch-size", type=_positive_int("--batch-size"), default=64, help="sentences per batch")
    p.add_argument("--n-samples", type=_positive_int("--n-samples"), default=100,
                   help="prior samples for distinct-n and self-BLEU")
    p.add_argument("--seed", type=_seed, default=0, help="random seed of the estimators and the samples")
    p.add_argument("--encoding-errors", choices=("strict", "replace"),
                   help="invalid UTF-8 in --data-dir: fail or replace (default: as the model was trained)")
    _add_device(p)
    p.add_argument("--form", metavar="LxN", help="also report well_formed: the fraction of the (free) prior "
                   "samples that are poems of this form, e.g. 5x4")
    p.add_argument("--disentanglement", action="store_true",
                   help="add the KL decomposition (MI, TC, dimension-wise KL; O(N^2) in the split's size) and, when "
                        "the split has factor labels (the built-in corpus's four; a corpus's label as factor "
                        "'label'; {split}.{factor}.labels.txt files; data.factor_fields), MIG and DCI")
    p.add_argument("--resume-file", metavar="FILE", help="save the pass's running sums to FILE every minute and, "
                   "run again after an interruption, continue from there to the same numbers (FILE is removed "
                   "when the pass is done)")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("plot", help="training curves, per-dimension KL, latent PCA map (PNG)")
    p.add_argument("--run", required=True, help="run directory (one that saved no model yet: the figures of its "
                   "log; a model directory: those of the model)")
    p.add_argument("--out", help="where to write PNGs (default: RUN/plots)")
    p.add_argument("--split", choices=("valid", "test"), default="valid", help="split for the PCA map")
    p.add_argument("--labels", help="file with one label per line of the split, to colour the PCA map (read as "
                   "probe --labels reads it; default: the corpus's own labels)")

    p = sub.add_parser("probe", help="logistic regression on posterior means vs bag-of-words, N labelled examples")
    p.add_argument("--model", required=True, help="run directory (its best model) or model directory")
    p.add_argument("--labels", help="one label per line of the split (default: the corpus's own labels)")
    p.add_argument("--data-dir", help="corpus folder (default: the corpus the model was trained on)")
    p.add_argument("--split", choices=("train", "valid", "test"), default="valid")
    p.add_argument("--n", type=_positive_int("--n"), default=100, help="training examples; the rest test")
    p.add_argument("--seed", type=_seed, default=0, help="which examples train")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_device(p)

    p = sub.add_parser("push", help="upload a model and a generated model card to the Hugging Face Hub")
    p.add_argument("--model", required=True, help="run directory (its best model, validation and config) or model "
                   "directory")
    p.add_argument("--repo", help="hub repo id, owner/name (created if needed)")
    p.add_argument("--metrics", help="a JSON file of metrics for the card, e.g. textvae evaluate --json's output "
                   "(default: a run's best validation)")
    p.add_argument("--split", help="the split --metrics was measured on (default: the split the file records, as "
                   "evaluate --json's does; test for a file without one; valid without --metrics)")
    p.add_argument("--command", help="the training command for the card (default: one reproducing a run's config)")
    p.add_argument("--revision", help="branch to push to (default: main)")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--dry-run", metavar="DIR", help="write the files that would be uploaded into DIR; upload nothing")

    p = sub.add_parser("serve", help="a local web page to explore the latent space: sample, reconstruct, "
                       "interpolate, a map of a split, a slider per dimension")
    p.add_argument("--model", required=True, help="run directory, model directory or hub repo id (owner/name)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (the page has no login: keep it local)")
    p.add_argument("--port", type=_int_at_least("--port", 0, 65535), default=8000, help="port (0: any free one)")
    p.add_argument("--split", choices=("train", "valid", "test"), default="valid", help="the split on the map")
    p.add_argument("--map-points", type=_positive_int("--map-points"), default=1000,
                   help="at most this many sentences of the split on the map")
    p.add_argument("--quiet", action="store_true", help="do not log each request")
    _add_device(p)

    p = sub.add_parser("fit-prior", help="fit a VQ model's autoregressive code prior to its training codes")
    p.add_argument("--model", required=True, help="run directory (its best model) or model directory")
    p.add_argument("--data-dir", help="corpus folder (default: the corpus the model was trained on)")
    p.add_argument("--epochs", type=_positive_int("--epochs"), default=20, help="passes over the training codes")
    p.add_argument("--seed", type=_seed, default=0)
    _add_device(p)

    p = sub.add_parser("classify", help="labels an M2 model's classifier q(y|x) predicts (model.classifier)")
    p.add_argument("--model", required=True, help="run directory (its best model) or model directory")
    p.add_argument("file", nargs="?", metavar="FILE", help="one sentence per line (default: stdin)")
    p.add_argument("--json", action="store_true", help="one JSON object per sentence, with every label's probability")
    _add_device(p)

    sub.add_parser("presets", help="list the shipped presets")
    return parser


# --------------------------------------------------------------------------- verbs

def _cmd_train(args) -> int:
    from .config_files import load_config
    from .data import describe_source
    from .model import WEIGHTS_FILE
    from .train import train

    overrides = list(args.overrides)
    if args.data_dir:
        overrides.append(f"data.data_dir={json.dumps(args.data_dir)}")
    if args.encoding_errors:
        overrides.append(f"data.encoding_errors={args.encoding_errors}")
    preset = args.preset or (None if args.config else "default")
    cfg = load_config(preset=preset, config_file=args.config, overrides=overrides)
    given = cfg.data.data_dir
    if given:  # stored absolute, so evaluate, probe and --resume work from any directory
        cfg.data.data_dir = str(Path(given).expanduser().resolve())
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise TextVAEError(f"--out {args.out} is a file; the run directory must be a folder (new, or a run "
                           f"to continue with --resume)")
    if (Path(args.out) / WEIGHTS_FILE).is_file():  # a run keeps its models in best/ and checkpoints/, never here
        raise TextVAEError(f"--out {args.out} is a model directory ({WEIGHTS_FILE}), not a run directory: "
                           f"training would write its checkpoints and config into it. Give a new --out folder "
                           f"(or, to continue the run whose best/ it is, that run's directory with --resume)")
    print(f"textvae train: {'preset ' + repr(preset) if preset else args.config} -> {args.out}", file=sys.stderr)
    print(f"data{f' ({given})' if given and given != cfg.data.data_dir else ''}: {describe_source(cfg.data)}",
          file=sys.stderr)
    result = train(cfg, args.out, resume=args.resume)
    print(f"trained to step {result['step']} (epoch {result['epoch']}); best valid elbo "
          f"{result['best_elbo']:.3f} at step {result['best_step']}; model in {Path(args.out) / 'best'}")
    from .distributed import is_main_process
    from .plot import read_metrics
    from .run_summary import describe_phase, strategy_phases

    if is_main_process():  # the collapse strategy's phase, if it had one: how long it lasted
        for phase in strategy_phases(read_metrics(args.out), result["step"]):
            print(describe_phase(phase, result["step"]))
    if not args.no_summary and is_main_process():  # under torchrun, one summary (rank 0's)
        from .run_summary import print_summary

        with StopSignals(f"the end-of-run summary; the model is saved in {Path(args.out) / 'best'}"):
            print_summary(args.out, cfg, iw_samples=args.summary_iw, best_step=result["best_step"])
    return 0


def _cmd_sample(args) -> int:
    model = _load_model(args)
    for s in model.sample(args.n, _sample_config(args), seed=args.seed, label=args.label):
        print(s)
    return 0


def _read_stdin_lines() -> list[str]:
    """The non-blank lines of stdin, read as UTF-8 whatever the locale (a byte order mark is dropped)."""
    raw = getattr(sys.stdin, "buffer", None)
    if raw is None:  # a text stream with no bytes under it
        return [l.rstrip("\r\n") for l in sys.stdin if l.strip()]
    lines = []
    for n, line in enumerate(raw, 1):
        try:
            text = line.decode("utf-8-sig" if n == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise TextVAEError(f"stdin line {n}: invalid UTF-8 (byte 0x{line[e.start]:02x} at column {e.start + 1}: "
                               f"{e.reason}); convert the input to UTF-8") from None
        if text.strip():
            lines.append(text.rstrip("\r\n"))
    return lines


def _cmd_reconstruct(args) -> int:
    sentences = args.sentences or _read_stdin_lines()
    if not sentences:
        raise TextVAEError("reconstruct: no sentences given; pass them as arguments or one per line on stdin")
    model = _checked_model(args, sentences)
    for s in model.reconstruct(sentences, _sample_config(args), label=args.label, seed=args.seed):
        print(s)
    return 0


def _checked_model(args, sentences):
    """Load ``args.model`` (on ``args.device``) and refuse empty sentences with a message naming them."""
    path = args.model
    model = _load_model(args)
    if model.is_lm:
        raise TextVAEError(f"{path} is a language model (latent_dim=0): it has no latent space to "
                           f"encode into; use a VAE model")
    for i, s in enumerate(sentences, 1):
        if not model.tokenizer.encode(s):
            raise TextVAEError(f"sentence {i} ({s!r}) is empty after tokenisation; give at least one word")
    return model


def _cmd_interpolate(args) -> int:
    sc = _sample_config(args)
    if args.prior:
        if args.sentences:
            raise TextVAEError("interpolate --prior takes no sentences (it interpolates between two prior samples)")
        model = _load_model(args)
        if model.is_lm:
            raise TextVAEError(f"{args.model} is a language model (latent_dim=0): nothing to interpolate")
        lines = model.interpolate_prior(args.steps, sc, label=args.label, path=args.path, seed=args.seed)
    else:
        if len(args.sentences) != 2:
            raise TextVAEError(f"interpolate needs exactly two sentences (got {len(args.sentences)}), "
                               f'e.g. textvae interpolate --model R "first sentence" "second sentence"; '
                               f"or --prior")
        model = _checked_model(args, args.sentences)
        lines = model.interpolate(args.sentences[0], args.sentences[1], args.steps, sc, label=args.label,
                                  path=args.path, seed=args.seed)
    for i, s in enumerate(lines):
        end = i in (0, len(lines) - 1)
        print(f"**{s}**" if args.markdown and end else s)
    return 0


def _cmd_traverse(args) -> int:
    from .traversal import base_code, factor_intervention, parse_dims, parse_values, traverse

    values = parse_values(args.values)
    model = _load_model(args)
    if model.is_lm:
        raise TextVAEError(f"{args.model} is a language model (latent_dim=0): it has no latent space to traverse")
    dims = parse_dims(args.dim, model.latent_dim)
    code = base_code(model, args.sentence, args.label)
    lines = traverse(model, code, dims, values, _sample_config(args), label=args.label, seed=args.seed)
    effect = (factor_intervention(model, dims, values, _sample_config(args), data_dir=args.data_dir,
                                  bases=args.bases, seed=args.seed) if args.factors else None)
    if args.plot:
        from .plot import plot_traversal, require_matplotlib

        require_matplotlib()
        where = f" of {args.sentence!r}" if args.sentence else " from the prior's centre"
        plot_traversal(lines, values, Path(args.plot), effect and effect["intervention_effect"], where)
        print(f"textvae traverse: drew {args.plot}", file=sys.stderr)
    if args.json:
        print(json.dumps({"sentence": args.sentence, "values": values, "traversal": lines, **(effect or {})}))
        return 0
    for d in dims:
        print(f"dim {d}")
        for v, s in zip(values, lines[d]):
            print(f"  {v:+6.2f}  {s}")
    if effect:
        names = list(effect["classifier_accuracy"])
        print(f"\nintervention effect: share of swept decodings of {effect['bases']} {effect['split']} sentences "
              f"whose predicted factor changes")
        print("dim  " + "  ".join(f"{n:>9}" for n in names) + "  moves")
        for d in dims:
            row = effect["intervention_effect"][d]
            print(f"{d:>3}  " + "  ".join(f"{row[n]:9.3f}" for n in names) + f"  {max(row, key=row.get)}")
        print("factor classifiers' held-out accuracy: "
              + ", ".join(f"{n} {a:.3f}" for n, a in effect["classifier_accuracy"].items()))
    return 0


def _cmd_evaluate(args) -> int:
    from .disentanglement import read_factors
    from .metrics import evaluate, model_data, model_split

    model = _load_model(args)
    if args.disentanglement and model.is_lm:
        raise TextVAEError(f"--disentanglement: {args.model} is a language model (latent_dim=0): it has no latent "
                           f"space to decompose or score against factors; evaluate it without the flag")
    data = model_data(model, data_dir=args.data_dir, encoding_errors=args.encoding_errors)
    enc = model_split(model, args.split, data=data)
    factors = read_factors(data, args.split) if args.disentanglement else {}
    if factors and enc.stats.get("dropped"):
        raise TextVAEError(f"--disentanglement: {enc.stats['dropped']} examples of the {args.split} split were dropped "
                           f"when encoding (the model was trained with data.long_policy=drop), so its factor "
                           f"labels no longer line up with the codes; MIG and DCI need every example")
    result = evaluate(model, enc, iw_samples=args.iw_samples, batch_size=args.batch_size,
                      seed=args.seed, n_samples=args.n_samples, form=args.form,
                      progress=f"evaluate {args.split} (k = {args.iw_samples})",
                      decomposition=args.disentanglement, factors=factors or None, resume_file=args.resume_file,
                      log=lambda msg: print(msg, file=sys.stderr, flush=True))
    if args.json:  # with the split the numbers measure: textvae push --metrics labels its card with it
        print(json.dumps({"split": args.split, **result}))
        return 0
    skip = {"au_variances", "kl_per_dim", "mi_full_se", "code_counts"}
    width = max(len(k) for k in result)
    for k, v in result.items():
        if k in skip:
            continue
        text = f"{v:.4f}" if isinstance(v, float) else f"{v}"
        if k == "mi_full" and result.get("mi_full_se"):  # estimator noise: negative values lie within it
            text += f" ± {result['mi_full_se']:.4f} (standard error)"
        print(f"{k:<{width}}  {text}")
    return 0


def _cmd_plot(args) -> int:
    from .plot import plot_run

    # the figures the run's files allow (a run that saved no model: those of its log), each skipped one a warning
    for path in plot_run(args.run, args.out, split=args.split, labels_file=args.labels):
        print(path)
    return 0


def _cmd_probe(args) -> int:
    from .metrics import model_split
    from .probe import probe

    model = _load_model(args)
    split = model_split(model, args.split, data_dir=args.data_dir, labels_file=args.labels, need_labels=True)
    r = probe(model, split, n=args.n, seed=args.seed)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"accuracy on {r['n_test']} {args.split} examples, classifiers trained on {r['n_train']} "
          f"(seed {r['seed']}, {r['classes']} labels):")
    what = "one-hot codes" if r.get("features") == "codes" else "posterior means"
    for name, acc in ((f"{what} ({r['latent_dim']} dims)", r["accuracy_latent"]),
                      (f"bag of words ({r['bow_features']} tokens)", r["accuracy_bow"]),
                      ("majority label", r["accuracy_majority"])):
        print(f"  {name:<32} {acc:.4f}")
    return 0


def _cmd_push(args) -> int:
    from .hub import CARD_METRICS, card_metrics, card_split, push_to_hub, run_metadata, stage
    from .model import TextVAE

    if not (args.repo or args.dry_run):
        raise TextVAEError("push needs --repo owner/name (or --dry-run DIR to see the files it would upload)")
    model = TextVAE.from_pretrained(args.model)
    training_config, metrics = run_metadata(args.model)
    split = "valid"  # the run's best validation record
    if args.metrics:
        try:
            metrics = json.loads(Path(args.metrics).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise TextVAEError(f"--metrics {args.metrics}: not a readable JSON file ({e}); write one with "
                               f"textvae evaluate --model R --json > metrics.json") from None
        if not isinstance(metrics, dict) or not card_metrics(metrics):
            raise TextVAEError(f"--metrics {args.metrics}: no number for the card in it (a JSON object with "
                               f"one or more of {', '.join(CARD_METRICS)}); write one with "
                               f"textvae evaluate --model R --json > metrics.json")
        recorded = metrics.get("split")  # evaluate --json records it; an older file does not
        if args.split and isinstance(recorded, str) and args.split != recorded:
            raise TextVAEError(f"--split {args.split} contradicts --metrics {args.metrics}, which records that it "
                               f"was measured on the {recorded} split; leave --split out, or evaluate the "
                               f"{args.split} split: textvae evaluate --model R --split {args.split} --json")
        try:
            split = card_split(metrics, args.split)
        except TextVAEError as e:  # a recorded split that is no split's name
            raise TextVAEError(f"--metrics {args.metrics}: {e}") from None
    elif args.split and metrics is not None and args.split != "valid":
        raise TextVAEError(f"--split {args.split}: without --metrics the card shows the run's best validation "
                           f"record, measured on the valid split; give the {args.split} split's numbers with "
                           f"--metrics FILE (textvae evaluate --model R --split {args.split} --json > FILE)")
    card = dict(metrics=metrics, split=split, command=args.command, training_config=training_config)
    if args.dry_run:
        out = Path(args.dry_run)
        if out.exists() and any(out.iterdir()):
            raise TextVAEError(f"--dry-run {out} is not empty; give a new or empty folder")
        out.mkdir(parents=True, exist_ok=True)
        for name in stage(model, out, args.repo or "owner/name", **card):
            print(out / name)
        return 0
    print(push_to_hub(model, args.repo, revision=args.revision, private=args.private or None, **card))
    return 0


def _cmd_serve(args) -> int:
    from .serve import Explorer, Limits, make_server

    explorer = Explorer(_load_model(args), args.split, Limits(map_points=args.map_points), name=args.model)
    try:
        server = make_server(explorer, args.host, args.port, quiet=args.quiet)
    except OSError as e:  # the port is taken or privileged, the host no address of this machine
        raise TextVAEError(f"cannot listen on {args.host} port {args.port}: {e.strerror or e}; give another --port "
                           f"(0: any free one) or a --host that names this machine") from None
    host, port = server.server_address[:2]
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"textvae serve: warning: listening on {args.host}: anyone who can reach it can use the model",
              file=sys.stderr)
    print(f"textvae serve: {args.model} at http://{host}:{port}/ (Ctrl-C stops)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def _cmd_fit_prior(args) -> int:
    from .checkpoint import atomic_write
    from .code_prior import fit_code_prior, save_code_prior
    from .metrics import model_split
    from .model import CONFIG_FILE, resolve_model_dir

    d = resolve_model_dir(args.model)
    model = _load_model(args)
    train = model_split(model, "train", data_dir=args.data_dir)
    prior = fit_code_prior(model, train, epochs=args.epochs, seed=args.seed,
                           log=lambda m: print(m, file=sys.stderr, flush=True))
    meta = json.loads((d / CONFIG_FILE).read_text(encoding="utf-8"))
    meta["code_prior"] = save_code_prior(prior, d)
    atomic_write(d / CONFIG_FILE, json.dumps(meta, indent=2) + "\n")
    print(d / meta["code_prior"]["file"])
    return 0


def _cmd_classify(args) -> int:
    if args.file:
        try:
            with open(args.file, encoding="utf-8-sig") as f:
                sentences = [line.rstrip("\n") for line in f if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise TextVAEError(f"cannot read {args.file}: {e}") from None
    else:
        sentences = _read_stdin_lines()
    if not sentences:
        raise TextVAEError("classify: no sentences; give a FILE with one sentence per line, or lines on stdin")
    model = _checked_model(args, sentences)
    labels, probs = model.classify(sentences)
    for s, label, p in zip(sentences, labels, probs):
        if args.json:
            print(json.dumps({"text": s, "label": label, "probs": dict(zip(model.label_names, p.tolist()))}))
        else:
            print(f"{label}\t{p.max().item():.4f}\t{s}")
    return 0


def _cmd_presets(args) -> int:
    from .config_files import list_presets, preset_dict

    for name in list_presets():
        m = preset_dict(name).get("model", {})
        print(f"{name:<12} {m.get('cell', 'lstm')} emb {m.get('emb_dim', '-')} hidden "
              f"{m.get('dec_hidden', '-')} z {m.get('latent_dim', '-')}")
    return 0


VERBS = {"train": _cmd_train, "sample": _cmd_sample, "reconstruct": _cmd_reconstruct,
         "interpolate": _cmd_interpolate, "evaluate": _cmd_evaluate, "plot": _cmd_plot,
         "probe": _cmd_probe, "presets": _cmd_presets, "traverse": _cmd_traverse, "push": _cmd_push,
         "serve": _cmd_serve, "fit-prior": _cmd_fit_prior, "classify": _cmd_classify}


def _join_negative_values(argv: list[str]) -> list[str]:
    """``--values -3:3:7`` as ``--values=-3:3:7``: a sweep that starts with "-" is not an option."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] == "--values" and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            out.append(f"--values={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line as a namespace. Words left over after the options (``--out R a=1 --preset
    tiny b=2``) join the verb's positional list (:data:`TRAILING`) in their order; anything else
    left over is argparse's "unrecognized arguments" error."""
    parser = build_parser()
    argv = _join_negative_values(list(sys.argv[1:] if argv is None else argv))
    args, extra = parser.parse_known_args(argv)
    dest = TRAILING.get(args.verb)
    if extra and (dest is None or any(x.startswith("-") for x in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        setattr(args, dest, list(getattr(args, dest) or []) + extra)
    return args


def _show_warning(verb: str):
    """A ``warnings.showwarning`` that prints one line, ``textvae VERB: warning: ...``, on stderr."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"textvae {verb}: warning: {message}", file=sys.stderr)
    return show


def _quiet_stdout() -> None:
    """After a broken pipe: stdout to /dev/null, so that Python's final flush does not fail again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning(args.verb)
            # each call's input warnings (textvae.model), not only the first of their kind
            warnings.filterwarnings("always", message=r"(unknown word|cut to the model)", category=UserWarning)
            with StopSignals("the command"):  # SIGTERM ends every verb as Ctrl-C does; train, evaluate nest their own
                status = VERBS[args.verb](args)
            sys.stdout.flush()  # a closed pipe shows up here for output still buffered
        return status
    except BrokenPipeError:  # the reader of stdout is gone (| head): nothing left to say to anyone
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    except TextVAEError as e:
        if args.debug:
            raise
        print(f"textvae {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a path that cannot be used: a file where a folder should be, permissions, disk full
        if args.debug:
            raise
        paths = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
        print(f"textvae {args.verb}: error: {paths + ': ' if paths else ''}{e.strerror or e}; check the paths "
              f"given and their permissions (--debug shows where it happened)", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"textvae {args.verb}: interrupted{': ' + str(e) if str(e) else ''}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
