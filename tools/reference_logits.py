#!/usr/bin/env python3
"""Writes tests/fixtures/smollm2_logits.txt: the correctness anchor of our CPU forward pass. PyTorch
`transformers` loads the real SmolLM2 GGUF (weights dequantized to fp32, as our loader does), runs
three fixed prompts and greedy-decodes 64 tokens each (plain argmax, EOS ignored, fp32 KV cache);
engine/llama_model_test.c replays the same token ids through our engine and compares.

    pip install torch transformers gguf numpy accelerate
    python3 tools/reference_logits.py [model.gguf] > tests/fixtures/smollm2_logits.txt
    (default model: the path printed by tools/fetch-model.sh)

Prompts contain no digits: transformers' GGUF tokenizer for the "smollm" pre-tokenizer may split
digits differently from the real one, and the fixture stores token ids so the C test needs no
tokenizer anyway.

Format: one record per line, fields separated by single spaces; lines starting with '#' are
comments (the header carries the library versions). P = prompt index (0-based), S = step.
    prompt P N id_0 ... id_{N-1}          the prompt's token ids
    greedy P N id_0 ... id_{N-1}          HF's greedy tokens; N = 64
    margin P N m_0 ... m_{N-1}            top-1 minus top-2 logit at every decode step
    stats P S mean max                    full-vocab logit mean and max at step S
    top P S K id:logit ... (K pairs)      the K = 40 largest logits at step S, descending
    rand P S K id:logit ... (K pairs)     the logits of K = 40 fixed, seeded random token ids
Step S is the forward whose last-position logits choose greedy token S: step 0 is the prefill of
the whole prompt, step S > 0 feeds greedy token S-1. Recorded steps: 0, 1, 31, 63.
"""
import os
import subprocess
import sys
from importlib.metadata import version

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

N_GEN = 64
RECORD_STEPS = (0, 1, 31, 63)
N_TOP = 40
N_RAND = 40
RAND_SEED = 20240611

PROMPTS = [
    # Jane Austen, Emma, chapter I (first sentence, line breaks joined).
    "Emma Woodhouse, handsome, clever, and rich, with a comfortable home and happy disposition, "
    "seemed to unite some of the best blessings of existence; and had lived nearly twenty-one "
    "years in the world with very little to distress or vex her.",
    # Brown corpus, first sentence (its tokenization spacing kept).
    "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary "
    "election produced \" no evidence \" that any irregularities took place.",
    # ChatML, as SmolLM2-Instruct's chat template renders one user turn.
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
]


def model_path():
    if len(sys.argv) > 1:
        return sys.argv[1]
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run([os.path.join(here, "fetch-model.sh")], check=True,
                         capture_output=True, text=True)
    return out.stdout.strip()


def pairs(ids, logits):
    return " ".join(f"{int(i)}:{float(logits[i]):.7g}" for i in ids)


def main():
    path = model_path()
    folder, name = os.path.split(os.path.abspath(path))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model.eval()
    vocab = model.config.vocab_size
    rand_ids = np.random.default_rng(RAND_SEED).choice(vocab, size=N_RAND, replace=False)
    for special in ("<|im_start|>", "<|im_end|>"):
        assert tok.convert_tokens_to_ids(special) in (1, 2), special

    out = sys.stdout
    out.write(f"# decoserve reference logits: {name} via transformers (fp32, greedy, KV cache)\n")
    out.write(f"# torch {torch.__version__} transformers {transformers.__version__} "
              f"gguf {version('gguf')} numpy {np.__version__}\n")
    out.write("# written by tools/reference_logits.py; format in its docstring\n")

    torch.manual_seed(0)
    with torch.no_grad():
        for p, text in enumerate(PROMPTS):
            prompt = tok(text, add_special_tokens=False).input_ids
            cache = DynamicCache()
            feed = torch.tensor([prompt], dtype=torch.long)
            greedy, margins, records = [], [], []
            for step in range(N_GEN):
                logits = model(input_ids=feed, past_key_values=cache, use_cache=True).logits
                row = logits[0, -1].double().numpy()
                order = np.argsort(-row, kind="stable")
                nxt = int(order[0])
                greedy.append(nxt)
                margins.append(row[order[0]] - row[order[1]])
                if step in RECORD_STEPS:
                    records.append(f"stats {p} {step} {row.mean():.7g} {row.max():.7g}")
                    records.append(f"top {p} {step} {N_TOP} {pairs(order[:N_TOP], row)}")
                    records.append(f"rand {p} {step} {N_RAND} {pairs(rand_ids, row)}")
                feed = torch.tensor([[nxt]], dtype=torch.long)
            out.write(f"# prompt {p}: {text!r}\n# greedy {p}: {tok.decode(greedy)!r}\n")
            out.write(f"prompt {p} {len(prompt)} {' '.join(map(str, prompt))}\n")
            out.write(f"greedy {p} {N_GEN} {' '.join(map(str, greedy))}\n")
            out.write(f"margin {p} {N_GEN} {' '.join(f'{m:.5g}' for m in margins)}\n")
            out.write("\n".join(records) + "\n")


if __name__ == "__main__":
    main()
