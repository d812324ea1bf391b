"""The ``--breakdown`` profile: where the time of one data2vec update goes, forward *and*
backward, part by part (torch.profiler, ``record_function`` labels installed on the model
instance, backward nodes attributed through autograd sequence numbers)."""
from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Dict

from .configs import config_label, per_config
from .resources import peak_rss_mib
from .stats import median
from .step import batch_stats, build, train_step
from .worker import Worker

PARTS = {
    "data: load + crop + collate": "data (load audio, crop, collate)",
    "data: mask sampling": "data: mask sampling in the collater (M masks/sample)",
    "ema teacher step": "EMA teacher update (model.set_num_updates)",
    "feature encoder": "feature encoder (conv) + projection",
    "student mask index": "student: mask -> index tensors",
    "student contextualize": "student: mask, conv positions, drop masked, ALiBi",
    "student blocks": "student transformer blocks",
    "decoder": "decoder (conv, or linear head)",
    "teacher": "teacher forward (no grad) + top-K targets",
    "loss + stats": "loss + variance monitors",
    "grad scale + norm": "grad scaling + grad norm",
    "adam": "Adam step",
    "zero_grad": "zero_grad",
    "(grad accumulation)": "backward: accumulating into .grad",
    "(other forward glue)": "backward of unlabelled forward ops (repeat_interleave of the local features, ...)",
}


def _label(name, fn):
    from torch.profiler import record_function

    def wrapped(*a, **kw):
        with record_function(name):
            return fn(*a, **kw)
    return wrapped


def instrument(model, optimizer, dataset) -> None:
    """Label the parts of a step with record_function, in this process only (no library edit).

    Instance attributes shadow the public stage methods (local_features, contextualize, decode,
    student_masks, run_blocks, teacher_targets, objective); the teacher is a deep copy made when
    the model was built, so its encoder is not wrapped and its whole forward counts as "teacher".
    """
    encoder = next(iter(model.modality_encoders.values()))
    encoder.local_features = _label("feature encoder", encoder.local_features)
    encoder.contextualize = _label("student contextualize", encoder.contextualize)
    encoder.decode = _label("decoder", encoder.decode)
    model.student_masks = _label("student mask index", model.student_masks)
    model.teacher_targets = _label("teacher", model.teacher_targets)
    model.objective = _label("loss + stats", model.objective)
    run_blocks = model.run_blocks

    def student_blocks(blocks, *a, **kw):
        if blocks is model.blocks:
            return _label("student blocks", run_blocks)(blocks, *a, **kw)
        return run_blocks(blocks, *a, **kw)
    model.run_blocks = student_blocks
    if model.teacher is not None:
        model.teacher.step = _label("ema teacher step", model.teacher.step)
    optimizer.multiply_grads = _label("grad scale + norm", optimizer.multiply_grads)
    optimizer.clip_grad_norm = _label("grad scale + norm", optimizer.clip_grad_norm)
    optimizer.step = _label("adam", optimizer.step)
    optimizer.zero_grad = _label("zero_grad", optimizer.zero_grad)
    from d2v_plugin.data.expander import BatchExpander

    expander = dataset.expander  # the collater's expander, with a labelled mask sampler
    dataset.expander = BatchExpander(expander.clone_batch, _label("data: mask sampling", expander.mask_sampler))


NODE_PREFIX = "autograd::engine::evaluate_function"


def attribute(events, labels) -> Dict[str, Dict]:
    """Split one profiled update by part: forward and backward time per label, and the self
    time of every op per (op, label), all in us.

    Forward time of a label excludes labels nested in it. A backward node
    ("autograd::engine::evaluate_function: XBackward") carries the sequence number of its
    autograd node; the forward op that created the node is the *last* forward op recorded
    with that number (ops that create no node record the next number without taking it), and
    that op's innermost label owns the node's backward time.
    """
    def innermost(e):
        while e is not None:
            if e.name in labels:
                return e.name
            e = e.cpu_parent
        return None

    def node_of(e):
        while e is not None:
            if e.name.startswith(NODE_PREFIX):
                return e
            e = e.cpu_parent
        return None

    forward, backward, ops = defaultdict(float), defaultdict(float), defaultdict(float)
    creator = {}  # (thread, sequence_nr) -> (start time, label)
    nodes = {}
    for e in events:
        node = node_of(e)
        nodes[id(e)] = node
        if node is not None:
            continue
        if e.name in labels:
            nested = sum(c.cpu_time_total for c in _descendant_labels(e, labels))
            forward[e.name] += e.cpu_time_total - nested
        if e.sequence_nr is not None and e.sequence_nr >= 0:
            key = (e.thread, e.sequence_nr)
            start = e.time_range.start
            if key not in creator or start >= creator[key][0]:
                creator[key] = (start, innermost(e))

    def node_owner(node):
        if "AccumulateGrad" in node.name:
            return "(grad accumulation)"
        owner = creator.get((node.fwd_thread, node.sequence_nr)) if node.sequence_nr >= 0 else None
        return (owner and owner[1]) or "(other forward glue)"

    for e in events:
        node = nodes[id(e)]
        if e is node:
            backward[node_owner(e)] += e.cpu_time_total
        if e.name in labels or e.name == "update" or e.name.startswith(NODE_PREFIX):
            continue
        if node is not None:
            ops[(e.name, node_owner(node) + " (backward)")] += e.self_cpu_time_total
        else:
            ops[(e.name, innermost(e) or "(unlabelled)")] += e.self_cpu_time_total
    return {"forward": dict(forward), "backward": dict(backward), "ops": dict(ops)}


def _descendant_labels(e, labels):
    """The outermost labelled events strictly inside ``e``."""
    out = []
    stack = list(e.cpu_children)
    while stack:
        c = stack.pop()
        if c.name in labels:
            out.append(c)
        else:
            stack.extend(c.cpu_children)
    return out


def run_breakdown(args) -> Dict:
    """Profile ``steps`` updates one by one; every number reported is a median over updates,
    which keeps updates slowed down by other processes on this shared machine out."""
    from torch.profiler import ProfilerActivity, profile, record_function

    task, model, criterion, optimizer, stream, info = build(
        args.worker, args.data, args.max_tokens_n, args.threads, args.seed)
    if info["family"] != "d2v":
        raise SystemExit(f"--breakdown profiles the parts of a data2vec model; {args.worker} is {info['model']}")
    steps, warmup = args.steps_n, args.warmup_n
    for i in range(warmup):
        train_step(task, model, criterion, optimizer, next(stream), update_num=i, seed=info["seed"])
    instrument(model, optimizer, task.dataset("train"))
    labels = set(PARTS) - {"(grad accumulation)", "(other forward glue)"}
    per_update = []
    for i in range(warmup, warmup + steps):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            with record_function("update"):
                with record_function("data: load + crop + collate"):
                    sample = next(stream)
                train_step(task, model, criterion, optimizer, sample, update_num=i, seed=info["seed"])
            wall = time.perf_counter() - t0
        events = prof.events()
        parts = attribute(events, labels)
        parts["update"] = sum(e.cpu_time_total for e in events if e.name == "update")
        parts["wall"] = wall
        parts["audio_s"] = batch_stats(sample, model, info["sample_rate"])["audio_s"]
        per_update.append(parts)

    def med(key, part):
        return median([u[key].get(part, 0.0) for u in per_update]) / 1e3

    update_ms = median([u["update"] for u in per_update]) / 1e3
    keys = set().union(*(set(u["forward"]) | set(u["backward"]) for u in per_update))
    rows = []
    for key in list(PARTS) + sorted(keys - set(PARTS)):
        f, b = med("forward", key), med("backward", key)
        if f == 0 and b == 0:
            continue
        rows.append({"part": key, "description": PARTS.get(key, key), "forward_ms": f,
                     "backward_ms": b, "total_ms": f + b, "share": (f + b) / update_ms})
    known = sum(r["total_ms"] for r in rows)
    rows.append({"part": "(unlabelled)", "description": "everything else: Python glue outside the parts "
                 "(task.train_step, model.train(), criterion), autograd-engine overhead between backward "
                 "nodes, profiler overhead", "forward_ms": max(update_ms - known, 0.0),
                 "backward_ms": 0.0, "total_ms": max(update_ms - known, 0.0),
                 "share": max(update_ms - known, 0.0) / update_ms})
    op_keys = set().union(*(set(u["ops"]) for u in per_update))
    top_ops = sorted(({"op": op, "part": part, "self_ms": med("ops", (op, part))} for op, part in op_keys),
                     key=lambda o: o["self_ms"], reverse=True)[:args.top_ops]
    for o in top_ops:
        o["share"] = o["self_ms"] / update_ms
    result = dict(info)
    result.update(config=config_label(args.worker), steps=steps, warmup=warmup,
                  profiled_update_ms=update_ms,
                  wall_ms_per_update=[1e3 * u["wall"] for u in per_update],
                  audio_s_per_update=median([u["audio_s"] for u in per_update]),
                  parts=rows, top_ops=top_ops, peak_rss_mib=peak_rss_mib())
    return result


def run_breakdown_process(config: str, args, logdir: Path) -> Dict:
    w = Worker("breakdown", config, args, args.breakdown_steps,
               per_config(args.warmup, config_label(config), "warmup"),
               per_config(args.max_tokens, config_label(config), "max-tokens"), logdir)
    try:
        return w.receive()
    finally:
        w.close()
