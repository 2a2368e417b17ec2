#!/usr/bin/env python3
"""Our CPU backend (moe-run) beside its peers, transformers and llama.cpp, on one random Mixtral
checkpoint, on this machine, in one run. A benchmark, not a test: nothing here asserts a speed.

    python3 scripts/bench_cpu_peers.py --moe-run build/bin/moe-run --json peers.json
    # a small shape first, to try it out (the set-up still takes a while the first time):
    python3 scripts/bench_cpu_peers.py --hidden 256 --intermediate 512 --layers 2 --repeats 1

Everything it needs comes from PyPI and is kept under --cache (default /tmp/moe-peer-cache), each
step skipped when its result is already there (--setup-only fills the cache and stops):
  venv/                      torch, transformers, safetensors, sentencepiece, gguf, numpy
  sdist/, src/               llama-cpp-python's source package; llama.cpp is vendored inside it
  llama-build/               llama-bench and llama-batched-bench (CPU, Release, native ISA)
  models/<shape>/            MixtralForCausalLM from a MixtralConfig and --seed (safetensors),
                             a trained SentencePiece tokenizer.model, generation_config.json
  models/<shape>.f32.gguf, .f16.gguf   converted with llama.cpp's convert_hf_to_gguf.py
  runs/                      inputs, outputs and logs of the last run (kept for a post-mortem)
Outside PyPI it needs cmake, a C++ compiler, mpirun and /usr/bin/time (Debian: cmake g++
openmpi-bin time).

Workloads, each the median of --repeats runs (prompts are random ids, the same for every program):
  prefill  one prompt of --prefill-tokens tokens, tokens/s of the forward pass.
           moe-run: its "prefill" line; transformers: one forward(use_cache=True);
           llama.cpp: llama-bench pp<N>.
  decode   one sequence, --decode-tokens new tokens after a --short-prompt-token prompt; tokens/s of
           the tokens after the first (the first comes out of the prefill).
           moe-run: its "decode" line; transformers: (N-1) / (generate(N) - generate(1));
           llama.cpp: llama-bench tg<N> (from an empty context).
  batch    --batch-seqs sequences, each --short-prompt tokens and --batch-tokens new tokens, all at
           once; generated tokens / wall time, prefills included.
           moe-run: its "N requests, M tokens generated in X s" line; transformers: one batched
           generate; llama.cpp: llama-batched-bench (prompts not shared), B*TG / T.
  peak RSS the largest maximum resident set over the program's runs (/usr/bin/time's %M), summed
           over the ranks for moe-run under mpirun, the Python process for transformers.
moe-run's greedy tokens (f32) are compared with transformers' for the decode and batch workloads.

Internal: "bench_cpu_peers.py _worker make_model|transformers ARGS.json" runs inside the venv.
"""
import argparse
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tarfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ME = "bench_cpu_peers.py"
PY_PACKAGES = ["torch", "transformers", "safetensors", "sentencepiece", "gguf", "numpy"]
# The llama-cpp-python release whose vendored llama.cpp this script was checked with; another may
# work, but its tools' flags and output formats can move.
LLAMA_CPP_PYTHON = "0.3.36"
LLAMA_TARGETS = ["llama-bench", "llama-batched-bench"]
COLUMNS = [  # (key, heading)
    ("moe1_f32", "moe-run 1r f32"), ("moe2_f32", "moe-run 2r f32"),
    ("moe1_bf16", "moe-run 1r bf16"), ("moe2_bf16", "moe-run 2r bf16"),
    ("hf_f32", "transformers f32"), ("llama_f32", "llama.cpp f32"), ("llama_f16", "llama.cpp f16")]


class StepError(Exception):
    pass


def log(msg):
    print(f"[{datetime.datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


def run_step(step, cmd, logfile, stdout_only=False):
    """Runs cmd with its output in logfile and returns that output (with stdout_only, stderr goes
    to logfile and stdout, returned, to logfile + '.out': llama-bench's JSON is not mixed with its
    logs). A failure names the step, the command and the log's tail."""
    out_file = logfile + ".out" if stdout_only else None
    with open(logfile, "w") as f:
        f.write(f"$ {shlex.join(cmd)}\n")
        f.flush()
        try:
            if out_file:
                with open(out_file, "w") as o:
                    rc = subprocess.run(cmd, stdout=o, stderr=f).returncode
            else:
                rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
        except OSError as e:
            raise StepError(f"step '{step}' could not start: {shlex.join(cmd)}: {e}")
    if rc != 0:
        with open(logfile, errors="replace") as f:
            tail = "".join(f.readlines()[-25:])
        raise StepError(f"step '{step}' failed with exit code {rc}: {shlex.join(cmd)}\n"
                        f"last lines of {logfile}:\n{tail}")
    with open(out_file or logfile, errors="replace") as f:
        return f.read()


# ---------------------------------------------------------------------------------------------
# Set-up: Python packages, llama.cpp, the model and its GGUF files.

def setup_python(a):
    check = ["-c", "import " + ", ".join(PY_PACKAGES)]
    if a.system_python:
        py = sys.executable
        if subprocess.run([py] + check, capture_output=True).returncode != 0:
            raise StepError(f"step 'python packages': --system-python {py} lacks one of "
                            f"{' '.join(PY_PACKAGES)} (pip install them, or drop --system-python)")
        return py
    venv = os.path.join(a.cache, "venv")
    py = os.path.join(venv, "bin", "python")
    if os.path.exists(py) and subprocess.run([py] + check, capture_output=True).returncode == 0:
        log(f"python packages: cached in {venv}")
        return py
    log(f"python packages: installing {' '.join(PY_PACKAGES)} into {venv} (torch is large)")
    logf = os.path.join(a.cache, "pip.log")
    if not os.path.exists(py):
        run_step("python venv", [sys.executable, "-m", "venv", venv], logf)
    run_step("pip install", [py, "-m", "pip", "install", "--upgrade"] + PY_PACKAGES, logf)
    return py


def setup_llama(a):
    """llama.cpp from llama-cpp-python's sdist: only the tools the benchmark runs, CPU only."""
    ver = a.llama_cpp_python
    build = os.path.join(a.cache, "llama-build")
    stamp = os.path.join(build, "moe-peer-stamp")
    want = f"llama-cpp-python {ver} native"
    src = os.path.join(a.cache, "src", f"llama_cpp_python-{ver}", "vendor", "llama.cpp")
    bins = {t: os.path.join(build, "bin", t) for t in LLAMA_TARGETS}
    if (os.path.exists(stamp) and open(stamp).read().strip() == want
            and all(os.path.exists(b) for b in bins.values())
            and os.path.exists(os.path.join(src, "convert_hf_to_gguf.py"))):
        log(f"llama.cpp: cached in {build} ({want})")
        return src, bins
    sdist_dir = os.path.join(a.cache, "sdist")
    os.makedirs(sdist_dir, exist_ok=True)
    sdist = os.path.join(sdist_dir, f"llama_cpp_python-{ver}.tar.gz")
    if not os.path.exists(sdist):
        log(f"llama.cpp: downloading the llama-cpp-python {ver} source package")
        run_step("download llama-cpp-python sdist",
                 [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                  f"llama-cpp-python=={ver}", "-d", sdist_dir],
                 os.path.join(a.cache, "sdist.log"))
        if not os.path.exists(sdist):
            raise StepError(f"step 'download llama-cpp-python sdist': {sdist} is not there after "
                            f"pip download (see {sdist_dir})")
    if not os.path.exists(os.path.join(src, "convert_hf_to_gguf.py")):
        log(f"llama.cpp: unpacking {sdist}")
        with tarfile.open(sdist) as t:
            t.extractall(os.path.join(a.cache, "src"))
        if not os.path.exists(os.path.join(src, "CMakeLists.txt")):
            raise StepError(f"step 'unpack llama-cpp-python sdist': {src} has no CMakeLists.txt")
    if os.path.exists(stamp) and open(stamp).read().strip() != want:
        shutil.rmtree(build)  # another version's objects would be mixed into this one
    log(f"llama.cpp: building {' '.join(LLAMA_TARGETS)} in {build} (minutes)")
    logf = os.path.join(a.cache, "llama-build.log")
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    # Everything that could reach the network or a GPU is off; GGML_NATIVE tunes for this CPU.
    run_step("configure llama.cpp",
             ["cmake", "-S", src, "-B", build] + gen +
             ["-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DGGML_CUDA=OFF",
              "-DGGML_METAL=OFF", "-DGGML_VULKAN=OFF", "-DLLAMA_BUILD_TESTS=OFF",
              "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_APP=OFF",
              "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_OPENSSL=OFF",
              "-DLLAMA_CURL=OFF", "-DBUILD_SHARED_LIBS=OFF"], logf)
    run_step("build llama.cpp", ["cmake", "--build", build, "-j", str(a.build_jobs), "--target"]
             + LLAMA_TARGETS, logf)
    for b in bins.values():
        if not os.path.exists(b):
            raise StepError(f"step 'build llama.cpp': {b} was not built (see {logf})")
    with open(stamp, "w") as f:
        f.write(want + "\n")
    return src, bins


def shape_name(a):
    return (f"mixtral-h{a.hidden}-i{a.intermediate}-l{a.layers}-a{a.heads}-kv{a.kv_heads}"
            f"-e{a.experts}k{a.top_k}-v{a.vocab}-p{a.max_pos}-s{a.seed}")


def setup_model(a, py, llama_src):
    models = os.path.join(a.cache, "models")
    os.makedirs(models, exist_ok=True)
    name = shape_name(a)
    mdir = os.path.join(models, name)
    done = os.path.join(mdir, "moe-peer-done")
    if os.path.exists(done):
        log(f"model: cached in {mdir}")
    else:
        log(f"model: making {name} with transformers")
        shutil.rmtree(mdir, ignore_errors=True)
        spec = os.path.join(models, name + ".args.json")
        with open(spec, "w") as f:
            json.dump({"dir": mdir, "hidden": a.hidden, "intermediate": a.intermediate,
                       "layers": a.layers, "heads": a.heads, "kv_heads": a.kv_heads,
                       "experts": a.experts, "top_k": a.top_k, "vocab": a.vocab,
                       "max_pos": a.max_pos, "seed": a.seed}, f)
        run_step("make the model", [py, os.path.abspath(__file__), "_worker", "make_model", spec],
                 os.path.join(models, name + ".make.log"))
        open(done, "w").close()
    ggufs = {}
    for t in ("f32", "f16"):
        g = os.path.join(models, f"{name}.{t}.gguf")
        if not os.path.exists(g):
            log(f"model: converting to GGUF {t}")
            tmp = g + ".part"
            run_step(f"convert to GGUF {t}",
                     [py, os.path.join(llama_src, "convert_hf_to_gguf.py"), mdir,
                      "--outtype", t, "--outfile", tmp],
                     os.path.join(models, f"{name}.{t}.convert.log"))
            os.replace(tmp, g)  # a half-written file is never taken for a finished one
        ggufs[t] = g
    return mdir, ggufs


# ---------------------------------------------------------------------------------------------
# Measurements.

class Workloads:
    """The prompts every program gets: random ids (not special ones) from a seeded generator."""

    def __init__(self, a):
        import random
        rng = random.Random(a.seed + 1)
        hi = min(a.vocab, 32000) - 1  # pieces past the tokenizer's are padding in the GGUF vocab
        ids = lambda n: [rng.randint(3, hi) for _ in range(n)]
        self.prefill = ids(a.prefill_tokens)
        self.decode = ids(a.short_prompt)
        self.batch = [ids(a.short_prompt) for _ in range(a.batch_seqs)]


def timed_cmd(cmd, rss_file):
    return ["/usr/bin/time", "-f", "%M", "-o", rss_file] + cmd


def read_rss_kib(files):
    total = 0
    for fn in files:
        try:
            with open(fn) as f:
                lines = [l for l in f.read().split() if l.isdigit()]
        except OSError as e:
            raise StepError(f"no maximum RSS: {e}")
        if not lines:
            raise StepError(f"no maximum RSS in {fn}")
        total += int(lines[-1])
    return total


def bench_moe(a, mdir, wl, ranks, dtype, rundir):
    key = f"moe{ranks}_{dtype}"
    res = {"prefill": [], "decode": [], "batch": [], "rss_kib": 0, "tokens": {}, "failed": {}}
    jobs = {
        "prefill": ([{"id": 0, "prompt_ids": wl.prefill, "max_new_tokens": 1}]),
        "decode": ([{"id": 0, "prompt_ids": wl.decode, "max_new_tokens": a.decode_tokens}]),
        "batch": ([{"id": i, "prompt_ids": p, "max_new_tokens": a.batch_tokens}
                   for i, p in enumerate(wl.batch)]),
    }
    threads = max(1, a.threads // ranks)
    for work, reqs in jobs.items():
        inp = os.path.join(rundir, f"{key}.{work}.in.jsonl")
        with open(inp, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in reqs)
        # A crash in one workload is reported in its cell; the other workloads still run.
        try:
            for rep in range(a.repeats):
                out = os.path.join(rundir, f"{key}.{work}.{rep}.out.jsonl")
                rss = os.path.join(rundir, f"{key}.{work}.{rep}.rss")
                moe = [a.moe_run, "--checkpoint", mdir, "--input", inp, "--output", out,
                       "--ignore-eos", "--dtype", dtype, "--threads", str(threads),
                       "--no-stats-table"]
                if ranks == 1:
                    cmd, rss_files = timed_cmd(moe, rss), [rss]
                else:
                    # One /usr/bin/time per rank, each with its own file: RSS summed over ranks.
                    per_rank = 'exec /usr/bin/time -f %M -o "$0.$OMPI_COMM_WORLD_RANK" "$@"'
                    cmd = shlex.split(a.mpirun) + ["-np", str(ranks), "sh", "-c", per_rank,
                                                   rss] + moe
                    rss_files = [f"{rss}.{r}" for r in range(ranks)]
                text = run_step(f"moe-run {ranks} rank(s) {dtype} {work}", cmd,
                                os.path.join(rundir, f"{key}.{work}.{rep}.log"))
                res["rss_kib"] = max(res["rss_kib"], read_rss_kib(rss_files))
                if work == "prefill":
                    m = re.search(r"prefill (\d+) tokens in ([\d.]+) s \(([\d.]+) tokens/s", text)
                elif work == "decode":
                    m = re.search(r"decode (\d+) tokens in ([\d.]+) s \(([\d.]+) tokens/s", text)
                else:
                    m = re.search(r"(\d+) requests, (\d+) tokens generated in ([\d.]+) s "
                                  r"\(([\d.]+) tokens/s", text)
                if not m:
                    raise StepError(f"step 'moe-run {ranks} rank(s) {dtype} {work}': no {work} "
                                    f"figure in its output (see {rundir}/{key}.{work}.{rep}.log)")
                res[work].append(float(m.group(3) if work != "batch" else m.group(4)))
                if rep == 0 and work != "prefill":
                    with open(out) as f:
                        rows = sorted((json.loads(l) for l in f if l.strip()),
                                      key=lambda r: r["id"])
                    res["tokens"][work] = [r["output_ids"] for r in rows]
        except StepError as e:
            res[work] = []
            res["failed"][work] = str(e)
    return res


def bench_transformers(a, py, mdir, wl, rundir):
    spec = os.path.join(rundir, "hf.args.json")
    out = os.path.join(rundir, "hf.result.json")
    with open(spec, "w") as f:
        json.dump({"dir": mdir, "threads": a.threads, "repeats": a.repeats, "prefill": wl.prefill,
                   "decode": wl.decode, "decode_tokens": a.decode_tokens, "batch": wl.batch,
                   "batch_tokens": a.batch_tokens, "out": out}, f)
    run_step("transformers", [py, os.path.abspath(__file__), "_worker", "transformers", spec],
             os.path.join(rundir, "hf.log"))
    with open(out) as f:
        return json.load(f)


def bench_llama(a, bins, gguf, t, wl, rundir):
    key = f"llama_{t}"
    res = {"prefill": [], "decode": [], "batch": [], "rss_kib": 0, "failed": {}}
    thr = str(a.threads)
    rss = os.path.join(rundir, f"{key}.bench.rss")
    # llama-bench repeats itself (-r) after one warm-up; its samples are our repeats.
    text = run_step(f"llama-bench {t}",
                    timed_cmd([bins["llama-bench"], "-m", gguf, "-p", str(len(wl.prefill)),
                               "-n", str(a.decode_tokens), "-r", str(a.repeats), "-t", thr,
                               "-o", "json"], rss),
                    os.path.join(rundir, f"{key}.bench.log"), stdout_only=True)
    res["rss_kib"] = read_rss_kib([rss])
    try:
        rows = json.loads(text[text.index("["):text.rindex("]") + 1])
    except ValueError:
        raise StepError(f"step 'llama-bench {t}': no JSON in its output ({rundir}/{key}.bench.log)")
    for r in rows:
        work = "prefill" if r.get("n_prompt", 0) > 0 else "decode"
        res[work] = list(r.get("samples_ts") or [r["avg_ts"]])
    n_kv = a.batch_seqs * (a.short_prompt + a.batch_tokens)
    for rep in range(a.repeats):
        rss = os.path.join(rundir, f"{key}.batched.{rep}.rss")
        text = run_step(f"llama-batched-bench {t}",
                        timed_cmd([bins["llama-batched-bench"], "-m", gguf, "-c", str(n_kv),
                                   "-b", "2048", "-ub", "512", "-npp", str(a.short_prompt),
                                   "-ntg", str(a.batch_tokens), "-npl", str(a.batch_seqs),
                                   "-t", thr, "-tb", thr, "--output-format", "jsonl"], rss),
                        os.path.join(rundir, f"{key}.batched.{rep}.log"), stdout_only=True)
        res["rss_kib"] = max(res["rss_kib"], read_rss_kib([rss]))
        row = None
        for line in text.splitlines():
            if line.startswith("{") and '"speed"' in line:
                row = json.loads(line)
        if row is None:
            raise StepError(f"step 'llama-batched-bench {t}': no JSONL result in its output "
                            f"({rundir}/{key}.batched.{rep}.log)")
        res["batch"].append(row["pl"] * row["tg"] / row["t"])
    return res


def compare_tokens(moe, hf):
    """'same' or where the first difference is: a sequence and the position of the new token."""
    notes = []
    for work in ("decode", "batch"):
        if work not in moe.get("tokens", {}) or work not in hf.get("tokens", {}):
            notes.append(f"{work}: no tokens to compare (a run failed)")
            continue
        for s, (x, y) in enumerate(zip(moe["tokens"][work], hf["tokens"][work])):
            if x != y:
                pos = next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y)))
                notes.append(f"{work} seq {s} differs from new token {pos}")
                break
    return "same" if not notes else "; ".join(notes)


# ---------------------------------------------------------------------------------------------
# Workers, run with the venv's python.

def worker_make_model(spec):
    import random

    import sentencepiece as spm
    import torch
    from transformers import GenerationConfig, MixtralConfig, MixtralForCausalLM

    s = json.load(open(spec))
    torch.manual_seed(s["seed"])
    cfg = MixtralConfig(vocab_size=s["vocab"], hidden_size=s["hidden"],
                        intermediate_size=s["intermediate"], num_hidden_layers=s["layers"],
                        num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"],
                        num_local_experts=s["experts"], num_experts_per_tok=s["top_k"],
                        max_position_embeddings=s["max_pos"], rope_theta=1e6,
                        bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    model = MixtralForCausalLM(cfg).to(torch.float32).eval()
    n = sum(p.numel() for p in model.parameters())
    os.makedirs(s["dir"], exist_ok=True)
    model.save_pretrained(s["dir"], safe_serialization=True)
    GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=0,
                     do_sample=False).save_pretrained(s["dir"])
    # llama.cpp's converter needs a tokenizer.model. Pseudo-words from a seeded generator give BPE
    # enough distinct merges for a 32000-piece vocabulary; byte fallback covers everything else.
    # The trainer writes its input paths into the model file: a fixed folder (not a temporary one)
    # keeps tokenizer.model byte for byte the same from run to run; one thread keeps the pieces so.
    rng = random.Random(s["seed"])
    cons = "b c d f g h j k l m n p r s t v w z ch sh th st tr pl".split()
    vow = "a e i o u ai ou ea".split()
    lex = sorted({"".join(rng.choice(cons) + rng.choice(vow) for _ in range(rng.randint(1, 4)))
                  for _ in range(120000)})
    pieces = min(s["vocab"], 32000)
    tmp = os.path.join(s["dir"], "tokenizer-training")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    corpus = os.path.join(tmp, "corpus.txt")
    with open(corpus, "w") as f:
        for _ in range(30000):
            f.write(" ".join(rng.choice(lex) for _ in range(16)) + "\n")
    spm.SentencePieceTrainer.train(
        input=corpus, model_prefix=os.path.join(tmp, "tok"), vocab_size=pieces,
        model_type="bpe", unk_id=0, bos_id=1, eos_id=2, pad_id=-1, byte_fallback=True,
        character_coverage=1.0, num_threads=1, hard_vocab_limit=False,
        shuffle_input_sentence=False, minloglevel=2)
    shutil.copy(os.path.join(tmp, "tok.model"), os.path.join(s["dir"], "tokenizer.model"))
    shutil.rmtree(tmp)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(s["dir"], "tokenizer.model"))
    with open(os.path.join(s["dir"], "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
                   "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False}, f)
    print(f"{n / 1e6:.1f}M parameters, tokenizer of {sp.vocab_size()} pieces, in {s['dir']}")


def worker_transformers(spec):
    import resource
    import time
    import warnings

    import torch
    import transformers
    from transformers import MixtralForCausalLM

    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    s = json.load(open(spec))
    torch.set_num_threads(s["threads"])
    model = MixtralForCausalLM.from_pretrained(s["dir"], dtype=torch.float32).eval()
    reps = s["repeats"]

    def median_time(fn):
        times, out = [], None
        for _ in range(reps):
            t = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times), out

    def generate(prompts, n):
        x = torch.tensor(prompts)
        return model.generate(x, attention_mask=torch.ones_like(x), do_sample=False,
                              max_new_tokens=n, min_new_tokens=n, pad_token_id=0)

    res = {"tokens": {}}
    with torch.inference_mode():
        x = torch.tensor([s["prefill"]])
        model(x[:, :8], use_cache=True)  # warm-up: first-call allocations out of the timings
        t, _ = median_time(lambda: model(x, use_cache=True))
        res["prefill"] = [len(s["prefill"]) / t]
        n = s["decode_tokens"]
        t1, _ = median_time(lambda: generate([s["decode"]], 1))
        tn, out = median_time(lambda: generate([s["decode"]], n))
        res["decode"] = [(n - 1) / (tn - t1)]
        res["tokens"]["decode"] = [out[0, len(s["decode"]):].tolist()]
        n = s["batch_tokens"]
        t, out = median_time(lambda: generate(s["batch"], n))
        res["batch"] = [len(s["batch"]) * n / t]
        res["tokens"]["batch"] = [row[len(s["batch"][0]):].tolist() for row in out]
    res["rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    with open(s["out"], "w") as f:
        json.dump(res, f)


# ---------------------------------------------------------------------------------------------

def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def render(report):
    cols = [c for c in COLUMNS if c[0] in report["results"]]
    rows = [("prefill %d tok, tok/s" % report["workloads"]["prefill_tokens"], "prefill", "{:.1f}"),
            ("decode 1x%d, tok/s" % report["workloads"]["decode_tokens"], "decode", "{:.2f}"),
            ("batch %dx%d, gen tok/s" % (report["workloads"]["batch_seqs"],
                                         report["workloads"]["batch_tokens"]), "batch", "{:.2f}"),
            ("peak RSS, MiB", "rss_mib", "{:.0f}")]
    head = [""] + [h for _, h in cols]
    body = []
    def cell(r, k, fmt):
        if k in r.get("failed", {}):
            return "FAIL"
        return fmt.format(r[k]) if r.get(k) else "-"

    for label, k, fmt in rows:
        body.append([label] + [cell(report["results"][c], k, fmt) for c, _ in cols])
    body.append(["greedy = transformers"] + [report["results"][c].get("greedy_vs_hf", "-")
                                             if len(report["results"][c].get("greedy_vs_hf", "-")) < 18
                                             else "differs*" for c, _ in cols])
    w = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    fmt_row = lambda r: "  ".join(r[0].ljust(w[0]) if i == 0 else c.rjust(w[i])
                                  for i, c in enumerate(r))
    m = report["machine"]
    lines = [f"{report['model']['name']} ({report['model']['parameters_m']:.0f}M parameters), "
             f"median of {report['repeats']} run(s)",
             f"machine: {m['cpu']}, {m['cores']} cores, load {m['load_at_start']} at start; "
             f"{report['date']}",
             fmt_row(head), fmt_row(["-" * w[0]] + ["-" * x for x in w[1:]])]
    lines += [fmt_row(r) for r in body]
    for c, h in cols:
        g = report["results"][c].get("greedy_vs_hf", "")
        if len(g) >= 18:
            lines.append(f"* {h}: {g}")
    if any(r.get("failed") for r in report["results"].values()):
        lines.append("FAIL: that run exited with an error (the steps are listed below)")
    lines.append("peak RSS: moe-run summed over its ranks; moe-run threads per rank = "
                 f"{report['threads']} / ranks; transformers and llama.cpp {report['threads']} threads")
    return "\n".join(lines)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds '(default: ...)' to each option's help, unless the help already says its default."""

    def _get_help_string(self, action):
        return action.help if "default:" in (action.help or "") else super()._get_help_string(action)


def parse_args():
    p = argparse.ArgumentParser(
        description="moe-run (our CPU backend) beside transformers and llama.cpp on one random "
                    "Mixtral checkpoint; prints a table (see the top of this file for the details)",
        formatter_class=HelpFormatter)
    p.add_argument("--cache", default="/tmp/moe-peer-cache",
                   help="folder for the venv, llama.cpp, the model and the run's files")
    p.add_argument("--system-python", action="store_true",
                   help="use this python and its packages instead of a venv in --cache")
    p.add_argument("--moe-run", default=os.path.join(REPO, "build", "bin", "moe-run"),
                   help="the moe-run binary")
    p.add_argument("--mpirun", default="mpirun --allow-run-as-root --oversubscribe",
                   help="MPI launcher for the 2-rank runs (split on spaces)")
    p.add_argument("--llama-cpp-python", default=LLAMA_CPP_PYTHON,
                   help="llama-cpp-python release whose vendored llama.cpp is built")
    p.add_argument("--build-jobs", type=int, default=os.cpu_count() or 1,
                   help="parallel jobs of the llama.cpp build")
    p.add_argument("--setup-only", action="store_true",
                   help="fill the cache (venv, llama.cpp, model, GGUF files) and stop, measuring nothing")
    p.add_argument("--json", default="", help="also write the results here as JSON (default: not written)")
    g = p.add_argument_group("model (a random MixtralForCausalLM; default: 791M parameters)")
    g.add_argument("--hidden", type=int, default=1024, help="hidden_size")
    g.add_argument("--intermediate", type=int, default=3584, help="intermediate_size (per expert)")
    g.add_argument("--layers", type=int, default=8, help="num_hidden_layers")
    g.add_argument("--heads", type=int, default=16, help="num_attention_heads")
    g.add_argument("--kv-heads", type=int, default=4, help="num_key_value_heads")
    g.add_argument("--experts", type=int, default=8, help="num_local_experts")
    g.add_argument("--top-k", type=int, default=2, help="num_experts_per_tok")
    g.add_argument("--vocab", type=int, default=32000, help="vocab_size (tokenizer: min(this, 32000) pieces)")
    g.add_argument("--max-pos", type=int, default=4096, help="max_position_embeddings")
    g.add_argument("--seed", type=int, default=0, help="seed of the weights, tokenizer and prompts")
    g = p.add_argument_group("workloads")
    g.add_argument("--prefill-tokens", type=int, default=512, help="prompt length of the prefill workload")
    g.add_argument("--short-prompt", type=int, default=8,
                   help="prompt length of the decode and batch workloads")
    g.add_argument("--decode-tokens", type=int, default=128, help="new tokens of the 1-sequence decode")
    g.add_argument("--batch-seqs", type=int, default=16, help="sequences of the batch workload")
    g.add_argument("--batch-tokens", type=int, default=64, help="new tokens per sequence of the batch workload")
    g.add_argument("--repeats", type=int, default=3, help="runs per figure; the median is shown")
    g.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="threads of each program (moe-run: divided among its ranks)")
    a = p.parse_args()
    for k in ("hidden", "intermediate", "layers", "heads", "kv_heads", "experts", "top_k",
              "max_pos", "prefill_tokens", "short_prompt", "batch_seqs", "repeats", "threads",
              "build_jobs"):
        if getattr(a, k) < 1:
            p.error(f"--{k.replace('_', '-')} must be >= 1, got {getattr(a, k)}")
    if a.decode_tokens < 2 or a.batch_tokens < 1:
        p.error("--decode-tokens must be >= 2 (decode speed is of the tokens after the first) "
                "and --batch-tokens >= 1")
    if a.vocab < 300:
        p.error(f"--vocab must be >= 300 (the tokenizer has 259 byte and special pieces), got {a.vocab}")
    if a.hidden % a.heads or a.heads % a.kv_heads or a.top_k > a.experts:
        p.error("--hidden must be a multiple of --heads, --heads of --kv-heads, and --top-k <= --experts")
    if a.prefill_tokens > a.max_pos or a.short_prompt + max(a.decode_tokens, a.batch_tokens) > a.max_pos:
        p.error("the workloads' sequences must fit in --max-pos positions")
    a.cache = os.path.abspath(a.cache)
    return a


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "_worker":
        {"make_model": worker_make_model, "transformers": worker_transformers}[sys.argv[2]](sys.argv[3])
        return
    a = parse_args()
    for tool, why in (("/usr/bin/time", "peak memory (Debian: apt-get install time)"),
                      ("cmake", "the llama.cpp build (apt-get install cmake g++)"),
                      (shlex.split(a.mpirun)[0], "the 2-rank runs (apt-get install openmpi-bin)")):
        if not shutil.which(tool):
            sys.exit(f"{ME}: {tool} not found; it is needed for {why}")
    if not a.setup_only and not os.access(a.moe_run, os.X_OK):
        sys.exit(f"{ME}: --moe-run {a.moe_run} is not an executable (build the project, or point "
                 "--moe-run at build/bin/moe-run)")
    os.makedirs(a.cache, exist_ok=True)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    try:
        py = setup_python(a)
        llama_src, bins = setup_llama(a)
        mdir, ggufs = setup_model(a, py, llama_src)
        if a.setup_only:
            log(f"set-up done in {a.cache}")
            return
        rundir = os.path.join(a.cache, "runs")
        shutil.rmtree(rundir, ignore_errors=True)
        os.makedirs(rundir)
    except StepError as e:
        sys.exit(f"{ME}: {e}")  # without the set-up nothing can be measured
    wl = Workloads(a)
    results = {}
    for ranks, dtype in ((1, "f32"), (2, "f32"), (1, "bf16"), (2, "bf16")):
        log(f"moe-run: {ranks} rank(s), {dtype}")
        results[f"moe{ranks}_{dtype}"] = bench_moe(a, mdir, wl, ranks, dtype, rundir)
    # A failed peer fills its column with FAIL; the others are still measured and shown.
    peers = [("hf_f32", "transformers: fp32", lambda: bench_transformers(a, py, mdir, wl, rundir))]
    peers += [(f"llama_{t}", f"llama.cpp: {t}",
               lambda t=t: bench_llama(a, bins, ggufs[t], t, wl, rundir)) for t in ("f32", "f16")]
    for key, what, fn in peers:
        log(what)
        try:
            results[key] = fn()
        except StepError as e:
            results[key] = {"prefill": [], "decode": [], "batch": [], "rss_kib": 0,
                            "failed": {"prefill": str(e), "decode": str(e), "batch": str(e)}}
    failures = sorted({m for r in results.values() for m in r.get("failed", {}).values()})
    for k in ("moe1_f32", "moe2_f32"):
        results[k]["greedy_vs_hf"] = compare_tokens(results[k], results["hf_f32"])
    versions = results["hf_f32"].get("versions", {})
    for k, r in results.items():
        for w in ("prefill", "decode", "batch"):
            r[w + "_runs"] = r[w]
            r[w] = statistics.median(r[w]) if r[w] else None
        r["rss_mib"] = r.pop("rss_kib") / 1024
        r.pop("tokens", None)
        r.pop("versions", None)
    with open(os.path.join(mdir, "config.json")) as f:
        cfg = json.load(f)
    h, i, L, E, V = a.hidden, a.intermediate, a.layers, a.experts, a.vocab
    kv = h // a.heads * a.kv_heads
    params = 2 * V * h + L * (h * (h + 2 * kv) + h * h + E * 3 * h * i + h * E + 2 * h) + h
    report = {
        "date": date, "repeats": a.repeats, "threads": a.threads,
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "load_at_start": load},
        "model": {"name": shape_name(a), "parameters_m": params / 1e6, "config": cfg},
        "workloads": {"prefill_tokens": a.prefill_tokens, "short_prompt": a.short_prompt,
                      "decode_tokens": a.decode_tokens, "batch_seqs": a.batch_seqs,
                      "batch_tokens": a.batch_tokens},
        "versions": dict(versions, **{"llama-cpp-python": a.llama_cpp_python}),
        "moe_run": os.path.abspath(a.moe_run),
        "results": results,
    }
    print()
    print(render(report))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {a.json}")
    if failures:
        print(f"\n{ME}: {len(failures)} measurement step(s) failed:", file=sys.stderr)
        for m in failures:  # the step, its command and its log; the log's tail is in the JSON
            print("- " + "\n  ".join(m.splitlines()[:2]), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
