"""The text pipeline the end-to-end text tests share (session fixtures in conftest.py): the
embedded corpus with odd lines -> d2v-text-prep -> a short tiny_text pretraining run.

The valid/test text carries lines the pipeline must survive: empty lines and characters the
sentencepiece model never saw (they become <unk> and reach the model as such).
"""
import json
import subprocess
import sys
from pathlib import Path

from cli_utils import json_rows, run_hydra_train

UPDATES = 60
BIN = Path(sys.executable).parent
ODD_LINES = ["", "A mapping 😀 object maps hashable values to arbitrary objects 世界.", "   "]


def run_command(cmd, cwd, timeout=300) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


def prepare_corpus(root: Path):
    """(root, corpus, data-bin): the embedded corpus, odd lines added to valid and test (with
    labels), prepared by d2v-text-prep with an 800-piece vocabulary."""
    from make_text_corpus import make_corpus

    corpus = root / "corpus"
    make_corpus(corpus, seed=1)
    first_class = (corpus / "classes.txt").read_text().split()[0]
    for split in ("valid", "test"):
        with open(corpus / f"{split}.txt", "a", encoding="utf-8") as f:
            f.write("\n".join(ODD_LINES) + "\n")
        with open(corpus / f"{split}.label", "a", encoding="utf-8") as f:
            f.write("\n".join([first_class] * len(ODD_LINES)) + "\n")
    run_command([BIN / "d2v-text-prep", "--train", corpus / "train.txt", "--valid", corpus / "valid.txt",
                 "--test", corpus / "test.txt", "--out-dir", root / "prep", "--vocab-size", "800"], cwd=root)
    summary = json.loads((root / "prep" / "data-bin" / "text_prep.json").read_text())
    assert summary["splits"]["valid"]["unk_lines"] >= 1 and summary["splits"]["valid"]["empty"] >= 2
    return root, corpus, root / "prep" / "data-bin"


def pretraining_overrides(data_bin: Path, save_dir: Path):
    return [f"task.data={data_bin}", f"checkpoint.save_dir={save_dir}",
            f"optimization.max_update={UPDATES}", "optimizer.groups.default.lr_scheduler.warmup_updates=10",
            "common.log_format=json", "common.log_interval=1", "dataset.validate_interval_updates=0",
            "checkpoint.save_interval_updates=0"]


def pretrain(prepared):
    """(run folder, train rows, valid rows) of UPDATES tiny_text updates on the prepared data."""
    root, _, data_bin = prepared
    run_dir = root / "run"
    run_dir.mkdir()
    proc = run_hydra_train("pretraining", "tiny_text", pretraining_overrides(data_bin, run_dir / "ckpt"),
                           cwd=run_dir)
    return run_dir, json_rows(proc.stdout + proc.stderr), json_rows(proc.stdout + proc.stderr, "valid")
