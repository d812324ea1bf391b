"""The documentation names only things that exist.

README.md and docs/*.md are checked for: console scripts (``d2v-...`` as declared in
setup.py's entry points, read at test time so newly added scripts count; ``fairseq-...`` as
installed by fairseq), configs (``--config-dir D --config-name X``, ``+run_config=X``,
``config/...yaml`` paths, bare ``name.yaml`` in code spans), scripts and modules
(``python examples/*.py`` and ``benchmarks/*.py`` in commands, ``python -m d2v_plugin....``), and every relative
link or image, including its ``#anchor``. Fast: no torch, no fairseq import.
"""
from __future__ import annotations

import ast
import importlib.metadata
import itertools
import re
from pathlib import Path
from typing import Dict, List, Set

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
CODE_SPAN = re.compile(r"`([^`\n]+)`")
SCRIPT = re.compile(r"(?:^|[\s;&|(`])((?:d2v|fairseq)-[a-z0-9][a-z0-9-]*)(?=[\s`);]|$)", re.M)
CONFIG_PATH = re.compile(r"(?<![\w/.-])((?:config|benchmarks/configs)/[\w/{},.-]*\.yaml)")
BARE_YAML = re.compile(r"^[\w{},]+\.yaml$")
PY_PATH = re.compile(r"(?<![\w/.-])((?:examples|benchmarks)/[\w/]+\.py)")
PY_MODULE = re.compile(r"python3? -m (d2v_plugin(?:\.\w+)+)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)


def declared_console_scripts(setup_py: Path = ROOT / "setup.py") -> Set[str]:
    """The names in setup(entry_points={"console_scripts": [...]}), read without running setup.py."""
    for node in ast.walk(ast.parse(setup_py.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup":
            for kw in node.keywords:
                if kw.arg == "entry_points":
                    scripts = ast.literal_eval(kw.value).get("console_scripts", [])
                    return {s.split("=")[0].strip() for s in scripts}
    raise AssertionError(f"{setup_py}: no setup(entry_points=...) found")


def fairseq_console_scripts() -> Set[str]:
    return {ep.name for ep in importlib.metadata.entry_points(group="console_scripts")
            if ep.name.startswith("fairseq-")}


def command_blocks(text: str) -> List[str]:
    """Fenced code blocks, with backslash continuations joined into one line."""
    return [re.sub(r"\\\n\s*", " ", block) for block in FENCE.findall(text)]


def expand_braces(path: str) -> List[str]:
    """Shell brace expansion: tiny_{audio,image}.yaml -> [tiny_audio.yaml, tiny_image.yaml]."""
    parts = re.split(r"\{([^{}]*)\}", path)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces -> hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(text: str) -> Set[str]:
    text = FENCE.sub("", text)  # '# comment' lines in code blocks are not headings
    seen: Dict[str, int] = {}
    result = set()
    for _, title in HEADING.findall(text):
        base = slug(title)
        n = seen.get(base, 0)
        seen[base] = n + 1
        result.add(base if n == 0 else f"{base}-{n}")
    return result


def problems_in(doc: Path, scripts: Set[str], root: Path = ROOT) -> List[str]:
    """Every stale name or broken link in one markdown file, as 'file: what' strings."""
    text = doc.read_text(encoding="utf-8")
    where = doc.relative_to(root) if doc.is_relative_to(root) else doc
    out = []
    code = command_blocks(text) + CODE_SPAN.findall(FENCE.sub("", text))
    for snippet in code:
        for name in SCRIPT.findall(snippet):
            if name not in scripts:
                out.append(f"{where}: console script {name!r} does not exist")
        for line in snippet.splitlines():
            config_dir = re.search(r"--config-dir[ =](\S+)", line)
            config_name = re.search(r"--config-name[ =](\S+)", line)
            if config_dir and config_name:
                yaml = root / config_dir.group(1) / f"{config_name.group(1)}.yaml"
                if not yaml.is_file():
                    out.append(f"{where}: config {yaml.relative_to(root)} does not exist")
                for preset in re.findall(r"\+run_config=(\w+)", line):
                    path = root / config_dir.group(1) / "run_config" / f"{preset}.yaml"
                    if not path.is_file():
                        out.append(f"{where}: +run_config={preset}: {path.relative_to(root)} does not exist")
        for module in PY_MODULE.findall(snippet):
            base = root / module.replace(".", "/")
            if not (base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()):
                out.append(f"{where}: module {module} does not exist")
        if BARE_YAML.match(snippet.strip()):
            for name in expand_braces(snippet.strip()):
                if not any(root.glob(f"config/**/{name}")) and not any(root.glob(f"benchmarks/configs/{name}")):
                    out.append(f"{where}: config {name} does not exist under config/ or benchmarks/configs/")
    for path in set(CONFIG_PATH.findall(text)):
        for p in expand_braces(path):
            if not (root / p).is_file():
                out.append(f"{where}: config {p} does not exist")
    runnable = command_blocks(text) + [c for c in CODE_SPAN.findall(FENCE.sub("", text)) if c.startswith("python")]
    for path in {p for snippet in runnable for p in PY_PATH.findall(snippet)}:
        if not (root / path).is_file():
            out.append(f"{where}: script {path} does not exist")
    for target in LINK.findall(FENCE.sub("", text)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists():
            out.append(f"{where}: link {target!r}: {path} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text(encoding="utf-8")):
            out.append(f"{where}: link {target!r}: no heading with anchor #{anchor} in {dest.name}")
    return out


@pytest.fixture(scope="module")
def known_scripts() -> Set[str]:
    fairseq = fairseq_console_scripts()
    if not fairseq:
        pytest.skip("fairseq is not installed: its console scripts cannot be listed")
    return declared_console_scripts() | fairseq


def test_docs_exist_and_readme_is_short():
    names = {d.name for d in DOCS}
    for page in ["installation.md", "speech.md", "vision.md", "text.md", "results.md",
                 "design.md", "troubleshooting.md"]:
        assert page in names, f"docs/{page} is missing"
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 260, f"README.md has {lines} lines: it is the front door, put details in docs/"


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_docs_name_only_existing_scripts_configs_and_links(doc, known_scripts):
    assert problems_in(doc, known_scripts) == []


def test_setup_entry_points_are_read_at_test_time():
    scripts = declared_console_scripts()
    assert {"d2v-infer", "d2v-features", "d2v-text-prep"} <= scripts
    for name in scripts:
        module = ROOT / setup_entry_module(name).replace(".", "/")
        assert module.with_suffix(".py").is_file(), f"{name}: {module}.py does not exist"


def setup_entry_module(script: str) -> str:
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(script + "="):
            return node.value.split("=", 1)[1].split(":")[0].strip()
    raise AssertionError(script)


def test_checker_finds_stale_names_and_broken_links(tmp_path):
    (tmp_path / "config" / "pretraining" / "run_config").mkdir(parents=True)
    (tmp_path / "config" / "pretraining" / "tiny_audio.yaml").write_text("")
    (tmp_path / "other.md").write_text("# Real heading\n")
    doc = tmp_path / "page.md"
    doc.write_text(
        "# Page\n\n## A section: with `code`, 3.5 % (x)\n\n"
        "```bash\n"
        "d2v-infer ckpt.pt --data d\n"
        "d2v-old-name ckpt.pt\n"
        "fairseq-hydra-train --config-dir config/pretraining \\\n"
        "    --config-name tiny_audo +run_config=slurm_9\n"
        "python -m d2v_plugin.nowhere\n"
        "python examples/missing.py\n"
        "```\n\n"
        "See `config/pretraining/tiny_{audio,text}.yaml`, [ok](other.md#real-heading), "
        "[self](#a-section-with-code-35--x), [gone](missing.md), [bad anchor](other.md#nope), "
        "![img](pic.png), [web](https://example.org/x.md).\n")
    problems = problems_in(doc, {"d2v-infer", "fairseq-hydra-train"}, root=tmp_path)
    text = "\n".join(problems)
    assert "'d2v-old-name' does not exist" in text
    assert "'d2v-infer'" not in text
    assert "config/pretraining/tiny_audo.yaml does not exist" in text
    assert "+run_config=slurm_9" in text
    assert "module d2v_plugin.nowhere" in text
    assert "script examples/missing.py" in text
    assert "config/pretraining/tiny_text.yaml does not exist" in text
    assert "tiny_audio.yaml" not in text
    assert "missing.md does not exist" in text and "pic.png does not exist" in text
    assert "no heading with anchor #nope" in text
    assert "real-heading" not in text and "a-section" not in text and "example.org" not in text
    assert len(problems) == 9, text


def test_slug_matches_github():
    assert slug('Hydra: "Could not override ... use +key"') == "hydra-could-not-override--use-key"
    assert slug("4.2 Fine-tuning: 94.2 / 89.5 % (pretrained)") == "42-fine-tuning-942--895--pretrained"
    assert slug("Fine-tuning a sentence classifier (fairseq's `sentence_prediction`)") == \
        "fine-tuning-a-sentence-classifier-fairseqs-sentence_prediction"

