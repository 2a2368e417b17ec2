#!/usr/bin/env python3
"""Oracle for the C++ Mixtral runtime: tiny random Mixtral checkpoints + what transformers computes on them.

Install (CPU is enough; no GPU is used):

    pip install torch transformers safetensors

Run from anywhere (the output location is fixed relative to this file):

    python3 scripts/make_reference.py

This regenerates everything under tests/data/ (the four checkpoint folders tiny_a, tiny_b, tiny_c,
tiny_skew and tests/data/README.md) deterministically: fixed seeds, one CPU thread, eager attention,
eager (per-expert loop) MoE, float32 compute. Running it twice gives byte-identical files for a
given torch/transformers/safetensors version (the versions used are recorded in each reference.json).

For every checkpoint the script
  1. builds a MixtralForCausalLM from a MixtralConfig and fills its weights from a seeded generator
     (scaled so that logits have a standard deviation of order 1, not the near-constant logits of the
     default 0.02 init), then rounds the weights to the storage dtype;
  2. writes tests/data/<name>/checkpoint/ with save_pretrained(safe_serialization=True), checks that the
     safetensors files use the published Mixtral tensor names
     (model.layers.{i}.block_sparse_moe.experts.{j}.w1/w2/w3.weight, ...block_sparse_moe.gate.weight, ...)
     with the right shapes, dtypes and values, and falls back to writing them itself with
     safetensors.torch.save_file if transformers ever writes anything else (transformers 5 holds the
     experts fused as mlp.experts.gate_up_proj [E, 2I, H] = [w1; w3] and mlp.experts.down_proj [E, H, I]);
  3. reloads the folder with MixtralForCausalLM.from_pretrained(dir, dtype=float32, attn_implementation=
     "eager"), checks that nothing is missing/unexpected/newly initialised and that the reloaded model's
     weights and logits are bitwise equal to the in-memory model's;
  4. records, from the RELOADED model, for three seeded prompts (lengths 1, 7, 13): the prefill logits,
     8 greedy decode steps with the KV cache (tokens fed and logits), and model.generate(max_new_tokens=16,
     greedy, config eos) -> tests/data/<name>/reference.json and reference.safetensors.
It also checks that every greedy step has a clear top-1 / top-2 logit gap and that no router decision
is a near tie, so that a correct fp32 implementation reproduces the same tokens and expert choices.
"""

import copy
import json
import logging
import os
import platform
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "warning")

import safetensors  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import MixtralConfig, MixtralForCausalLM  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"

PROMPT_LENGTHS = (1, 7, 13)
DECODE_STEPS = 8
MAX_NEW_TOKENS = 16
MIN_LOGIT_GAP = 1e-3  # top-1 minus top-2 logit at every greedy step
MIN_ROUTER_GAP = 1e-4  # k-th minus (k+1)-th router logit for every token and layer
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Shared by tiny_a and tiny_skew.
_A_CONFIG = dict(
    vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, num_local_experts=8, num_experts_per_tok=2,
    tie_word_embeddings=False, sliding_window=None, rope_theta=1e6, rms_norm_eps=1e-5,
    max_position_embeddings=256,
)

SPECS = {
    "tiny_a": dict(
        seed=1030, storage="bfloat16", max_shard_size=None, config=_A_CONFIG,
        about="bf16 storage, single file, GQA 4q/2kv heads (head_dim 16 implied), 8 experts top-2, "
              "untied lm_head, no sliding window, rope_theta 1e6",
    ),
    "tiny_b": dict(
        seed=2033, storage="float32", max_shard_size="1MB", out_gain=4.0,
        config=dict(
            vocab_size=384, hidden_size=96, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=6, num_key_value_heads=2, head_dim=32, num_local_experts=16,
            num_experts_per_tok=4, tie_word_embeddings=True, sliding_window=8, rope_theta=10000.0,
            rms_norm_eps=1e-6, max_position_embeddings=128,
        ),
        about="f32 storage SHARDED (index json), tied embeddings (no lm_head.weight), sliding_window 8 "
              "(< the 13-token prompt and the decode lengths), explicit head_dim 32 != 96/6, "
              "hidden 96 (not a power of two), q_dim 192 != hidden, 16 experts top-4, rope_theta 1e4, eps 1e-6",
    ),
    "tiny_c": dict(
        seed=3028, storage="float16", max_shard_size=None, legacy_config=True,
        config=dict(
            vocab_size=256, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=1, num_local_experts=4, num_experts_per_tok=1,
            tie_word_embeddings=False, sliding_window=None, rope_theta=100000.0, rms_norm_eps=1e-5,
            max_position_embeddings=128,
        ),
        about="f16 storage, single file, MQA (1 kv head, head_dim 12), 4 experts top-1 (routing weight is "
              "exactly 1 after renormalisation), config.json rewritten in the published (transformers 4.x) "
              "Mixtral style: top-level rope_theta (1e5, not the 1e6 default) and torch_dtype, no "
              "rope_parameters / head_dim keys",
    ),
    "tiny_skew": dict(
        seed=4026, storage="float32", max_shard_size=None, skew=True, config=_A_CONFIG,
        about="tiny_a's shapes in f32 with a router that sends every token to expert 0 (plus one other "
              "expert in the second top-2 slot): load imbalance",
    ),
}


# ----------------------------------------------------------------------------------------------------
# Building the in-memory model


def make_config(spec):
    kw = dict(spec["config"])
    return MixtralConfig(**kw, attn_implementation="eager", experts_implementation="eager")


def init_weights(model, cfg, gen, out_gain=1.0):
    """Fills every parameter from `gen`, in a fixed order, so that logits have std of order 1.

    out_gain scales o_proj and the experts' down projections (what the blocks add to the residual stream).
    With tied embeddings the token's own embedding row is both in the residual stream and the output
    projection, which biases greedy decoding towards repeating the last token; a larger out_gain dilutes it.
    """
    H, I = cfg.hidden_size, cfg.intermediate_size
    tied = cfg.tie_word_embeddings

    def normal(shape, std):
        return torch.randn(shape, generator=gen, dtype=torch.float32) * std

    params = dict(model.named_parameters())  # tied lm_head appears once, as model.embed_tokens.weight
    for name in sorted(params):
        p = params[name]
        shape = tuple(p.shape)
        if name == "model.embed_tokens.weight":
            # Untied: rows of rms ~1. Tied: the same matrix is the output projection, so scale it like one.
            val = normal(shape, 1.5 / H**0.5 if tied else 1.0)
        elif name == "lm_head.weight":
            val = normal(shape, 1.5 / H**0.5)
        elif name.endswith("norm.weight"):
            val = 1.0 + normal(shape, 0.1)
        elif name.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight")):
            val = normal(shape, 1.0 / shape[1] ** 0.5)
        elif name.endswith("o_proj.weight"):
            val = normal(shape, out_gain / shape[1] ** 0.5)
        elif name.endswith("mlp.gate.weight"):
            val = normal(shape, 1.0 / H**0.5)
        elif name.endswith("mlp.experts.gate_up_proj"):  # [E, 2I, H]
            val = normal(shape, 1.0 / H**0.5)
        elif name.endswith("mlp.experts.down_proj"):  # [E, H, I]
            val = normal(shape, out_gain / I**0.5)
        else:
            raise RuntimeError(f"no init rule for parameter {name} {shape}")
        with torch.no_grad():
            p.copy_(val)


def apply_skew(model, cfg, gen):
    """Makes every layer's router strongly prefer expert 0.

    A shared direction c (|c| = sqrt(H), as large as a row's random part) is added to every embedding row;
    c is projected out of every o_proj and expert down_proj output (so the residual stream's component
    along c stays exactly the embedding's, in every layer) and out of lm_head (so it does not bias the
    logits); each router row 0 is set to ROUTER_ALPHA * c_hat.
    """
    ROUTER_ALPHA = 1.25
    H = cfg.hidden_size
    c_hat = torch.randn(H, generator=gen)
    c_hat /= c_hat.norm()
    proj_out = torch.eye(H) - torch.outer(c_hat, c_hat)  # removes the c component of an H-vector
    with torch.no_grad():
        model.model.embed_tokens.weight += H**0.5 * c_hat
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.copy_(proj_out @ layer.self_attn.o_proj.weight)
            down = layer.mlp.experts.down_proj  # [E, H, I]
            down.copy_(torch.einsum("hk,eki->ehi", proj_out, down))
            layer.mlp.gate.weight[0].copy_(ROUTER_ALPHA * c_hat)
        model.lm_head.weight.copy_(model.lm_head.weight @ proj_out)
    return c_hat


def round_to_storage(model, dtype):
    """Rounds the float32 parameters to the storage dtype in place (they stay float32, exactly representable)."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(dtype).to(torch.float32))


# ----------------------------------------------------------------------------------------------------
# Writing and checking the checkpoint


def published_tensors(model, cfg, dtype):
    """The model's weights under the published Mixtral names, in the storage dtype: name -> tensor."""
    sd = model.state_dict()
    I = cfg.intermediate_size
    out = {}
    for name, t in sd.items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        if ".mlp.experts.gate_up_proj" in name:
            prefix = name.replace(".mlp.experts.gate_up_proj", ".block_sparse_moe.experts")
            for e in range(t.shape[0]):
                out[f"{prefix}.{e}.w1.weight"] = t[e, :I]  # gate projection, first half (chunk(2)[0])
                out[f"{prefix}.{e}.w3.weight"] = t[e, I:]  # up projection
        elif ".mlp.experts.down_proj" in name:
            prefix = name.replace(".mlp.experts.down_proj", ".block_sparse_moe.experts")
            for e in range(t.shape[0]):
                out[f"{prefix}.{e}.w2.weight"] = t[e]
        elif ".mlp.gate.weight" in name:
            out[name.replace(".mlp.gate.weight", ".block_sparse_moe.gate.weight")] = t
        else:
            out[name] = t
    return {k: v.to(dtype).contiguous().clone() for k, v in sorted(out.items())}


def read_checkpoint_tensors(ckpt):
    """name -> (file name, tensor) for every tensor in the folder's safetensors files; checks the index."""
    files = sorted(p.name for p in ckpt.glob("*.safetensors"))
    index_path = ckpt / "model.safetensors.index.json"
    out = {}
    for fname in files:
        with safe_open(ckpt / fname, framework="pt") as f:
            assert f.metadata() == {"format": "pt"}, (fname, f.metadata())
            for k in f.keys():
                assert k not in out, f"{k} in two files"
                out[k] = (fname, f.get_tensor(k))
    if index_path.exists():
        weight_map = json.loads(index_path.read_text())["weight_map"]
        assert weight_map == {k: v[0] for k, v in out.items()}, "index weight_map does not match the shards"
    else:
        assert files == ["model.safetensors"], files
    return out


def write_published_checkpoint(ckpt, tensors, max_shard_bytes):
    """Fallback writer: safetensors shard(s) with the published names, plus the index when sharded."""
    for p in list(ckpt.glob("*.safetensors")) + list(ckpt.glob("*.safetensors.index.json")):
        p.unlink()
    shards, cur, cur_bytes = [], {}, 0
    for k, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if max_shard_bytes and cur and cur_bytes + nbytes > max_shard_bytes:
            shards.append(cur)
            cur, cur_bytes = {}, 0
        cur[k] = t
        cur_bytes += nbytes
    shards.append(cur)
    if len(shards) == 1:
        save_file(shards[0], str(ckpt / "model.safetensors"), metadata={"format": "pt"})
        return
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(ckpt / fname), metadata={"format": "pt"})
        for k, t in shard.items():
            weight_map[k] = fname
            total += t.numel() * t.element_size()
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def legacy_config_json(ckpt, cfg, storage):
    """Rewrites config.json the way published Mixtral checkpoints (transformers 4.x) spell it."""
    j = json.loads((ckpt / "config.json").read_text())
    rope = j.pop("rope_parameters")
    assert rope == {"rope_theta": cfg.rope_parameters["rope_theta"], "rope_type": "default"}, rope
    j["rope_theta"] = rope["rope_theta"]
    j.pop("dtype", None)
    j["torch_dtype"] = storage
    if j.get("head_dim") is None:
        j.pop("head_dim", None)
    (ckpt / "config.json").write_text(json.dumps(dict(sorted(j.items())), indent=2) + "\n")


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def reload(ckpt):
    cap = _Capture()
    tlog = logging.getLogger("transformers")
    tlog.addHandler(cap)
    try:
        model, info = MixtralForCausalLM.from_pretrained(
            ckpt, dtype=torch.float32, attn_implementation="eager", experts_implementation="eager",
            output_loading_info=True,
        )
    finally:
        tlog.removeHandler(cap)
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        assert not info[key], f"{ckpt}: {key}: {info[key]}"
    bad = [m for m in cap.messages
           if any(w in m.lower() for w in ("newly initialized", "missing", "unexpected", "mismatch", "conversion"))]
    assert not bad, f"{ckpt}: loading warnings: {bad}"
    model.eval()
    assert model.config._attn_implementation == "eager"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    return model


def write_checkpoint(name, spec, model, cfg, ckpt):
    storage = DTYPES[spec["storage"]]
    to_save = copy.deepcopy(model).to(storage)  # a copy: .to() would also round the rope inv_freq buffer
    kw = dict(safe_serialization=True)
    if spec["max_shard_size"]:
        kw["max_shard_size"] = spec["max_shard_size"]
    to_save.save_pretrained(ckpt, **kw)
    del to_save

    expected = published_tensors(model, cfg, storage)
    written = read_checkpoint_tensors(ckpt)
    written_by = "save_pretrained"
    if set(written) != set(expected):
        print(f"[{name}] save_pretrained wrote non-published names "
              f"(e.g. {sorted(set(written) - set(expected))[:4]}); rewriting the safetensors files")
        max_bytes = None
        if spec["max_shard_size"]:
            max_bytes = int(float(spec["max_shard_size"].rstrip("MB")) * 10**6)
        write_published_checkpoint(ckpt, expected, max_bytes)
        written = read_checkpoint_tensors(ckpt)
        written_by = "safetensors.torch.save_file"
    assert set(written) == set(expected)
    for k, t in expected.items():
        w = written[k][1]
        assert w.dtype == storage and tuple(w.shape) == tuple(t.shape), (k, w.dtype, w.shape, t.shape)
        assert torch.equal(w, t), f"{k}: values differ"
    files = sorted({f for f, _ in written.values()})
    if spec["max_shard_size"]:
        assert len(files) >= 2, f"{name}: expected >= 2 shards, got {files}"
    else:
        assert files == ["model.safetensors"], files
    if spec.get("legacy_config"):
        legacy_config_json(ckpt, cfg, spec["storage"])
    return written_by, {k: (v[0], list(v[1].shape)) for k, v in written.items()}


# ----------------------------------------------------------------------------------------------------
# Reference computation


class RouterRecorder:
    """Captures (router_indices, router_logits) of every layer's MixtralTopKRouter."""

    def __init__(self, model):
        self.calls = []
        self.handles = []
        for i, layer in enumerate(model.model.layers):
            self.handles.append(layer.mlp.gate.register_forward_hook(self._hook(i)))

    def _hook(self, layer_idx):
        def fn(module, args, output):
            router_logits, _, router_indices = output
            self.calls.append((layer_idx, router_indices.detach().clone(), router_logits.detach().float().clone()))
        return fn

    def remove(self):
        for h in self.handles:
            h.remove()


def logit_gap(logits_row):
    top = torch.topk(logits_row.double(), 2).values
    return float(top[0] - top[1])


@torch.no_grad()
def reference_for_prompt(model, prompt):
    input_ids = torch.tensor([prompt], dtype=torch.long)
    out = model(input_ids=input_ids, use_cache=True)
    prefill = out.logits[0].float().clone()  # [len, vocab]
    past = out.past_key_values
    gaps = [logit_gap(prefill[-1])]
    decode_ids, decode_logits = [], []
    tok = int(prefill[-1].argmax())
    for _ in range(DECODE_STEPS):
        decode_ids.append(tok)
        out = model(input_ids=torch.tensor([[tok]]), past_key_values=past, use_cache=True)
        past = out.past_key_values
        row = out.logits[0, -1].float().clone()
        decode_logits.append(row)
        gaps.append(logit_gap(row))
        tok = int(row.argmax())
    decode_logits = torch.stack(decode_logits)  # [8, vocab]

    eos = model.generation_config.eos_token_id
    eos_set = set(eos if isinstance(eos, list) else [eos])
    gen = model.generate(
        input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
        pad_token_id=sorted(eos_set)[0], return_dict_in_generate=True, output_logits=True,
    )
    new = gen.sequences[0, len(prompt):].tolist()
    generated = []
    for t in new:
        generated.append(t)
        if t in eos_set:
            break
    hit_eos = bool(generated) and generated[-1] in eos_set
    assert len(new) == len(generated), "generate produced tokens after eos (padding?)"
    gaps += [logit_gap(step[0].float()) for step in gen.logits]

    # The generate() chain must agree with the manual prefill + cached decode chain.
    chain = decode_ids + [int(decode_logits[-1].argmax())]
    n = min(len(chain), len(generated))
    assert generated[:n] == chain[:n], (generated, chain)
    for step in range(min(DECODE_STEPS, len(gen.logits) - 1)):
        diff = (gen.logits[step + 1][0].float() - decode_logits[step]).abs().max().item()
        assert diff < 1e-5, f"generate logits step {step + 1} differ from manual decode by {diff}"

    return dict(prompt_ids=list(prompt), decode_ids=decode_ids, generated_ids=generated, hit_eos=hit_eos), \
        prefill, decode_logits, gaps


def make_prompts(cfg, seed):
    g = torch.Generator().manual_seed(seed + 17)
    return [torch.randint(3, cfg.vocab_size, (n,), generator=g).tolist() for n in PROMPT_LENGTHS]


def build(name, spec):
    cfg = make_config(spec)
    seed = spec["seed"]
    torch.manual_seed(seed)
    model = MixtralForCausalLM(cfg).eval()
    gen = torch.Generator().manual_seed(seed)
    init_weights(model, cfg, gen, spec.get("out_gain", 1.0))
    c_hat = apply_skew(model, cfg, gen) if spec.get("skew") else None
    round_to_storage(model, DTYPES[spec["storage"]])

    out_dir = DATA / name
    if out_dir.exists():
        shutil.rmtree(out_dir)
    ckpt = out_dir / "checkpoint"
    ckpt.mkdir(parents=True)
    written_by, layout = write_checkpoint(name, spec, model, cfg, ckpt)

    prompts = make_prompts(cfg, seed)
    ref_model = reload(ckpt)
    # Same weights (bitwise) and same logits as the in-memory model.
    mem_sd, ref_sd = model.state_dict(), ref_model.state_dict()
    assert set(mem_sd) == set(ref_sd)
    for k in mem_sd:
        assert torch.equal(mem_sd[k], ref_sd[k]), f"{name}: reloaded {k} differs"
    with torch.no_grad():
        ids = torch.tensor([prompts[-1]])
        diff = (model(ids).logits - ref_model(ids).logits).abs().max().item()
    assert diff < 1e-6, f"{name}: reloaded logits differ from in-memory ones by {diff}"
    del model

    rec = RouterRecorder(ref_model)
    entries, tensors, all_gaps = [], {}, []
    first_call = []
    for i, prompt in enumerate(prompts):
        first_call.append(len(rec.calls))
        entry, prefill, decode_logits, gaps = reference_for_prompt(ref_model, prompt)
        entries.append(entry)
        tensors[f"prompt{i}.prefill_logits"] = prefill.contiguous()
        tensors[f"prompt{i}.decode_logits"] = decode_logits.contiguous()
        all_gaps += gaps
    rec.remove()

    min_gap = min(all_gaps)
    assert min_gap >= MIN_LOGIT_GAP, f"{name}: greedy top-1/top-2 gap {min_gap} < {MIN_LOGIT_GAP}"
    k = cfg.num_experts_per_tok
    router_gaps = []
    for _, idx, logits in rec.calls:
        srt = torch.sort(logits.double(), dim=-1, descending=True).values
        if k < logits.shape[-1]:
            router_gaps.append(float((srt[:, k - 1] - srt[:, k]).min()))
    min_router_gap = min(router_gaps)
    assert min_router_gap >= MIN_ROUTER_GAP, f"{name}: router near-tie {min_router_gap}"
    logits_std = float(torch.cat([tensors[f"prompt{i}.prefill_logits"] for i in range(3)]).std())

    eos = ref_model.generation_config.eos_token_id
    assert eos == cfg.eos_token_id == 2, eos
    ref = {
        "checkpoint": "checkpoint",
        "compute_dtype": "float32",
        "storage_dtype": spec["storage"],
        "seed": seed,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "safetensors": safetensors.__version__,
        },
        "eos_token_id": eos,
        "prompts": entries,
        "checks": {
            "min_greedy_top1_top2_logit_gap": round(min_gap, 6),
            "min_router_topk_logit_gap": round(min_router_gap, 6),
            "prefill_logits_std": round(logits_std, 4),
            "checkpoint_written_by": written_by,
        },
    }

    if c_hat is not None:
        # Expert-0 share over every token the reference runs through the model (the prefill tokens and
        # the 8 fed decode tokens of each prompt; generate()'s own forwards are excluded).
        counted = []
        for i in range(len(prompts)):
            end = first_call[i] + 2 * (1 + DECODE_STEPS)
            counted += rec.calls[first_call[i]:end]
        per_layer = []
        for layer in range(cfg.num_hidden_layers):
            idx = torch.cat([c[1] for c in counted if c[0] == layer])  # [tokens, k]
            probs = torch.softmax(torch.cat([c[2] for c in counted if c[0] == layer]), dim=-1)
            tokens = idx.shape[0]
            slots = int((idx == 0).sum())
            tokens_with_0 = int((idx == 0).any(-1).sum())
            w0 = probs[:, 0] / torch.gather(probs, 1, idx).sum(-1)  # renormalised weight of expert 0
            per_layer.append({
                "layer": layer,
                "tokens": tokens,
                "slot_fraction_expert0": round(slots / (tokens * k), 6),
                "token_fraction_expert0": round(tokens_with_0 / tokens, 6),
                "mean_routing_weight_expert0": round(float(w0.mean()), 6),
            })
            assert tokens_with_0 == tokens, f"{name}: layer {layer}: expert 0 missed by some tokens"
        ref["expert0_routing"] = {
            "note": "over the prefill tokens and the 8 fed decode tokens of the 3 prompts; uniform routing "
                    f"would give slot_fraction 1/{cfg.num_local_experts} = {1 / cfg.num_local_experts} and "
                    f"token_fraction {k}/{cfg.num_local_experts} = {k / cfg.num_local_experts}; the largest possible "
                    f"slot_fraction is 1/{k} (an expert fills at most one of a token's {k} slots)",
            "per_layer": per_layer,
        }
        ref["checks"]["moe_input_cosine_with_c_min"] = round(moe_input_cosines(ref_model, prompts, c_hat), 4)

    (out_dir / "reference.json").write_text(json.dumps(ref, indent=2) + "\n")
    save_file(tensors, str(out_dir / "reference.safetensors"), metadata={"format": "pt"})
    return ref, layout


@torch.no_grad()
def moe_input_cosines(model, prompts, c_hat):
    """Smallest cosine between c and the hidden state entering an MoE block (post-attention norm output)."""
    cos = []
    hooks = [layer.mlp.register_forward_pre_hook(
        lambda m, args: cos.append(torch.nn.functional.cosine_similarity(args[0][0], c_hat[None], dim=-1)))
        for layer in model.model.layers]
    for p in prompts:
        model(torch.tensor([p]))
    for h in hooks:
        h.remove()
    return float(torch.cat(cos).min())


# ----------------------------------------------------------------------------------------------------
# README


def human_size(n):
    return f"{n / 1024:.0f} KiB" if n < 1024**2 else f"{n / 1024**2:.2f} MiB"


def write_readme(results):
    lines = [
        "# Reference data for the Mixtral runtime tests",
        "",
        "Generated by `scripts/make_reference.py` (do not edit by hand; this README is generated too).",
        "Regenerate with",
        "",
        "```",
        "pip install torch transformers safetensors",
        "python3 scripts/make_reference.py",
        "```",
        "",
        "The script is deterministic (fixed seeds, one CPU thread, eager attention and experts, float32",
        "compute): running it twice gives byte-identical files with the same library versions. The versions",
        "used are recorded in each `reference.json`.",
        "",
        "## Layout",
        "",
        "Each `<name>/` folder holds:",
        "",
        "- `checkpoint/`: a Hugging Face `MixtralForCausalLM` folder: `config.json`, `generation_config.json`",
        "  and `model.safetensors` (or `model-0000k-of-0000n.safetensors` shards + `model.safetensors.index.json`).",
        "  Tensor names are the published Mixtral ones: `model.embed_tokens.weight`, `model.norm.weight`,",
        "  `lm_head.weight` (absent when tied), and per layer `model.layers.{i}.` + `input_layernorm.weight`,",
        "  `post_attention_layernorm.weight`, `self_attn.{q,k,v,o}_proj.weight`,",
        "  `block_sparse_moe.gate.weight` [experts, hidden] and",
        "  `block_sparse_moe.experts.{j}.w1.weight` [intermediate, hidden] (gate proj),",
        "  `.w3.weight` [intermediate, hidden] (up proj), `.w2.weight` [hidden, intermediate] (down proj).",
        "- `reference.json`: `prompts[i]` has `prompt_ids`, `decode_ids` (the 8 tokens fed in the decode",
        "  steps: d0 = argmax of the last prefill logits, d(k+1) = argmax of decode step k's logits),",
        "  `generated_ids` (greedy `generate`, max_new_tokens 16, only the new tokens, ending with the eos",
        "  token if it was produced; no padding) and `hit_eos`; plus `eos_token_id`, `storage_dtype`,",
        "  `compute_dtype` (float32), `seed`, `versions` and a few sanity numbers under `checks`",
        "  (smallest top-1 minus top-2 logit gap over all greedy steps, smallest gap between the k-th and (k+1)-th router logit).",
        "- `reference.safetensors`: float32 `prompt{i}.prefill_logits` [len, vocab] (all positions of a",
        "  batch-1 prefill, no padding) and `prompt{i}.decode_logits` [8, vocab] (step k fed `decode_ids[k]`",
        "  at position len+k with the KV cache of everything before).",
        "",
        "Prompts have lengths 1, 7 and 13 and token ids in [3, vocab). All references come from the",
        "checkpoint reloaded with `from_pretrained(dtype=torch.float32, attn_implementation=\"eager\")`, i.e.",
        "f16/bf16 weights upcast exactly to float32 and everything computed in float32.",
        "Sliding window (tiny_b, W = 8): query position i sees key position j iff i - W < j <= i",
        "(W keys including itself), both in prefill and in decode.",
        "",
        "## Checkpoints",
        "",
        "| folder | vocab | hidden | inter | layers | q/kv heads | head_dim | experts (top-k) | storage | files | what it exercises |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (ref, layout) in results.items():
        c = SPECS[name]["config"]
        hd = c.get("head_dim", c["hidden_size"] // c["num_attention_heads"])
        files = sorted({f for f, _ in layout.values()})
        size = sum((DATA / name / "checkpoint" / f).stat().st_size for f in files)
        about = SPECS[name]["about"]
        if len(files) > 1:
            split = sorted({k.rsplit(".", 2)[0] for k in layout
                            if ".experts." in k and len({layout[k.rsplit(".", 2)[0] + f".{w}.weight"][0]
                                                         for w in ("w1", "w2", "w3")}) > 1})
            if split:
                about += f"; {len(split)} experts have their w1/w2/w3 in different shards (e.g. {split[0]})"
        lines.append(
            f"| `{name}` | {c['vocab_size']} | {c['hidden_size']} | {c['intermediate_size']} | "
            f"{c['num_hidden_layers']} | {c['num_attention_heads']}/{c['num_key_value_heads']} | {hd}"
            f"{' (explicit)' if 'head_dim' in c else ''} | {c['num_local_experts']} ({c['num_experts_per_tok']}) | "
            f"{SPECS[name]['storage']} | {len(files)} ({human_size(size)}) | {about} |"
        )
    lines += [
        "",
        "Other config values: tiny_a/tiny_skew rope_theta 1e6, rms_norm_eps 1e-5, max_position_embeddings 256;",
        "tiny_b rope_theta 1e4, eps 1e-6, sliding_window 8, max_position_embeddings 128, tie_word_embeddings;",
        "tiny_c rope_theta 1e5, eps 1e-5, max_position_embeddings 128. All: bos 1, eos 2, silu, no biases.",
        "",
        "config.json spelling: tiny_a, tiny_b and tiny_skew keep what transformers 5 writes",
        "(`rope_parameters: {rope_theta, rope_type: default}`, `dtype`, and `head_dim: null` when not",
        "given); tiny_c is rewritten the way the published Mixtral checkpoints spell it (top-level",
        "`rope_theta`, `torch_dtype`, no `head_dim`). A config reader should accept both.",
        "",
        "## Greedy decode / eos",
        "",
        "eos_token_id is the config default, 2 (bos 1); prompts never contain ids 0-2. generate stops after",
        "emitting eos; `generated_ids` then ends with it and `hit_eos` is true. The `decode_ids` chain ignores",
        "eos (it always runs 8 steps). The first tokens of `generated_ids` equal `decode_ids` followed by the",
        "argmax of the last decode logits (checked by the script).",
        "",
    ]
    hits = [(n, i, len(p["generated_ids"])) for n, (r, _) in results.items()
            for i, p in enumerate(r["prompts"]) if p["hit_eos"]]
    if hits:
        lines.append("Prompts whose greedy generation hits eos: " +
                     ", ".join(f"{n} prompt{i} (eos is generated token #{k})" for n, i, k in hits) + ".")
    else:
        lines.append("No prompt's greedy generation hits eos (all generate 16 tokens).")
    skew = results["tiny_skew"][0]["expert0_routing"]["per_layer"]
    lines += [
        "",
        "## tiny_skew",
        "",
        "A shared direction c is added to every embedding row, c is projected out of every o_proj and expert",
        "down_proj output (so the residual stream keeps exactly the embedding's component along c) and out of",
        "lm_head, and each layer's router row 0 is a multiple of c. Expert 0 is therefore in every token's",
        "top-2; the other slot still varies. Recorded in `reference.json` under `expert0_routing`:",
        "",
        "(0.5 of the (token, slot) choices is the maximum possible with top-2.)",
        "",
        "| layer | tokens | fraction of (token, slot) choices = expert 0 (uniform: 0.125) | tokens routed to expert 0 (uniform: 0.25) | mean routing weight of expert 0 |",
        "|---|---|---|---|---|",
    ]
    for r in skew:
        lines.append(f"| {r['layer']} | {r['tokens']} | {r['slot_fraction_expert0']} | "
                     f"{r['token_fraction_expert0']} | {r['mean_routing_weight_expert0']} |")
    lines.append("")
    (DATA / "README.md").write_text("\n".join(lines))


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.disable_progress_bar()
    DATA.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, spec in SPECS.items():
        ref, layout = build(name, spec)
        results[name] = (ref, layout)
        gen_summary = [(len(p["generated_ids"]), p["hit_eos"]) for p in ref["prompts"]]
        print(f"[{name}] {len(layout)} tensors in {len({f for f, _ in layout.values()})} file(s) "
              f"({ref['checks']['checkpoint_written_by']}); checks {ref['checks']}; generated {gen_summary}")
        if "expert0_routing" in ref:
            print(f"[{name}] expert 0: {ref['expert0_routing']['per_layer']}")
    write_readme(results)
    total = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file())
    print(f"tests/data: {human_size(total)}")


if __name__ == "__main__":
    sys.exit(main())
