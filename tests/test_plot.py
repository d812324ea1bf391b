"""``d2v-plot`` draws real training logs: the tiny_text pretraining run of the session
(tests/text_pipeline.py, ``common.log_format=json``, slow) and a recorded tiny_audio run in
the ``simple`` format (tests/fixtures/logs), through the console script."""
import subprocess
import sys
from pathlib import Path

import pytest

from d2v_plugin.plot import PANELS, make_figure, model_defaults, thresholds_for
from d2v_plugin.training_log import read_log

D2V_PLOT = str(Path(sys.executable).with_name("d2v-plot"))


@pytest.fixture(scope="module")
def text_log(text_pipeline_trained):
    run_dir, train_rows, valid_rows = text_pipeline_trained
    return run_dir / "tiny_text.log", train_rows, valid_rows


@pytest.mark.slow
def test_log_rows_are_the_runs_json_rows(text_log):
    path, train_rows, valid_rows = text_log
    log = read_log(path)
    assert [r["num_updates"] for r in log.train] == [float(r["num_updates"]) for r in train_rows]
    assert [r["loss"] for r in log.train] == [float(r["loss"]) for r in train_rows]
    assert list(log.valid) == ["valid"] and len(log.valid["valid"]) == len(valid_rows) > 0
    assert [r["loss"] for r in log.valid["valid"]] == [float(r["valid_loss"]) for r in valid_rows]
    assert set(log.config) == {"min_target_var", "min_pred_var", "collapse_check_after"}


@pytest.mark.slow
def test_figure_draws_every_curve_and_the_collapse_thresholds(text_log):
    path, train_rows, _ = text_log
    log = read_log(path)
    limits = thresholds_for(log, {"min_target_var": None, "min_pred_var": 0.02})
    assert limits["min_target_var"] == log.config["min_target_var"] and limits["min_pred_var"] == 0.02
    axes = dict(zip(PANELS, make_figure([log], [limits]).axes))
    curve = {k: ax.get_lines()[0] for k, ax in axes.items()}
    assert list(curve["loss"].get_ydata()) == [float(r["loss"]) for r in train_rows]
    # tiny_text has two optimizer groups (composite: default, no_decay): one lr line each
    lr_lines = {ln.get_label().rsplit(" ", 1)[-1]: ln for ln in axes["lr"].get_lines()}
    assert sorted(lr_lines) == ["lr_default", "lr_no_decay"]
    for key, ln in lr_lines.items():
        assert list(ln.get_ydata()) == [float(r[key]) for r in train_rows]
    decay = curve["ema_decay"].get_ydata()
    assert all(0.99 < d < 1.0 for d in decay) and decay[-1] >= decay[0]   # drawn as the decay
    for key, name in (("target_var", "min_target_var"), ("pred_var", "min_pred_var")):
        flat = [ln for ln in axes[key].get_lines() if len(set(ln.get_ydata())) == 1 and "collapse" in ln.get_label()]
        assert [ln.get_ydata()[0] for ln in flat] == [limits[name]]


@pytest.mark.slow
def test_d2v_plot_writes_a_png(text_log, tmp_path):
    path, _, _ = text_log
    out = tmp_path / "curves" / "run.png"
    proc = subprocess.run([D2V_PLOT, str(path), str(path), "-o", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout
    from PIL import Image

    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (900, 1150)


def test_simple_format_log_is_read_like_json():
    """A real ``common.log_format=simple`` log (tiny_audio, 4 updates, validation every 2;
    tests/fixtures/logs): `key=value` training lines and `| key value` validation lines."""
    log = read_log(Path(__file__).parent / "fixtures" / "logs" / "tiny_audio_simple.log")
    assert [r["num_updates"] for r in log.train] == [1, 2, 3, 4]
    assert [r["loss"] for r in log.train] == [10.734, 10.5745, 9.1309, 8.6605]
    assert log.train[1]["ema_decay"] == 0.999003 and log.train[0]["lr"] == 0.0005
    assert {k: [(r["num_updates"], r["loss"]) for r in v] for k, v in log.valid.items()} == {
        "valid": [(2, 8.9645), (4, 8.3002)]}
    assert log.config == {"min_target_var": 0.1, "min_pred_var": 0.01, "collapse_check_after": 5000}


def test_d2v_plot_rejects_a_log_without_training_rows(tmp_path):
    bad = tmp_path / "tqdm.log"
    bad.write_text("epoch 001:  40%|####      | 4/10 [00:01<00:02, loss=3.1]\n")
    proc = subprocess.run([D2V_PLOT, str(bad)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert f"{bad}: no training statistics found" in proc.stderr and "log_format=json" in proc.stderr
    assert model_defaults() == {"min_target_var": 0.1, "min_pred_var": 0.01, "collapse_check_after": 5000}
