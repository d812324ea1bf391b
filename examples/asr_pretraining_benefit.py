"""Does pretraining help? Fine-tune the same tiny architecture for CTC ASR (a) from the tiny
data2vec 2.0 checkpoint and (b) from random initialisation, with the same budget, decode the
held-out test split and report both WERs: greedy CTC, and (when flashlight-text is installed)
beam search with a lexicon and a bigram LM built from the *training* transcripts only, the LM
weight chosen on the valid split for each model separately.

    python examples/asr_pretraining_benefit.py --data data/speech_corpus --work-dir runs/benefit

Everything runs through the real CLIs (fairseq-hydra-train, d2v-infer). Both runs use the
same fine-tuning recipe, everything trainable from the first update, so they differ only in
their initial weights (``--paper-recipe-for-pretrained`` freezes the pretrained feature
encoder as the paper does, which at this tiny scale hurts the pretrained run).

Low-resource fine-tuning (``--label-minutes 10``): both models fine-tune on the first
utterances of ``train`` that fit in that many minutes (the corpus interleaves its voices, so
every voice is in them) and the LM is built from those transcripts only, while pretraining
used all the audio (``--pretrain-subset unlabelled``, or a ``--pretrained`` checkpoint).
"""
import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from _hydra_run import REPO, hydra


def best_valid_wer(log: Path) -> float:
    wers = [float(json.loads(line[line.index("{"):])["valid_wer"])
            for line in log.read_text().splitlines() if "[valid]" in line and "valid_wer" in line]
    return min(wers) if wers else float("nan")


def lm_available() -> bool:
    try:
        import flashlight.lib.text.decoder  # noqa: F401
    except ImportError:
        return False
    return True


def labelled_subset(data: Path, minutes: Optional[float], out: Path) -> Path:
    """``data`` itself, or a corpus folder whose ``train`` is the first utterances of ``data``'s
    train split that fit in ``minutes`` (the other splits and the dictionary are linked)."""
    if minutes is None:
        return data
    from d2v_plugin.data.manifest import ManifestError, read_manifest

    try:
        entries = read_manifest(str(data / "train.tsv")).entries
    except ManifestError as e:
        raise SystemExit(str(e)) from None
    budget = minutes * 60 * 16000  # the corpus is 16 kHz
    used = keep = 0
    for entry in entries:
        if used + entry.num_samples > budget:
            break
        used += entry.num_samples
        keep += 1
    if keep == 0:
        raise SystemExit(f"--label-minutes {minutes}: not even one train utterance fits")
    out.mkdir(parents=True, exist_ok=True)
    for ext in ("tsv", "ltr", "wrd"):  # the manifest's root line, then one line per utterance
        lines = (data / f"train.{ext}").read_text().splitlines()
        (out / f"train.{ext}").write_text("\n".join(lines[:keep + (ext == "tsv")]) + "\n")
    for other in data.iterdir():
        link = out / other.name
        if not other.name.startswith("train.") and not link.exists():
            link.symlink_to(other.resolve())
    (out / "subset.json").write_text(json.dumps({"from": str(data), "utterances": keep,
                                                 "minutes": round(used / 16000 / 60, 2)}))
    return out


def decode_with_lm(infer, checkpoint: Path, data: Path, lm_dir: Path, out: Path, weights) -> dict:
    """Pick the LM weight on valid (lowest WER, ties -> lower weight), then decode test with it."""
    lm_args = ["--lm", str(lm_dir / "lm.arpa"), "--lexicon", str(lm_dir / "lexicon.txt"),
               "--beam", "100", "--word-score", "0", "--cpu"]
    valid = {}
    for w in weights:
        r = infer([str(checkpoint), "--data", str(data), "--split", "valid", "--lm-weight", str(w),
                   "--results-dir", str(out / f"valid_lm{w}"), *lm_args])
        valid[w] = r.wer.rate
    best = min(weights, key=lambda w: (valid[w], w))
    test = infer([str(checkpoint), "--data", str(data), "--split", "test", "--lm-weight", str(best),
                  "--results-dir", str(out / "test"), *lm_args])
    return {"lm_weight": best, "valid_wer_lm": valid[best], "test_wer_lm": test.wer.rate,
            "test_cer_lm": test.cer.rate}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO / "data" / "speech_corpus")
    parser.add_argument("--work-dir", type=Path, default=REPO / "runs" / "asr_benefit")
    parser.add_argument("--pretrain-config", default="tiny_audio",
                        help="config/pretraining/<name>.yaml pretrained when no --pretrained is given")
    parser.add_argument("--pretrain-subset", default="train",
                        help="split the pretraining reads, e.g. unlabelled (make_speech_corpus.py --unlabelled-hours)")
    parser.add_argument("--pretrain-updates", type=int, default=3000)
    parser.add_argument("--finetune-config", default="tiny", help="config/finetuning/<name>.yaml")
    parser.add_argument("--label-minutes", type=float, default=None,
                        help="fine-tune on (and build the LM from) only this many minutes of train")
    parser.add_argument("--finetune-updates", type=int, default=1500)
    parser.add_argument("--pretrained", type=Path, default=None,
                        help="use this pretrained checkpoint instead of pretraining one")
    parser.add_argument("--paper-recipe-for-pretrained", action="store_true",
                        help="fine-tune the pretrained model with a frozen feature encoder and the config's "
                             "freeze_finetune_updates (random init always trains everything)")
    parser.add_argument("--only", choices=["pretrained", "random"], default=None,
                        help="run one of the two fine-tunings (e.g. both in parallel, one core each)")
    parser.add_argument("--reuse-finetuned", action="store_true",
                        help="skip a fine-tuning whose run folder already holds checkpoint_best.pt "
                             "(re-decode earlier runs)")
    parser.add_argument("--lm-weights", type=float, nargs="*", default=[0.25, 0.5, 1.0, 2.0],
                        help="LM weights tried on valid; none: greedy decoding only")
    parser.add_argument("finetune_overrides", nargs="*",
                        help="hydra overrides applied to both fine-tunings, e.g. optimization.lr=[0.001]")
    args = parser.parse_args(argv)
    from d2v_plugin.asr.infer import main as infer

    data = args.data.resolve()
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    timings = {}

    pretrained = args.pretrained.resolve() if args.pretrained else None
    if pretrained is None:
        pretrained = work / "pretrain" / "checkpoint_last.pt"
        (work / "pretrain").mkdir(exist_ok=True)
        if not pretrained.exists():
            timings["pretrain"] = hydra("pretraining", args.pretrain_config, [
                f"task.data={data}", f"dataset.train_subset={args.pretrain_subset}",
                f"checkpoint.save_dir={pretrained.parent}",
                f"optimization.max_update={args.pretrain_updates}",
                f"lr_scheduler.warmup_updates={max(1, args.pretrain_updates // 10)}",
                f"model.ema_anneal_end_step={args.pretrain_updates}",
                "dataset.disable_validation=true", "checkpoint.save_interval_updates=1000",
                "common.log_format=json", "common.log_interval=50"], work / "pretrain" / "train.log")

    labelled = labelled_subset(data, args.label_minutes, work / f"labels_{args.label_minutes or 0:g}min")
    common = [f"task.data={labelled}", f"optimization.max_update={args.finetune_updates}",
              f"model.w2v_path={pretrained}", f"dataset.validate_interval_updates={max(args.finetune_updates // 6, 1)}",
              f"checkpoint.save_interval_updates={max(args.finetune_updates // 6, 1)}",
              *args.finetune_overrides]
    # One fine-tuning recipe for both, differing only in the initial weights. Everything is
    # trainable from the first update: at this scale the paper's recipe (frozen feature
    # encoder, delayed encoder updates) handicaps the pretrained run (README table).
    same_recipe = ["model.feature_grad_mult=1.0", "model.freeze_finetune_updates=0"]
    if args.paper_recipe_for_pretrained:
        same_recipe = []
    init = "given checkpoint" if args.pretrained else args.pretrain_config
    variants = {
        f"pretrained (data2vec 2.0, {init})": same_recipe,
        "random init": ["+model.no_pretrained_weights=true", "model.feature_grad_mult=1.0",
                        "model.freeze_finetune_updates=0"],
    }
    lm_dir = None
    if args.lm_weights and lm_available():
        from d2v_plugin.asr.ngram import main as write_lm
        lm_dir = work / "lm"
        write_lm([str(labelled / "train.wrd"), "--out-dir", str(lm_dir), "--order", "2"])
    elif args.lm_weights:
        print("flashlight-text is not installed: greedy decoding only (pip install 'd2v_plugin[lm]')")
    results = {}
    for name, extra in variants.items():
        if args.only and not name.startswith(args.only):
            continue
        run = work / ("finetune_" + name.split()[0].replace("(", ""))
        run.mkdir(exist_ok=True)
        log = run / "train.log"
        if not (args.reuse_finetuned and (run / "checkpoint_best.pt").exists()):
            timings[name] = hydra("finetuning", args.finetune_config, common + [f"checkpoint.save_dir={run}"] + extra, log)
        decoded = infer([str(run / "checkpoint_best.pt"), "--data", str(data), "--split", "test",
                         "--results-dir", str(run / "decode"), "--cpu"])
        test_wer, test_cer = decoded.wer.rate, decoded.cer.rate
        results[name] = {"valid_wer": best_valid_wer(log), "test_wer": test_wer, "test_cer": test_cer,
                         "finetune_seconds": round(timings[name]) if name in timings else None}
        if lm_dir is not None:
            results[name].update(decode_with_lm(infer, run / "checkpoint_best.pt", data, lm_dir,
                                                run / "decode_lm", args.lm_weights))

    results_file = work / (f"results_{args.only}.json" if args.only else "results.json")
    results_file.write_text(json.dumps({"results": results, "timings": timings,
                                                   "pretrain_updates": args.pretrain_updates,
                                                   "finetune_updates": args.finetune_updates}, indent=1))
    source = f"{args.pretrain_updates} updates" if "pretrain" in timings else f"given checkpoint {pretrained}"
    print(f"\npretraining: {source}; fine-tuning: {args.finetune_updates} updates each")
    print("| initialisation | best valid WER | test WER greedy | test CER greedy | test WER lexicon+bigram LM "
          "(weight from valid) | fine-tune wall time |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        lm = f"{r['test_wer_lm']:.1f} ({r['lm_weight']:g})" if "test_wer_lm" in r else "n/a"
        wall = f"{r['finetune_seconds']} s" if r["finetune_seconds"] is not None else "reused"
        print(f"| {name} | {r['valid_wer']:.1f} | {r['test_wer']:.1f} | {r['test_cer']:.1f} | {lm} | {wall} |")
    if "pretrain" in timings:
        print(f"pretraining wall time: {timings['pretrain']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
