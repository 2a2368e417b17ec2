"""Makes the SentencePiece tokenizer of the tiny reference checkpoint tiny_a, and the reference
encodings the C++ tokenizer is tested against.

    pip install sentencepiece
    python3 scripts/make_tokenizer.py

Trains a 512-piece BPE model (tiny_a's vocabulary size) on the GPL-3 and Apache-2.0 texts that
Debian ships in /usr/share/common-licenses, with Llama/Mixtral's special ids (unk 0, bos 1,
eos 2) and byte fallback, deterministically (one thread, no sampling). Writes
tests/data/tiny_a/checkpoint/tokenizer.model and tests/data/tiny_a/tokenizer_reference.json.
"""
import json
import os
import pathlib
import tempfile

import sentencepiece as spm

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests/data/tiny_a/checkpoint/tokenizer.model"
REF = ROOT / "tests/data/tiny_a/tokenizer_reference.json"
CORPUS = ["/usr/share/common-licenses/GPL-3", "/usr/share/common-licenses/Apache-2.0"]
SAMPLES = [
    "Hello world",
    "The licenses for most software are designed to take away your freedom.",
    "  leading spaces and trailing  ",
    "numbers 12345 and symbols #@!",
    "Ünïcödé and emoji \U0001F600 fall back to bytes",
    "",
]


def main():
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.txt")
        with open(corpus, "w") as f:
            for path in CORPUS:
                f.write(open(path, encoding="utf-8").read())
        prefix = os.path.join(tmp, "tok")
        spm.SentencePieceTrainer.train(
            input=corpus, model_prefix=prefix, vocab_size=512, model_type="bpe",
            unk_id=0, bos_id=1, eos_id=2, pad_id=-1, byte_fallback=True,
            character_coverage=1.0, num_threads=1, shuffle_input_sentence=False,
            minloglevel=2)
        OUT.write_bytes(pathlib.Path(prefix + ".model").read_bytes())
    sp = spm.SentencePieceProcessor(model_file=str(OUT))
    ref = {
        "sentencepiece": spm.__version__,
        "note": "ids without bos; the runtime prepends bos (1) to text prompts, as Mixtral's "
                "tokenizer does",
        "samples": [{"text": s, "ids": sp.encode(s), "decoded": sp.decode(sp.encode(s))}
                    for s in SAMPLES],
    }
    REF.write_text(json.dumps(ref, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes) and {REF}")


if __name__ == "__main__":
    main()
