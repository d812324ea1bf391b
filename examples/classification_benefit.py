"""Does pretraining help? Fine-tune the same tiny architecture for classification (a) from a
data2vec 2.0 checkpoint and (b) from random initialisation, with the same recipe and seeds, and
report valid and test accuracy of each run's best checkpoint (chosen by valid accuracy, as
fairseq's ``checkpoint_best.pt``).

    python examples/classification_benefit.py text --data data/text/corpus \\
        --data-bin data/text/data-bin --work-dir runs/text_benefit --pretrain-updates 3000
    python examples/classification_benefit.py image --data data/digits_corpus \\
        --work-dir runs/image_benefit --pretrain-updates 600

Everything runs through the real CLIs: ``fairseq-hydra-train`` with
``config/pretraining/tiny_{text,image}.yaml`` (unless ``--pretrained`` is given) and
``config/finetuning/tiny_{text,image}_classification.yaml`` (fairseq's ``sentence_prediction``
criterion, model ``data2vec_classification``; random init = ``model.no_pretrained_weights=true``).
Text data comes from ``d2v-text-classification-prep`` (task ``sentence_prediction``), images
from their class folders (task ``data2vec_image_classification``). Accuracy is counted here
over every example of the split (``fairseq-validate ... --valid-subset test`` reports the same).
"""
import argparse
import json
import statistics
import sys
from pathlib import Path

from _hydra_run import REPO, hydra

from d2v_plugin import probe_options

INITS = {"pretrained": [], "random init": ["model.no_pretrained_weights=true"]}


def accuracy(checkpoint: Path, data: Path, split: str) -> dict:
    """Correct / total over every example of ``split`` for a classification checkpoint."""
    import logging

    import torch

    import d2v_plugin  # noqa: F401
    from fairseq import checkpoint_utils

    logging.getLogger("PIL").setLevel(logging.INFO)  # not one debug line per decoded image

    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(checkpoint)], arg_overrides={"data": str(data)})
    model = models[0].eval()
    task.load_dataset(split, task_cfg=cfg.task)
    dataset = task.dataset(split)
    batches = task.get_batch_iterator(dataset=dataset, max_sentences=64, required_batch_size_multiple=1,
                                      num_workers=0).next_epoch_itr(shuffle=False)
    correct = total = 0
    head = cfg.criterion.classification_head_name
    with torch.no_grad():
        for sample in batches:
            logits, _ = model(**sample["net_input"], features_only=True, classification_head_name=head)
            target = sample["target"].view(-1)
            correct += int((logits.argmax(dim=-1) == target).sum())
            total += target.numel()
    if total != len(dataset):
        raise RuntimeError(f"{split}: scored {total} of {len(dataset)} sentences")
    return {"correct": correct, "total": total, "accuracy": 100.0 * correct / total}


def summarize(runs: list) -> dict:
    out = {}
    for init in INITS:
        tests = [r["test"]["accuracy"] for r in runs if r["init"] == init]
        valids = [r["valid"]["accuracy"] for r in runs if r["init"] == init]
        if tests:
            out[init] = {"test_mean": statistics.mean(tests), "valid_mean": statistics.mean(valids),
                         "test_min": min(tests), "test_max": max(tests), "seeds": len(tests)}
    return out


def format_table(report: dict) -> str:
    lines = ["| init | seed | valid acc | test acc |", "|---|---|---|---|"]
    for r in report["runs"]:
        lines.append(f"| {r['init']} | {r['seed']} | {r['valid']['accuracy']:.1f} % | {r['test']['accuracy']:.1f} % |")
    for init, s in report["summary"].items():
        lines.append(f"| **{init}, mean of {s['seeds']}** | | {s['valid_mean']:.1f} % | "
                     f"{s['test_mean']:.1f} % (min {s['test_min']:.1f}, max {s['test_max']:.1f}) |")
    return "\n".join(lines)


def prepare_text(args, work: Path):
    """(fine-tuning data, classes, pretraining overrides, fine-tuning overrides) for text."""
    from d2v_plugin.text.classification_prep import prepare_classification

    data = work / "topic-bin"
    prep = prepare_classification(str(args.data), str(args.data_bin), str(data),
                                  train_per_class=args.train_per_class)
    return data, prep["classes"], [f"task.data={args.data_bin.resolve()}"], \
        [f"task.data={data}", f"task.num_classes={prep['num_classes']}"]


def prepare_image(args, work: Path):
    """The same for image folders (classes = the train split's sub-folders)."""
    from d2v_plugin.data.image_folder import scan_image_folder

    data = args.data.resolve()
    classes = list(scan_image_folder(str(data), "train").classes)
    return data, classes, [f"task.data={data}"], [f"task.data={data}"]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    modality = parser.add_subparsers(dest="modality", required=True)
    text = modality.add_parser("text", help="sentence classification (sentence_prediction)",
                               formatter_class=probe_options.HelpFormatter)
    text.add_argument("--data", type=Path, default=REPO / "data" / "text" / "corpus",
                      help="examples/make_text_corpus.py's folder ({split}.txt, .label, classes.txt)")
    probe_options.add_deprecated(text, "--corpus", "--data", "data", type=Path)  # the probes' vocabulary
    text.add_argument("--data-bin", type=Path, default=REPO / "data" / "text" / "data-bin",
                      help="d2v-text-prep's data-bin of the same corpus (pretraining data)")
    text.add_argument("--train-per-class", type=int,
                      help="fine-tune on a seeded sample of this many training sentences per class")
    image = modality.add_parser("image", help="image classification (data2vec_image_classification)",
                                formatter_class=probe_options.HelpFormatter)
    image.add_argument("--data", type=Path, default=REPO / "data" / "digits_corpus",
                       help="image folders <data>/<split>/<class>/ (examples/make_image_corpus.py)")
    for sub in (text, image):
        sub.add_argument("--work-dir", type=Path, help="default: runs/<modality>_benefit")
        sub.add_argument("--pretrained", type=Path, help="use this checkpoint instead of pretraining one")
        sub.add_argument("--pretrain-updates", type=int, default=3000 if sub is text else 600,
                         help="updates of the tiny pretraining (without --pretrained)")
        sub.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3],
                         help="fine-tuning seeds, each run from both inits (mean, min and max reported)")
        sub.add_argument("--finetune-override", action="append", default=[],
                         help="extra hydra override for both fine-tunings (repeatable)")
        sub.add_argument("--inits", nargs="+", choices=sorted(INITS), default=list(INITS),
                         help="run only these (e.g. two processes in parallel, one per init)")
        sub.add_argument("--reuse", action="store_true",
                         help="keep a fine-tuning whose folder already holds checkpoint_best.pt")
    args = parser.parse_args(argv)

    work = (args.work_dir or REPO / "runs" / f"{args.modality}_benefit").resolve()
    work.mkdir(parents=True, exist_ok=True)
    setup = prepare_text if args.modality == "text" else prepare_image
    data, classes, pretrain_data, finetune_data = setup(args, work)
    timings = {}
    pretrained = args.pretrained.resolve() if args.pretrained else work / "pretrain" / "checkpoint_last.pt"
    if args.pretrained is None and not pretrained.exists():
        (work / "pretrain").mkdir(exist_ok=True)
        timings["pretrain"] = hydra("pretraining", f"tiny_{args.modality}", [
            *pretrain_data, f"optimization.max_update={args.pretrain_updates}",
            f"model.ema_anneal_end_step={args.pretrain_updates}",
            f"optimizer.groups.default.lr_scheduler.warmup_updates={max(1, args.pretrain_updates // 10)}",
            f"checkpoint.save_dir={work / 'pretrain'}", "checkpoint.save_interval_updates=0",
        ], work / "pretrain" / "train.log")

    runs = []
    for seed in args.seeds:
        for init in args.inits:
            extra = INITS[init]
            run = work / f"{'pretrained' if not extra else 'random'}_seed{seed}"
            run.mkdir(exist_ok=True)
            best = run / "checkpoint_best.pt"
            if not (args.reuse and best.exists()):
                timings[run.name] = hydra("finetuning", f"tiny_{args.modality}_classification", [
                    *finetune_data, f"model.model_path={pretrained}", f"checkpoint.save_dir={run}",
                    f"common.seed={seed}", *extra, *args.finetune_override,
                ], run / "train.log")
            runs.append({"init": init, "seed": seed, "checkpoint": str(best),
                         "valid": accuracy(best, data, "valid"), "test": accuracy(best, data, "test")})
            print(f"{init} seed {seed}: valid {runs[-1]['valid']['accuracy']:.1f} %, "
                  f"test {runs[-1]['test']['accuracy']:.1f} %", flush=True)

    report = {"modality": args.modality, "pretrained_checkpoint": str(pretrained), "classes": classes,
              "runs": runs, "summary": summarize(runs), "finetune_overrides": args.finetune_override,
              "wall_seconds": timings}
    (work / "results.json").write_text(json.dumps(report, indent=1))
    print(format_table(report))
    return report


if __name__ == "__main__":
    main()
    sys.exit(0)
