"""Run exported transformers folders in a process that cannot import fairseq or d2v_plugin.

Used by tests/test_hf_export.py as ``python hf_fresh_process.py CASES.json`` (a fresh
interpreter). What "no fairseq, no d2v_plugin installed" means is enforced, not assumed: an
import hook refuses both packages, and ``torch.load`` (pickle) raises, so the weights can only
come from safetensors. Prints one line ``RESULT <json>``:

* ``model`` cases: max |difference| to the expected arrays of the case's .npz for the last
  hidden state and every hidden state, and whether the padding masks are equal;
* ``ctc`` cases: the same for the logits (finite entries; padded frames must allow only the blank);
* ``pipeline`` cases: the transcripts of ``pipeline("automatic-speech-recognition")`` for WAV paths;
* the modules that ended up imported (fairseq, d2v_plugin, torchaudio, torchvision).
"""
import importlib.abc
import json
import sys

BLOCKED = ("fairseq", "d2v_plugin")


class RefuseImports(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} may not be imported in this process (not installed)")
        return None


sys.meta_path.insert(0, RefuseImports())

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _no_pickle(*args, **kwargs):
    raise RuntimeError("torch.load (pickle) was called: the exported folder must load from safetensors only")


torch.load = _no_pickle


def max_diff(ours: torch.Tensor, expected: np.ndarray) -> float:
    ours = ours.detach().numpy()
    if ours.shape != expected.shape:
        return float("inf")
    return float(np.abs(ours.astype(np.float64) - expected.astype(np.float64)).max())


def run_model(case):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(case["folder"], **case.get("load_kwargs", {"trust_remote_code": True})).eval()
    data = np.load(case["npz"])
    inputs = {case["input_name"]: torch.from_numpy(data["input"])}
    if "attention_mask" in data:
        inputs["attention_mask"] = torch.from_numpy(data["attention_mask"])
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    result = {"class": type(model).__name__,
              "last_hidden_state": max_diff(out.last_hidden_state, data["x"]),
              "hidden_states": [max_diff(h, data[f"hidden_{i}"]) for i, h in enumerate(out.hidden_states)
                                if f"hidden_{i}" in data],
              "num_hidden_states": len(out.hidden_states)}
    expected_padding = data["padding_mask"] if "padding_mask" in data else None
    padding = out.padding_mask
    result["padding_mask_equal"] = (
        padding is None and expected_padding is None
        or padding is not None and expected_padding is not None
        and padding.shape == expected_padding.shape and bool((padding.numpy() == expected_padding).all()))
    return result


def run_ctc(case):
    from transformers import AutoModelForCTC

    model = AutoModelForCTC.from_pretrained(case["folder"], trust_remote_code=True).eval()
    data = np.load(case["npz"])
    with torch.no_grad():
        out = model(torch.from_numpy(data["input"]), attention_mask=torch.from_numpy(data["attention_mask"]))
    logits, expected = out.logits.numpy(), data["logits"]
    finite = np.isfinite(expected)
    return {"class": type(model).__name__,
            "same_shape": logits.shape == expected.shape,
            "same_finite": bool((np.isfinite(logits) == finite).all()),
            "logits": float(np.abs(logits[finite].astype(np.float64) - expected[finite]).max()),
            "same_argmax": bool((logits.argmax(-1) == expected.argmax(-1)).all())}


def run_pipeline(case):
    from transformers import pipeline

    asr = pipeline("automatic-speech-recognition", model=case["folder"], trust_remote_code=True)
    return {"texts": [asr(path)["text"] for path in case["wavs"]]}


def main(cases_path: str) -> None:
    with open(cases_path) as f:
        cases = json.load(f)
    runners = {"model": run_model, "ctc": run_ctc, "pipeline": run_pipeline}
    results = {name: runners[case["kind"]](case) for name, case in cases.items()}
    results["imported"] = sorted(m for m in ("fairseq", "d2v_plugin", "torchaudio", "torchvision")
                                 if m in sys.modules)
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1])
