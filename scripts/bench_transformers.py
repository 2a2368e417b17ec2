#!/usr/bin/env python3
"""The peer of moe-bench-model (issue 4, benchmark (d)): Hugging Face transformers'
MixtralForCausalLM of the same shape (a config.json folder, default Mixtral 8x7B's, cut to the same
number of layers), random bf16 weights, on the same GPU, timed the way moe-bench-model times the
runtime:

  decode : B sequences holding --context tokens (one prefill, use_cache=True), then one new token
           per sequence per step through the KV cache; step time = median of --repeats steps after
           --warmup, tokens/s = B / step time.
  prefill: T tokens as T / --seq-len sequences in one forward (use_cache=True, as the runtime
           writes its KV cache), tokens/s = T / time.

The target of issue 4 is the runtime at >= 5x transformers' decode tokens/s at batch 64, with the
same number of layers: give --num-layers the count moe-bench-model printed.

Run it with the GPU machine's own python (it ships torch and transformers), not through
scripts/device_run.sh (whose bundled libraries would shadow the ones torch needs):
    python3 scripts/bench_transformers.py --num-layers 16 --batch 1,8,64 --tokens 2048,4096
A dry run on a CPU with a tiny config:
    python3 scripts/bench_transformers.py --config tests/data/tiny_a/checkpoint --device cpu \
        --batch 1,4 --tokens 64 --seq-len 32 --context 16
Needs: pip install torch transformers (not needed for CI).
"""
import argparse
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args():
    p = argparse.ArgumentParser(
        description="transformers' MixtralForCausalLM decode and prefill, the peer of moe-bench-model",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", default=os.path.join(REPO, "configs/models/mixtral-8x7b"),
                   help="folder holding a Mixtral config.json")
    p.add_argument("--num-layers", type=int, default=0,
                   help="layers to keep (0: the config's); use moe-bench-model's count")
    p.add_argument("--mode", choices=["decode", "prefill", "both"], default="both")
    p.add_argument("--batch", default="1,2,4,8,16,32,64,128,256", help="decode batch sizes")
    p.add_argument("--context", type=int, default=512, help="tokens in each sequence's cache")
    p.add_argument("--tokens", default="2048,4096,8192,16384", help="prefill tokens per step")
    p.add_argument("--seq-len", type=int, default=2048, help="prefill sequence length")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--repeats", type=int, default=5, help="timed steps (the median is printed)")
    p.add_argument("--device", default="cuda", help="cuda or cpu (cpu: dry runs only)")
    p.add_argument("--attn", default="sdpa", help="attn_implementation (sdpa or eager)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    try:
        a.batch = [int(x) for x in a.batch.split(",") if x]
        a.tokens = [int(x) for x in a.tokens.split(",") if x]
    except ValueError:
        p.error("--batch and --tokens take comma-separated integers")
    if not a.batch or not a.tokens or min(a.batch + a.tokens) < 1:
        p.error("--batch and --tokens need positive integers")
    if min(a.context, a.seq_len, a.repeats) < 1 or a.warmup < 0:
        p.error("--context, --seq-len and --repeats must be >= 1, --warmup >= 0")
    return a


def main():
    a = parse_args()
    try:
        import torch
        import transformers
        from transformers import AutoConfig, MixtralForCausalLM
    except ImportError as e:
        sys.exit(f"bench_transformers.py: {e} (expected torch and transformers: "
                 "pip install torch transformers)")
    if not os.path.isfile(os.path.join(a.config, "config.json")):
        sys.exit(f"bench_transformers.py: {a.config}/config.json not found (expected a model folder)")
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_transformers.py: no CUDA device visible to torch (use --device cpu for a dry run)")

    # past_key_values works on every 5.x (the device machine has 5.17); newer ones warn about it.
    import warnings
    warnings.filterwarnings("ignore", category=FutureWarning)
    transformers.logging.set_verbosity_error()
    torch.manual_seed(a.seed)
    cfg = AutoConfig.from_pretrained(a.config)
    if a.num_layers > 0:
        cfg.num_hidden_layers = a.num_layers
    cfg._attn_implementation = a.attn
    dev = torch.device(a.device)
    dtype = torch.bfloat16
    t0 = time.perf_counter()
    # Made in bf16 on the device directly: made in fp32 first, the benchmark's shape needs about
    # twice the memory the bf16 model does (76 GB at 8x7B's full size) before the cast.
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(dev):
            model = MixtralForCausalLM(cfg)
    finally:
        torch.set_default_dtype(default)
    model.eval()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sync()
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, {name}; "
          f"MixtralForCausalLM {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, "
          f"{cfg.num_local_experts} experts top-{cfg.num_experts_per_tok}, bf16, attention {a.attn} "
          f"(built in {time.perf_counter() - t0:.1f} s)")
    V = cfg.vocab_size
    gen = torch.Generator(device="cpu").manual_seed(a.seed)

    def ids(*shape):
        return torch.randint(3, V, shape, generator=gen).to(dev)

    def timed(fn):
        sync()
        t = time.perf_counter()
        out = fn()
        sync()
        return time.perf_counter() - t, out

    with torch.inference_mode():
        if a.mode in ("decode", "both"):
            print(f"\ndecode: one token for each of B sequences of {a.context} context tokens")
            print(f"{'batch':>6} {'step ms':>10} {'tokens/s':>12}")
            for B in a.batch:
                try:
                    out = model(ids(B, a.context), use_cache=True)
                    past = out.past_key_values
                    nxt = out.logits[:, -1].argmax(-1, keepdim=True)
                    times = []
                    for s in range(a.warmup + a.repeats):
                        t, out = timed(lambda: model(nxt, past_key_values=past, use_cache=True))
                        past = out.past_key_values
                        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
                        if s >= a.warmup:
                            times.append(t)
                    t = statistics.median(times)
                    print(f"{B:>6} {t * 1e3:>10.3f} {B / t:>12.0f}")
                except torch.OutOfMemoryError:
                    print(f"{B:>6}  out of memory")
                del past, out
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
        if a.mode in ("prefill", "both"):
            print(f"\nprefill: T tokens in one forward, sequences of {a.seq_len} tokens")
            print(f"{'tokens':>7} {'step ms':>10} {'tokens/s':>12}")
            for T in a.tokens:
                n_seq = max(1, T // a.seq_len)
                x = ids(n_seq, min(a.seq_len, T))
                try:
                    times = []
                    for s in range(a.warmup + a.repeats):
                        t, out = timed(lambda: model(x, use_cache=True))
                        del out
                        if s >= a.warmup:
                            times.append(t)
                    t = statistics.median(times)
                    print(f"{x.numel():>7} {t * 1e3:>10.2f} {x.numel() / t:>12.0f}")
                except torch.OutOfMemoryError:
                    print(f"{x.numel():>7}  out of memory")
                if dev.type == "cuda":
                    torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
