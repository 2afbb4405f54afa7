"""Lesson 11's attribution graphs next to the reference implementation, ``circuit-tracer``.

The two sides run in two environments, because ``circuit-tracer`` pins older ``transformers`` and
``huggingface-hub`` than the course:

``course`` (the course's environment)
    builds lesson 11's graphs with :mod:`utils.metrics.attribution` (the same zoo model, transcoders
    and prompts: ``patching_pairs(model, n=4, seed=seeds.LESSON_11, corruption="swap",
    subject_first=True)``) for two readouts, the lesson's logit difference (answer minus subject) and
    the demeaned logit of the model's top token (``circuit-tracer``'s own kind of logit node), prunes
    them with :func:`~utils.metrics.attribution.prune` and scores them; it writes the graphs to
    ``build/circuit-tracer/<model>.course.safetensors`` and the rest to ``<model>.course.json``.

``reference`` (``circuit-tracer``'s environment; it never imports :mod:`utils`)
    loads the same zoo model and transcoders from their files (the hub is never asked),
    builds ``circuit-tracer``'s ``ReplacementModel`` on them, computes its graphs of the same
    prompts for the same two readouts (the logit difference as a ``CustomTarget``; the top token by
    its id) and its default graph (salient logits), and compares node by node. It writes the
    numbers to ``benchmarks/circuit_tracer.json``.

``scripts/circuit_tracer_compare.sh`` builds the second environment and runs both sides.

How the course's weights reach ``circuit-tracer``: the model becomes a ``HookedTransformerConfig``
written from the zoo model's ``config.json`` and TransformerLens's own weight conversion of the
Hugging Face model (loaded from its folder); each transcoder becomes a ``SingleLayerTranscoder``
built from its tensors (the encoder transposed to ``circuit-tracer``'s ``[latent, d_model]``), reading
``mlp.hook_in`` and writing ``mlp.hook_out``. The course's transcoders are TopK (k = 16 of the
ReLU'd pre-activations); ``circuit-tracer`` takes any module as a transcoder's activation function,
so they keep their own TopK rule there (:class:`ReluTopK`): the same latents fire, with the same
values, on every prompt, and no threshold has to be frozen per prompt.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "circuit-tracer"
RECORD = ROOT / "benchmarks" / "circuit_tracer.json"
MODELS = ("storyworld-llama", "storyworld-4l")
N_PROMPTS = 4  # lesson 11's four prompts (its explorer and its tables use all four)
READOUTS = ("logit_diff", "top_token")


# ----------------------------------------------------------------------------------------------
# The course's side
# ----------------------------------------------------------------------------------------------


def course_side(name: str) -> None:
    """Lesson 11's graphs of ``name``'s prompts, written for the reference side to read."""
    import inspect

    from safetensors.torch import save_file

    sys.path.insert(0, str(ROOT))
    from utils import load_model, seeds
    from utils.corpora.ioi_pairs import patching_pairs
    from utils.metrics import attribution as A
    from utils.model_zoo.transcoders import load_transcoders

    start = time.time()
    model = load_model(name, device="cpu")
    transcoders = load_transcoders(f"{name}-transcoders")
    pairs = patching_pairs(model, n=N_PROMPTS, seed=seeds.LESSON_11, corruption="swap", subject_first=True)
    vocab = model.W_U.shape[1]
    tensors, prompts = {}, []
    for k in range(N_PROMPTS):
        run = A.run_prompt(model, transcoders, pairs.clean[k])
        top = int(run.logits[-1].argmax())
        demeaned = A.readout_direction(vocab, top) - 1.0 / vocab  # circuit-tracer's logit node for `top`
        readouts = {
            "logit_diff": A.readout_direction(vocab, int(pairs.answers[k]), int(pairs.distractors[k])),
            "top_token": demeaned,
        }
        tensors[f"p{k}.tokens"] = run.tokens.clone()
        tensors[f"p{k}.logits"] = run.logits.contiguous()
        record = {
            "tokens": run.tokens.tolist(),
            "text": model.tokenizer.decode(run.tokens[1:].tolist()),
            "answer": int(pairs.answers[k]),
            "distractor": int(pairs.distractors[k]),
            "top_token": top,
            "top_token_text": model.tokenizer.decode([top]),
            "graphs": {},
        }
        # circuit-tracer's token nodes are the token embeddings alone; the course's embedding nodes are the stream
        # entering the first block (token plus position embedding where the model has one). The graph is linear in
        # its sources, so the same graph built from a run whose stream starts at the token embeddings alone has the
        # same edges but for the embedding nodes', which become circuit-tracer's.
        token_run = dataclasses.replace(run, embed=model.W_E.detach().float()[run.tokens])
        for kind, readout in readouts.items():
            t = time.time()
            graph = A.attribution_graph(model, transcoders, run, readout)
            seconds = time.time() - t
            t = time.time()
            pruned = A.prune(graph)
            prune_seconds = time.time() - t
            token_graph = A.attribution_graph(model, transcoders, token_run, readout)
            same = torch.tensor([node[0] != "embed" for node in graph.nodes])
            gap = (token_graph.adjacency[:, same] - graph.adjacency[:, same]).abs().max().item()
            assert gap < 1e-4, f"only the embedding nodes' edges change with the embeddings ({gap})"
            tensors[f"p{k}.{kind}.token_adjacency"] = token_graph.adjacency.contiguous()
            if kind == "logit_diff":
                record["nodes"] = [list(node) for node in graph.nodes]
            assert [list(node) for node in graph.nodes] == record["nodes"], "both readouts share the nodes"
            tensors[f"p{k}.{kind}.adjacency"] = graph.adjacency.contiguous()
            tensors[f"p{k}.{kind}.values"] = graph.values.contiguous()
            tensors[f"p{k}.{kind}.readout"] = readout.contiguous()
            record["graphs"][kind] = {
                "readout_value": graph.inputs[-1].item(),
                "replacement_score": A.replacement_score(graph),
                "completeness_score": A.completeness_score(graph),
                "pruned_nodes": [list(node) for node in pruned.nodes],
                "token_embeddings": {
                    "replacement_score": A.replacement_score(token_graph),
                    "completeness_score": A.completeness_score(token_graph),
                    "pruned_nodes": [list(node) for node in A.prune(token_graph).nodes],
                    "position_part_max_abs": (run.embed - token_run.embed)[1:].abs().max().item(),
                },
                "seconds": round(seconds, 3),
                "prune_seconds": round(prune_seconds, 3),
            }
        prompts.append(record)
    prune_source = inspect.getsource(A.prune)
    out = {
        "model": name,
        "transcoders": f"{name}-transcoders",
        "k": transcoders[0].k,
        "d_tc": transcoders[0].d_tc,
        "vocab": vocab,
        "prompts": prompts,
        "prune_doc": inspect.getdoc(A.prune),
        "prune_sha256": hashlib.sha256(prune_source.encode()).hexdigest(),
        "seconds": round(time.time() - start, 1),
        "versions": _versions(("torch", "transformers", "transformer-lens", "safetensors")),
    }
    WORK.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(WORK / f"{name}.course.safetensors"))
    (WORK / f"{name}.course.json").write_text(json.dumps(out, indent=1))
    print(f"{name}: course graphs of {N_PROMPTS} prompts written to {WORK} in {out['seconds']} s")


def _versions(packages) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for p in packages:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = None
    return out


# ----------------------------------------------------------------------------------------------
# circuit-tracer's side
# ----------------------------------------------------------------------------------------------


class ReluTopK(torch.nn.Module):
    """The course's transcoder activation: the ``k`` largest of the ReLU'd pre-activations (the rest 0)."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, pre: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(pre)
        top = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, top.values)


def _tl_config(name: str, hf: dict):
    """TransformerLens's config for the zoo model whose Hugging Face ``config.json`` is ``hf``."""
    from transformer_lens import HookedTransformerConfig

    arch = hf["architectures"][0]
    common = dict(
        n_layers=hf.get("num_hidden_layers", hf.get("n_layer")),
        d_vocab=hf["vocab_size"],
        model_name=name,
        device="cpu",
        dtype=torch.float32,
        original_architecture=arch,
    )
    if arch == "LlamaForCausalLM":
        d_head = hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"]
        rope = hf.get("rope_parameters") or {}
        return HookedTransformerConfig(
            d_model=hf["hidden_size"],
            d_head=d_head,
            n_heads=hf["num_attention_heads"],
            d_mlp=hf["intermediate_size"],
            n_ctx=hf["max_position_embeddings"],
            act_fn=hf["hidden_act"],
            normalization_type="RMS",
            eps=hf["rms_norm_eps"],
            positional_embedding_type="rotary",
            rotary_dim=d_head,
            rotary_base=rope.get("rope_theta", hf.get("rope_theta", 10000.0)),
            rotary_adjacent_pairs=False,
            gated_mlp=True,
            final_rms=True,
            n_key_value_heads=(
                hf["num_key_value_heads"] if hf["num_key_value_heads"] != hf["num_attention_heads"] else None
            ),
            **common,
        )
    if arch == "GPT2LMHeadModel":
        return HookedTransformerConfig(
            d_model=hf["n_embd"],
            d_head=hf["n_embd"] // hf["n_head"],
            n_heads=hf["n_head"],
            d_mlp=hf.get("n_inner") or 4 * hf["n_embd"],
            n_ctx=hf["n_positions"],
            act_fn=hf["activation_function"],
            normalization_type="LN",
            eps=hf["layer_norm_epsilon"],
            positional_embedding_type="standard",
            **common,
        )
    raise ValueError(f"{name}: no conversion for architecture {arch}")


def _tokenizer_folder() -> Path:
    """The course tokenizer in a folder this ``transformers`` reads: the course's ``tokenizer_config.json``
    names a tokenizer class of a newer ``transformers``, so a copy names the fast tokenizer's class instead
    (the prompts arrive as token ids; the tokenizer only decodes and names the special token)."""
    folder = WORK / "tokenizer"
    folder.mkdir(parents=True, exist_ok=True)
    source = ROOT / "data" / "tokenizer"
    (folder / "tokenizer.json").write_bytes((source / "tokenizer.json").read_bytes())
    config = json.loads((source / "tokenizer_config.json").read_text())
    config.pop("backend", None)
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    return folder


def replacement_model(name: str):
    """``circuit-tracer``'s ``ReplacementModel`` (TransformerLens backend) of a zoo model and its transcoders,
    loaded from ``data/`` only."""
    from circuit_tracer.replacement_model.replacement_model_transformerlens import TransformerLensReplacementModel
    from circuit_tracer.transcoder import SingleLayerTranscoder, TranscoderSet
    from safetensors import safe_open
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights, convert_llama_weights
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    folder = ROOT / "data" / "models" / name
    hf_cfg = json.loads((folder / "config.json").read_text())
    cfg = _tl_config(name, hf_cfg)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(_tokenizer_folder()), local_files_only=True)
    hf = AutoModelForCausalLM.from_pretrained(str(folder), torch_dtype=torch.float32, local_files_only=True)
    convert = {"LlamaForCausalLM": convert_llama_weights, "GPT2LMHeadModel": convert_gpt2_weights}
    state = convert[cfg.original_architecture](hf, cfg)
    if "unembed.b_U" not in state:
        state["unembed.b_U"] = torch.zeros(cfg.d_vocab)
    model = TransformerLensReplacementModel(cfg, tokenizer=tokenizer, default_padding_side="right")
    model.load_and_process_state_dict(
        {k: v.detach().float() for k, v in state.items()},
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    card = json.loads((ROOT / "data" / "transcoders" / f"{name}-transcoders" / "card.json").read_text())
    layers = {}
    for layer in range(card["layers"]):
        with safe_open(
            str(ROOT / "data" / "transcoders" / f"{name}-transcoders" / f"layer{layer}.safetensors"), "pt"
        ) as f:
            k = int(f.metadata()["k"])
            w = {key: f.get_tensor(key).float() for key in f.keys()}
        d_model, d_tc = w["W_enc"].shape
        tc = SingleLayerTranscoder(d_model, d_tc, ReluTopK(k), layer, device=torch.device("cpu"), dtype=torch.float32)
        tc.load_state_dict(
            {"W_enc": w["W_enc"].T.contiguous(), "W_dec": w["W_dec"], "b_enc": w["b_enc"], "b_dec": w["b_dec"]}
        )
        layers[layer] = tc
    transcoders = TranscoderSet(
        layers, feature_input_hook="mlp.hook_in", feature_output_hook="mlp.hook_out", scan=f"{name}-transcoders"
    )
    model._configure_replacement_model(transcoders)
    model.eval()
    return model


def _index_map(course_nodes, graph) -> torch.Tensor:
    """For each of the course's nodes, the index of the same node in ``circuit-tracer``'s graph."""
    n_feat = len(graph.selected_features)
    L, P = graph.cfg.n_layers, graph.n_pos
    features = {tuple(f): i for i, f in enumerate(graph.active_features.tolist())}
    out = []
    for kind, layer, p, latent in course_nodes:
        if kind == "feature":
            out.append(features[(layer, p, latent)])
        elif kind == "error":
            out.append(n_feat + layer * P + p)
        elif kind == "embed":
            out.append(n_feat + L * P + p)
        else:
            out.append(graph.adjacency_matrix.shape[0] - 1)  # the (only) logit node
    return torch.tensor(out)


def _ct_node(graph, i: int):
    """``circuit-tracer``'s node ``i`` in the course's naming ``(kind, layer, pos, latent)``."""
    n_feat = len(graph.selected_features)
    L, P = graph.cfg.n_layers, graph.n_pos
    if i < n_feat:
        layer, p, latent = graph.active_features[i].tolist()
        return ("feature", layer, p, latent)
    if i < n_feat + L * P:
        return ("error", (i - n_feat) // P, (i - n_feat) % P, -1)
    if i < n_feat + (L + 1) * P:
        return ("embed", -1, i - n_feat - L * P, -1)
    return ("readout", L, P - 1, -1)


def _edge_stats(course: torch.Tensor, ct: torch.Tensor) -> dict:
    """How close two adjacency matrices over the same nodes are."""
    diff = (course - ct).abs()
    either = (course != 0) | (ct != 0)
    pair = torch.stack([course[either], ct[either]]).double()
    return {
        "edges": int(either.sum()),
        "max_abs_edge": course.abs().max().item(),
        "max_abs_diff": diff.max().item(),
        "max_rel_diff": (diff.max() / course.abs().max().clamp_min(1e-12)).item(),
        "rel_frobenius": ((course - ct).norm() / course.norm().clamp_min(1e-12)).item(),
        "correlation": torch.corrcoef(pair)[0, 1].item() if either.sum() > 1 else 1.0,
        "nonzero_pattern_equal": bool(((course != 0) == (ct != 0)).all()),
    }


def _sets(course_nodes, ct_nodes) -> dict:
    """Kept nodes of each kind on both sides, as counts, overlap and Jaccard index."""
    out = {}
    for kind in ("feature", "error", "embed"):
        a = {tuple(n) for n in course_nodes if n[0] == kind}
        b = {tuple(n) for n in ct_nodes if n[0] == kind}
        out[kind] = {
            "course": len(a),
            "circuit_tracer": len(b),
            "shared": len(a & b),
            "jaccard": len(a & b) / max(len(a | b), 1),
        }
    return out


def _course_graph_as_ct(graph, course_adj: torch.Tensor, index: torch.Tensor):
    """``circuit-tracer``'s ``Graph`` with the course's adjacency in its place (its nodes mapped over; the
    nodes the course does not have, the first position's, get no edges)."""
    import copy

    adj = torch.zeros_like(graph.adjacency_matrix)
    adj[index[:, None], index[None, :]] = course_adj
    out = copy.copy(graph)
    out.adjacency_matrix = adj
    return out


def _without_first_position(graph):
    """``circuit-tracer``'s graph with the first position's token node cut off (its edges set to 0): the
    course's graph has no nodes there."""
    import copy

    out = copy.copy(graph)
    adj = graph.adjacency_matrix.clone()
    n_feat, L, P = len(graph.selected_features), graph.cfg.n_layers, graph.n_pos
    adj[:, n_feat + L * P] = 0  # the first token
    adj[:, [n_feat + layer * P for layer in range(L)]] = 0  # the first position's errors (0 already)
    out.adjacency_matrix = adj
    return out


def _prune_nodes(graph):
    from circuit_tracer.graph import prune_graph

    mask = prune_graph(graph, node_threshold=0.8, edge_threshold=0.98).node_mask
    return [list(_ct_node(graph, i)) for i in mask.nonzero().flatten().tolist()]


def reference_side(names) -> dict:
    """``circuit-tracer``'s graphs of the course's prompts, compared with the course's; the record."""
    from circuit_tracer import attribute
    from circuit_tracer.attribution.targets import CustomTarget
    from circuit_tracer.graph import compute_graph_scores
    from safetensors.torch import load_file

    record = {
        "what": "lesson 11's attribution graphs (utils.metrics.attribution) against circuit-tracer's, same model, "
        "transcoders and prompts",
        "versions": _versions(
            ("circuit-tracer", "torch", "transformer-lens", "transformers", "huggingface-hub", "nnsight")
        ),
        "threads": torch.get_num_threads(),
        "models": {},
    }
    torch.set_grad_enabled(True)
    for name in names:
        start = time.time()
        course = json.loads((WORK / f"{name}.course.json").read_text())
        tensors = load_file(str(WORK / f"{name}.course.safetensors"))
        t = time.time()
        model = replacement_model(name)
        load_seconds = time.time() - t
        W_U = model.unembed.W_U.detach()
        prompts = []
        for k, prompt in enumerate(course["prompts"]):
            tokens = tensors[f"p{k}.tokens"]
            with torch.no_grad():
                logits = model(tokens[None])[0]
            row = {
                "text": prompt["text"],
                "tokens": prompt["tokens"],
                "answer": prompt["answer"],
                "distractor": prompt["distractor"],
                "top_token": prompt["top_token"],
                "positions": len(tokens),
                "logits_max_abs_diff": (logits - tensors[f"p{k}.logits"]).abs().max().item(),
                "logits_scale": tensors[f"p{k}.logits"].abs().max().item(),
                "readouts": {},
            }
            nodes = [tuple(n) for n in prompt["nodes"]]
            targets = {
                "logit_diff": [CustomTarget("answer minus subject", 1.0, W_U @ tensors[f"p{k}.logit_diff.readout"])],
                "top_token": torch.tensor([prompt["top_token"]]),
            }
            graphs = {}
            for kind, target in targets.items():
                t = time.time()
                graph = attribute(tokens, model, attribution_targets=target, batch_size=256)
                seconds = time.time() - t
                graphs[kind] = graph
                index = _index_map(nodes, graph)
                C = tensors[f"p{k}.{kind}.adjacency"]
                T = graph.adjacency_matrix
                T_sub = T[index][:, index]
                not_embed = torch.tensor([n[0] != "embed" for n in nodes])
                n_feat = len(graph.selected_features)
                L, P = graph.cfg.n_layers, graph.n_pos
                ct_features = {tuple(f) for f in graph.active_features.tolist()}
                course_features = {(layer, p, latent) for kind_, layer, p, latent in nodes if kind_ == "feature"}
                feat_idx = index[[i for i, n in enumerate(nodes) if n[0] == "feature"]]
                course_values = tensors[f"p{k}.{kind}.values"][[i for i, n in enumerate(nodes) if n[0] == "feature"]]
                # target rows (features and the readout): |edges| from nodes the course does not have
                rows = torch.cat([torch.arange(n_feat), torch.tensor([T.shape[0] - 1])])
                extra = torch.ones(T.shape[1], dtype=torch.bool)
                extra[index] = False
                bos_token = n_feat + L * P
                C_tok = tensors[f"p{k}.{kind}.token_adjacency"]
                info = course["prompts"][k]["graphs"][kind]
                tok_info = info["token_embeddings"]
                cut = _without_first_position(graph)
                course_in_ct = _course_graph_as_ct(graph, C, index)
                course_tok_in_ct = _course_graph_as_ct(graph, C_tok, index)

                def scores(pair):
                    return {"replacement": pair[0], "completeness": pair[1]}

                stats = {
                    "nodes": {
                        "course": {kd: sum(n[0] == kd for n in nodes) for kd in ("embed", "feature", "error")},
                        "circuit_tracer": {"embed": P, "feature": n_feat, "error": L * P},
                        "features_equal": ct_features == course_features,
                        "feature_values_max_abs_diff": (graph.activation_values[feat_idx] - course_values)
                        .abs()
                        .max()
                        .item(),
                    },
                    "readout_value": {
                        "course": info["readout_value"],
                        "circuit_tracer_edges_sum": T[-1].sum().item(),
                        "course_edges_sum": C[-1].sum().item(),
                    },
                    # the lesson's graph (embedding nodes: token plus position embedding)
                    "edges": _edge_stats(C, T_sub),
                    "readout_edges": _edge_stats(C[-1:], T_sub[-1:]),
                    "feature_and_error_edges": _edge_stats(C[:, not_embed], T_sub[:, not_embed]),
                    "embed_edges": _edge_stats(C[:, ~not_embed], T_sub[:, ~not_embed]),
                    # the course's graph with token-only embedding nodes, as circuit-tracer has them
                    "edges_token_embeddings": _edge_stats(C_tok, T_sub),
                    "position_part_max_abs": tok_info["position_part_max_abs"],
                    "first_position_share": (
                        T[rows][:, extra].abs().sum() / T[rows].abs().sum().clamp_min(1e-12)
                    ).item(),
                    "first_token_edges_nonzero": int((T[:, bos_token] != 0).sum()),
                    "scores": {
                        "course": {
                            "replacement": info["replacement_score"],
                            "completeness": info["completeness_score"],
                        },
                        "course_token_embeddings": {
                            "replacement": tok_info["replacement_score"],
                            "completeness": tok_info["completeness_score"],
                        },
                        "circuit_tracer": scores(compute_graph_scores(graph)),
                        "circuit_tracer_first_token_cut": scores(compute_graph_scores(cut)),
                        "circuit_tracer_on_course_graph": scores(compute_graph_scores(course_in_ct)),
                        "circuit_tracer_on_course_token_graph": scores(compute_graph_scores(course_tok_in_ct)),
                    },
                    "pruned": {
                        # each side's rule on its own graph, as each computes it
                        "as_computed": _sets(info["pruned_nodes"], _prune_nodes(graph)),
                        # the same nodes on both sides: token-only embeddings, no first-position token
                        "aligned": _sets(tok_info["pruned_nodes"], _prune_nodes(cut)),
                        # the two rules on one graph, the course's
                        "rules_on_course_graph": _sets(info["pruned_nodes"], _prune_nodes(course_in_ct)),
                    },
                    "seconds": {"circuit_tracer": round(seconds, 3), "course": info["seconds"]},
                    # circuit-tracer's own results on the nodes both sides have, for the course's tests to hold
                    # the course's code to without circuit-tracer
                    "circuit_tracer_pruned": [n for n in _prune_nodes(graph) if n[0] in ("feature", "error")],
                    "circuit_tracer_readout_top_edges": [
                        [list(nodes[i]), T_sub[-1, i].item()] for i in T_sub[-1].abs().argsort(descending=True)[:20]
                    ],
                }
                row["readouts"][kind] = stats
            salient = attribute(tokens, model, batch_size=256)  # circuit-tracer's default readout
            top_row = [t.vocab_idx for t in salient.logit_targets].index(prompt["top_token"])
            n_logits = len(salient.logit_targets)
            index = _index_map(nodes, graphs["top_token"])
            top_only = graphs["top_token"].adjacency_matrix
            # the salient graph's row for the top token against the graph built for the top token alone
            salient_row = salient.adjacency_matrix[-n_logits + top_row]
            row["salient"] = {
                "logit_targets": [[t.vocab_idx, t.token_str] for t in salient.logit_targets],
                "probabilities": salient.logit_probabilities.tolist(),
                "top_token_row_max_abs_diff_vs_single_target": (salient_row - top_only[-1]).abs().max().item(),
                "top_token_row_vs_course": _edge_stats(
                    tensors[f"p{k}.top_token.adjacency"][-1:], salient_row[index][None]
                ),
                "scores": dict(zip(("replacement", "completeness"), compute_graph_scores(salient))),
            }
            prompts.append(row)
        record["models"][name] = {
            "transcoders": course["transcoders"],
            "k": course["k"],
            "d_tc": course["d_tc"],
            "course_prune_doc": course["prune_doc"].split("\n")[0],
            "course_prune_sha256": course["prune_sha256"],
            "course_versions": course["versions"],
            "course_seconds": course["seconds"],
            "circuit_tracer_load_seconds": round(load_seconds, 1),
            "circuit_tracer_seconds": round(time.time() - start, 1),
            "prompts": prompts,
        }
    record["summary"] = _summary(record)
    return record


def _summary(record) -> dict:
    """The worst case over each model's prompts and readouts."""
    out = {}
    for name, m in record["models"].items():
        mine = [r for p in m["prompts"] for r in p["readouts"].values()]

        def worst_gap(a, b, mine=mine):
            return max(
                abs(r["scores"][a][s] - r["scores"][b][s]) for r in mine for s in ("replacement", "completeness")
            )

        def least(key, kind="feature", mine=mine):
            return min(r["pruned"][key][kind]["jaccard"] for r in mine)

        out[name] = {
            "features_equal": all(r["nodes"]["features_equal"] for r in mine),
            "feature_values_max_abs_diff": max(r["nodes"]["feature_values_max_abs_diff"] for r in mine),
            "logits_max_abs_diff": max(p["logits_max_abs_diff"] for p in m["prompts"]),
            "edges_min_correlation": min(r["edges"]["correlation"] for r in mine),
            "edges_max_rel_diff": max(r["edges"]["max_rel_diff"] for r in mine),
            "feature_and_error_edges_max_rel_diff": max(r["feature_and_error_edges"]["max_rel_diff"] for r in mine),
            "embed_edges_max_rel_diff": max(r["embed_edges"]["max_rel_diff"] for r in mine),
            "token_embedding_edges_max_rel_diff": max(r["edges_token_embeddings"]["max_rel_diff"] for r in mine),
            "token_embedding_edges_min_correlation": min(r["edges_token_embeddings"]["correlation"] for r in mine),
            "first_position_max_share": max(r["first_position_share"] for r in mine),
            "scores_max_abs_diff": worst_gap("course", "circuit_tracer"),
            "scores_max_abs_diff_aligned": worst_gap("course_token_embeddings", "circuit_tracer_first_token_cut"),
            "scores_max_abs_diff_on_course_graph": worst_gap("course", "circuit_tracer_on_course_graph"),
            "pruned_features_min_jaccard": least("as_computed"),
            "pruned_errors_min_jaccard": least("as_computed", "error"),
            "pruned_features_min_jaccard_aligned": least("aligned"),
            "pruned_errors_min_jaccard_aligned": least("aligned", "error"),
            "pruned_features_min_jaccard_rules_on_course_graph": least("rules_on_course_graph"),
            "pruned_errors_min_jaccard_rules_on_course_graph": least("rules_on_course_graph", "error"),
            "salient_row_max_abs_diff_vs_single_target": max(
                p["salient"]["top_token_row_max_abs_diff_vs_single_target"] for p in m["prompts"]
            ),
        }
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("side", choices=("course", "reference"))
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--out", type=Path, default=RECORD, help="the record (reference side)")
    ap.add_argument(
        "--seconds",
        nargs=2,
        type=float,
        metavar=("ENVIRONMENT", "COURSE"),
        help="how long building circuit-tracer's environment and the course's side took (recorded)",
    )
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    if args.side == "course":
        for name in args.models:
            course_side(name)
        return 0
    start = time.time()
    record = reference_side(args.models)
    record["seconds"] = {"circuit_tracer_side": round(time.time() - start, 1)}
    if args.seconds:
        record["seconds"].update(environment=args.seconds[0], course_side=args.seconds[1])
    record["command"] = "bash scripts/circuit_tracer_compare.sh"
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
