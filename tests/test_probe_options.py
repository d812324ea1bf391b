"""The probe commands share one flag vocabulary (d2v_plugin/probe_options.py): same names,
defaults in every --help, old spellings still parsed (with a warning) into the new options."""
import pytest

from d2v_plugin.text import probe as text_probe
from d2v_plugin.vision import probe as image_probe

SHARED = ("--data", "--random-init", "--compare-random", "--seeds", "--C", "--batch-size", "--json", "--log-level")


@pytest.mark.parametrize("module", [text_probe, image_probe], ids=["text", "image"])
def test_help_lists_the_shared_flags_with_defaults(module, capsys):
    with pytest.raises(SystemExit) as exit_:
        module.build_parser().parse_args(["--help"])
    assert exit_.value.code == 0
    options = capsys.readouterr().out.split("\noptions:\n")[1]   # the flags, not the description
    help_text = " ".join(options.split())
    for flag in SHARED:
        assert flag in help_text, flag
    assert f"(default: {list(module.DEFAULT_C if module is text_probe else module.DEFAULT_C_GRID)})" in help_text
    assert "(default: INFO)" in help_text
    for old in ("--corpus", "--random-seeds", "--c-grid"):
        assert old not in help_text       # deprecated spellings work but are not advertised


def test_text_probe_old_spellings_map_to_the_new_flags(capsys):
    from d2v_plugin import probe_options

    args = probe_options.parse_args(text_probe.build_parser(), [
        "ckpt.pt", "--corpus", "corpus/", "--data-bin", "bin/", "--random-seeds", "1", "2", "--C", "0.1"])
    assert (args.data, args.data_bin, args.seeds, args.compare_random, args.C) == ("corpus/", "bin/", [1, 2], True, [0.1])
    assert probe_options.models_to_score(args) == [False, True]
    err = capsys.readouterr().err
    assert "--corpus is deprecated, use --data" in err and "--random-seeds is deprecated" in err


def test_image_probe_old_spellings_map_to_the_new_flags(capsys):
    from d2v_plugin import probe_options

    args = probe_options.parse_args(image_probe.build_parser(), [
        "ckpt.pt", "--data", "digits/", "--c-grid", "0.1", "10", "--seed", "7", "--random-init"])
    assert (args.C, args.seeds, args.random_init) == ([0.1, 10.0], [7], True)
    assert probe_options.models_to_score(args) == [True]
    assert "--c-grid is deprecated, use --C" in capsys.readouterr().err


@pytest.mark.parametrize("module", [text_probe, image_probe], ids=["text", "image"])
def test_data_is_required_and_random_modes_exclude_each_other(module, capsys):
    from d2v_plugin import probe_options

    with pytest.raises(SystemExit):
        probe_options.parse_args(module.build_parser(), ["ckpt.pt"])
    assert "required: --data" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        probe_options.parse_args(module.build_parser(), ["ckpt.pt", "--data", "d", "--random-init", "--compare-random"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_mean_spread_formats_accuracies():
    from d2v_plugin.probe_options import mean_spread

    assert mean_spread([0.7, 0.8, 0.9]) == "80.0 ± 10.0 % (n=3)"
    assert mean_spread([0.5]) == "50.0 ± 0.0 % (n=1)"
