#!/usr/bin/env python3
"""Quantization-aware training of bitgpu's built-in model, a tiny BitNet b1.58.

The model has exactly the BitNet b1.58 2B4T architecture (the README's Numerics section) at a small size:
RMSNorm before attention and feed-forward, attn_sub_norm before o_proj and ffn_sub_norm before
down_proj, a ReLU² gated feed-forward, NEOX ("rotate-half") RoPE, grouped-query attention, an
embedding tied to the output, no biases. Every projection is a BitLinear trained with the b1.58
recipe: the forward pass sees absmean-ternary weights (scale = mean|W|, trit = clamp(round(W /
scale), -1, 1)) and per-token absmax int8 activations (s = 127 / max|x|, q = clamp(round(x s),
-128, 127)), and the backward pass goes straight through both roundings to the latent float
weights (straight-through estimator).

The corpus is the English prose of the Python 3.11 documentation as Debian's python3.11-doc
package installs it (reStructuredText sources under /usr/share/doc/python3.11/html/_sources;
Python Software Foundation License). The script extracts the prose paragraphs, holds out the
last 5% as validation text, trains a byte-level BPE vocabulary on the rest (LLaMA-3
pre-tokenizer, GPT-2 byte map, a few hundred merges, three special tokens), trains the model,
and writes the checkpoint the way Hugging Face ships microsoft/bitnet-b1.58-2B-4T-bf16:

    OUT/model.safetensors        bf16 latent weights under the transformers BitNet names
    OUT/config.json              BitNetForCausalLM, hidden_act relu2
    OUT/tokenizer.json           HF tokenizers BPE with the LLaMA-3 Split pre-tokenizer
    OUT/tokenizer_config.json    BOS/EOS and the 2B4T chat template
    OUT/train.txt, OUT/val.txt   the training and validation text
    OUT/val_ids.npy              the validation text's token ids (int32)
    OUT/train_log.txt            one line per logged step
    OUT/metrics.json             sizes, timings and the validation perplexity

The validation perplexity follows bitgpu's `perplexity` contract (the README's Commands section): the
validation text is tokenized without BOS; window w holds tokens [w*N, w*N+N] and is evaluated
on its own (an empty cache); its NLL is the mean over its N predictions; ppl = exp(mean of the
window NLLs). It is computed with the weights rounded to bf16 (what the checkpoint holds) and
with K and V rounded to f16 (bitgpu's KV cache), so `bitgpu perplexity` on the converted model
measures the same thing.

Requirements: Debian's python3-torch, python3-numpy and python3-regex, python3.11-doc for the
corpus, and libopenblas0-pthread (Debian's torch calls the system BLAS, and the reference BLAS
is several times slower). Run by hand (never in CI):

    apt-get install -y python3-torch python3-numpy python3-regex python3.11-doc libopenblas0-pthread
    /usr/bin/python3 scripts/train_qat.py --out /tmp/bitgpu-tiny

With --eval DIR --eval-text FILE it trains nothing and prints, as one JSON line, the perplexity
of FILE under the checkpoint DIR in the same window semantics (--eval-window, --eval-chunks).

Training stops after --steps optimizer steps or --minutes of training, whichever comes first;
the learning-rate schedule follows whichever is further along, so a run on a slower or busier
machine ends on the same schedule with fewer steps (the log records how many).
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import argparse
import glob
import json
import math
import random
import struct
import sys
import time
from collections import Counter, defaultdict

import numpy as np
import regex
import torch
import torch.nn as nn
import torch.nn.functional as F

CORPUS_DIR = "/usr/share/doc/python3.11/html/_sources"

# The LLaMA-3 pre-tokenizer (model.PatternLlama3 in bitgpu; tokenizer.ggml.pre = llama-bpe).
PAT_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
              r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

BOS_TEXT, EOS_TEXT, EOT_TEXT = "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"

# The chat template of microsoft/bitnet-b1.58-2B-4T's tokenizer_config.json.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first %}{{ bos_token }}{% endif %}"
    "{% set content = message['role'] | capitalize + ': '+ message['content'] | trim + '<|eot_id|>' %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}")


# ---------------------------------------------------------------------------------------------
# Corpus


def clean_inline(s):
    """Removes reStructuredText inline markup, keeping the text a reader sees."""
    s = regex.sub(r":[\w:.-]+:`([^`]*)`", lambda m: role_text(m.group(1)), s)
    s = regex.sub(r"`([^`<]*?)\s*<[^>]*>`__?", r"\1", s)
    s = regex.sub(r"``([^`]*)``", r"\1", s)
    s = regex.sub(r"`([^`]*)`_{0,2}", r"\1", s)
    s = regex.sub(r"\*\*(\S[^*]*?)\*\*", r"\1", s)
    s = regex.sub(r"(?<![\w*])\*(\S[^*]*?)\*(?![\w*])", r"\1", s)
    s = regex.sub(r"\|(\w[\w ]*)\|", r"\1", s)
    s = regex.sub(r"\s*::$", ":", s)
    s = regex.sub(r"\\(.)", r"\1", s)
    return regex.sub(r"\s+", " ", s).strip()


def role_text(t):
    """The visible text of a role such as :func:`~os.path.join` or :ref:`text <target>`."""
    t = t.lstrip("!")
    m = regex.match(r"(.*?)\s*<[^>]*>$", t)
    if m and m.group(1):
        return m.group(1)
    if t.startswith("~"):
        return t[1:].split(".")[-1]
    return t


def is_prose(p):
    """Whether a cleaned paragraph reads as English prose rather than code, a table or a title."""
    if len(p) < 40 or len(p.split()) < 7:
        return False
    if p[-1] not in ".:?!)":
        return False
    letters = sum(ch.isalpha() or ch == " " for ch in p)
    return letters >= 0.85 * len(p)


def load_corpus(root):
    """The prose paragraphs of every .rst.txt under root, files in sorted path order."""
    files = sorted(glob.glob(os.path.join(root, "**", "*.rst.txt"), recursive=True))
    if not files:
        sys.exit(f"{root}: no .rst.txt files (apt-get install python3.11-doc)")
    paras = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        block, literal_indent = [], None
        for line in lines + [""]:
            if line.strip():
                block.append(line)
                continue
            if not block:
                continue
            indent = len(block[0]) - len(block[0].lstrip())
            first = block[0].strip()
            raw = " ".join(b.strip() for b in block)
            block = []
            if literal_indent is not None:
                if indent > literal_indent:
                    continue  # inside a literal (code) block
                literal_indent = None
            if first.startswith(".."):
                if regex.match(r"\.\.\s+(code-block|sourcecode|doctest|testcode|productionlist|highlight)", first):
                    literal_indent = indent
                continue
            if raw.endswith("::"):
                literal_indent = indent
            if first.startswith((">>>", "+", "|", "=", "-", "*", "#", ":")):
                continue
            p = clean_inline(raw)
            if is_prose(p):
                paras.append(p)
    return paras


# ---------------------------------------------------------------------------------------------
# Byte-level BPE


def bytes_to_unicode():
    """GPT-2's byte → printable character map (openai/gpt-2 encoder.py)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


BYTE_MAP = bytes_to_unicode()
PRE = regex.compile(PAT_LLAMA3)


def pretokens(text):
    """The pre-tokens of text, each as its byte-mapped string."""
    return ["".join(BYTE_MAP[b] for b in m.encode("utf-8")) for m in PRE.findall(text)]


def train_bpe(text, n_merges, log):
    """Learns n_merges merges over the pre-token counts of text; ties go to the pair that sorts first."""
    counts = Counter(pretokens(text))
    words = [list(w) for w in counts]
    freq = [counts[w] for w in counts]
    pairs = Counter()
    where = defaultdict(set)
    for i, w in enumerate(words):
        for a, b in zip(w, w[1:]):
            pairs[a, b] += freq[i]
            where[a, b].add(i)
    merges = []
    for step in range(n_merges):
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merges.append(best)
        a, b = best
        for i in list(where[best]):
            w = words[i]
            for x, y in zip(w, w[1:]):
                pairs[x, y] -= freq[i]
                if pairs[x, y] <= 0:
                    del pairs[x, y]
            out, j = [], 0
            while j < len(w):
                if j + 1 < len(w) and w[j] == a and w[j + 1] == b:
                    out.append(a + b)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            words[i] = out
            for x, y in zip(out, out[1:]):
                pairs[x, y] += freq[i]
                where[x, y].add(i)
        del where[best]
        if step % 100 == 0:
            log(f"bpe merge {step}: {a!r} + {b!r} ({len(pairs)} pairs left)")
    return merges


class Tokenizer:
    """Encodes like HF tokenizers' BPE with ignore_merges (bitgpu's llama-bpe tokenizer)."""

    def __init__(self, merges, vocab=None):
        self.merges = merges
        self.rank = {m: i for i, m in enumerate(merges)}
        self.specials = [BOS_TEXT, EOS_TEXT, EOT_TEXT]
        if vocab is None:
            vocab = {}
            for b in range(256):
                vocab[BYTE_MAP[b]] = b
            for a, b in merges:
                vocab.setdefault(a + b, len(vocab))
            for s in self.specials:
                vocab[s] = len(vocab)
        self.vocab = vocab
        self.bos, self.eos, self.eot = (self.vocab[s] for s in self.specials)
        self.cache = {}
        self.inv = {i: t for t, i in self.vocab.items()}
        self.byte_inv = {c: b for b, c in BYTE_MAP.items()}

    @staticmethod
    def from_json(tj):
        """The tokenizer a tokenizer.json written by tokenizer_json describes."""
        vocab = dict(tj["model"]["vocab"])
        for a in tj["added_tokens"]:
            vocab[a["content"]] = a["id"]
        return Tokenizer([tuple(m) for m in tj["model"]["merges"]], vocab)

    def bpe(self, word):
        if word in self.vocab:  # ignore_merges: a pre-token in the vocabulary is one token
            return [self.vocab[word]]
        parts = list(word)
        while len(parts) > 1:
            best, at = None, -1
            for i in range(len(parts) - 1):
                r = self.rank.get((parts[i], parts[i + 1]))
                if r is not None and (best is None or r < best):
                    best, at = r, i
            if best is None:
                break
            a, b = self.merges[best]
            out, j = [], 0
            while j < len(parts):
                if j + 1 < len(parts) and parts[j] == a and parts[j + 1] == b:
                    out.append(a + b)
                    j += 2
                else:
                    out.append(parts[j])
                    j += 1
            parts = out
        return [self.vocab[p] for p in parts]

    def encode(self, text):
        ids = []
        for w in pretokens(text):
            t = self.cache.get(w)
            if t is None:
                t = self.cache[w] = self.bpe(w)
            ids.extend(t)
        return ids

    def decode(self, ids):
        out = bytearray()
        for i in ids:
            t = self.inv[i]
            if t in self.specials:
                out += t.encode()
            else:
                out += bytes(self.byte_inv[c] for c in t)
        return out.decode("utf-8", errors="replace")

    def tokenizer_json(self):
        added = [{"id": self.vocab[s], "content": s, "single_word": False, "lstrip": False,
                  "rstrip": False, "normalized": False, "special": True} for s in self.specials]
        vocab = {t: i for t, i in self.vocab.items() if t not in self.specials}
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": added,
            "normalizer": None,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": PAT_LLAMA3}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
            "post_processor": {"type": "Sequence", "processors": [
                {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
                {"type": "TemplateProcessing",
                 "single": [{"SpecialToken": {"id": BOS_TEXT, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                 "pair": [{"SpecialToken": {"id": BOS_TEXT, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                          {"SpecialToken": {"id": BOS_TEXT, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                 "special_tokens": {BOS_TEXT: {"id": BOS_TEXT, "ids": [self.bos], "tokens": [BOS_TEXT]}}}]},
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": True, "vocab": vocab, "merges": [[a, b] for a, b in self.merges]},
        }


# ---------------------------------------------------------------------------------------------
# Model


class TernarySTE(torch.autograd.Function):
    """Absmean ternary weights (b1.58 eq. 1-3): trit * mean|W|; the gradient passes straight through."""

    @staticmethod
    def forward(ctx, w):
        scale = w.abs().mean()
        return (w / scale.clamp(min=1e-5)).round_().clamp_(-1, 1).mul_(scale)

    @staticmethod
    def backward(ctx, g):
        return g


class Int8STE(torch.autograd.Function):
    """Per-token absmax int8 activations, returned dequantized; the gradient passes straight through."""

    @staticmethod
    def forward(ctx, x):
        s = 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp_(min=1e-5)
        return (x * s).round_().clamp_(-128, 127).div_(s)

    @staticmethod
    def backward(ctx, g):
        return g


class BitLinear(nn.Linear):
    """A bias-free linear layer that computes with ternary weights. Its input must already be
    quantized to the int8 grid (Int8STE), which the caller does once for the projections that
    share an input (q/k/v, gate/up)."""

    def __init__(self, cols, rows):
        super().__init__(cols, rows, bias=False)

    def forward(self, xq):
        return F.linear(xq, TernarySTE.apply(self.weight))


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(ctx, head_dim, base):
    inv = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    ang = torch.arange(ctx, dtype=torch.float64)[:, None] * inv[None, :]
    return torch.cos(ang).float(), torch.sin(ang).float()


def rope_neox(x, cos, sin):
    """Rotates the pairs (x[i], x[i + d/2]) of every head: x is [B, H, T, d]."""
    h = x.shape[-1] // 2
    a, b = x[..., :h], x[..., h:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, self.nh, self.nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
        self.hd = d // self.nh
        self.q_proj = BitLinear(d, self.nh * self.hd)
        self.k_proj = BitLinear(d, self.nkv * self.hd)
        self.v_proj = BitLinear(d, self.nkv * self.hd)
        self.o_proj = BitLinear(self.nh * self.hd, d)
        self.attn_sub_norm = RMSNorm(self.nh * self.hd, cfg["rms_norm_eps"])
        self.f16_kv = False

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        xq = Int8STE.apply(x)
        q = self.q_proj(xq).view(B, T, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(xq).view(B, T, self.nkv, self.hd).transpose(1, 2)
        v = self.v_proj(xq).view(B, T, self.nkv, self.hd).transpose(1, 2)
        q, k = rope_neox(q, cos[:T], sin[:T]), rope_neox(k, cos[:T], sin[:T])
        if self.f16_kv:  # bitgpu keeps K and V in an f16 cache
            k, v = k.half().float(), v.half().float()
        # Grouped-query attention: query head h reads KV head h // g, so the g query heads of a
        # KV head are stacked along the time axis.
        g = self.nh // self.nkv
        q = q.reshape(B, self.nkv, g * T, self.hd)
        att = (q @ k.transpose(-1, -2)).mul_(1.0 / math.sqrt(self.hd))
        att = att.view(B, self.nkv, g, T, T).add_(mask[:T, :T])
        y = torch.softmax(att, dim=-1).view(B, self.nkv, g * T, T) @ v
        y = y.view(B, self.nh, T, self.hd).transpose(1, 2).reshape(B, T, self.nh * self.hd)
        return self.o_proj(Int8STE.apply(self.attn_sub_norm(y)))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, f = cfg["hidden_size"], cfg["intermediate_size"]
        self.gate_proj = BitLinear(d, f)
        self.up_proj = BitLinear(d, f)
        self.down_proj = BitLinear(f, d)
        self.ffn_sub_norm = RMSNorm(f, cfg["rms_norm_eps"])

    def forward(self, x):
        xq = Int8STE.apply(x)
        h = F.relu(self.gate_proj(xq)).square() * self.up_proj(xq)
        return self.down_proj(Int8STE.apply(self.ffn_sub_norm(h)))


class Layer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Inner(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg["num_hidden_layers"]))
        self.norm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])


class BitNet(nn.Module):
    """BitNetForCausalLM with a tied embedding; parameter names match transformers'."""

    def __init__(self, cfg):
        super().__init__()
        self.model = Inner(cfg)
        hd = cfg["hidden_size"] // cfg["num_attention_heads"]
        cos, sin = rope_tables(cfg["max_position_embeddings"], hd, cfg["rope_theta"])
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        ctx = cfg["max_position_embeddings"]
        mask = torch.full((ctx, ctx), float("-inf")).triu(1)
        self.register_buffer("mask", mask, persistent=False)
        for n, p in self.named_parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def set_f16_kv(self, on):
        for layer in self.model.layers:
            layer.self_attn.f16_kv = on

    def forward(self, ids):
        x = self.model.embed_tokens(ids)
        for layer in self.model.layers:
            x = layer(x, self.cos, self.sin, self.mask)
        return self.model.norm(x) @ self.model.embed_tokens.weight.t()


# ---------------------------------------------------------------------------------------------
# Evaluation and saving


@torch.no_grad()
def perplexity(model, tokens, n, batch=16):
    """bitgpu's perplexity: windows [w*n, w*n+n], each from an empty cache, mean of window NLLs."""
    model.eval()
    k = (len(tokens) - 1) // n
    nlls = []
    for w0 in range(0, k, batch):
        ws = range(w0, min(k, w0 + batch))
        x = torch.tensor(np.stack([tokens[w * n:w * n + n + 1] for w in ws]).astype(np.int64))
        logits = model(x[:, :-1]).double()
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="none")
        nlls.extend(nll.view(len(ws), n).mean(1).tolist())
    model.train()
    return math.exp(sum(nlls) / len(nlls)), k


def save_safetensors(path, tensors):
    """Writes name → tensor as bf16 safetensors (sorted names, 8-byte aligned header)."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to(torch.bfloat16).contiguous()
        raw = t.view(torch.int16).numpy().astype("<i2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="checkpoint directory to write")
    ap.add_argument("--corpus", default=CORPUS_DIR)
    ap.add_argument("--merges", type=int, default=509, help="BPE merges (vocabulary = 256 + merges + 3)")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--ffn", type=int, default=768)
    ap.add_argument("--ctx", type=int, default=256, help="context length, training sequence length and perplexity window")
    ap.add_argument("--rope-theta", type=float, default=500000.0)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=100000, help="most optimizer steps")
    ap.add_argument("--lr", type=float, default=2.5e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--bos-fraction", type=float, default=0.25,
                    help="share of training sequences that start with BOS at a paragraph start")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--minutes", type=float, default=32,
                    help="training time budget; the learning-rate schedule runs on the larger of the step "
                         "fraction and the time fraction, and training ends when either reaches 1 (0: steps only)"),
    ap.add_argument("--eval", metavar="DIR", help="do not train: load the checkpoint DIR and print the perplexity "
                    "of --eval-text in windows of --eval-window tokens (default: the context length)")
    ap.add_argument("--eval-text", metavar="FILE")
    ap.add_argument("--eval-window", type=int, default=0)
    ap.add_argument("--eval-chunks", type=int, default=0, help="evaluate only the first K windows (0: all)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    if args.eval:
        evaluate(args)
        return
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    rng = np.random.default_rng(args.seed)
    os.makedirs(args.out, exist_ok=True)
    log_path = os.path.join(args.out, "train_log.txt")
    logf = open(log_path, "w", encoding="utf-8")
    t_start = time.time()

    def log(msg):
        line = f"[{time.time() - t_start:7.1f}s] {msg}"
        print(line, flush=True)
        logf.write(line + "\n")
        logf.flush()

    log(f"args: {vars(args)}")
    log(f"torch {torch.__version__}, numpy {np.__version__}, threads {torch.get_num_threads()}")

    if not args.out:
        ap.error("--out is required to train")
    # Corpus: prose paragraphs, the last 5% (by characters, at a paragraph boundary) held out.
    paras = load_corpus(args.corpus)
    total = sum(len(p) + 2 for p in paras)
    cut, acc = len(paras), 0
    while acc < 0.05 * total:
        cut -= 1
        acc += len(paras[cut]) + 2
    train_text = "\n\n".join(paras[:cut]) + "\n\n"
    val_text = "\n\n".join(paras[cut:]) + "\n"
    for name, text in (("train.txt", train_text), ("val.txt", val_text)):
        with open(os.path.join(args.out, name), "w", encoding="utf-8") as f:
            f.write(text)
    log(f"corpus: {len(paras)} paragraphs, train {len(train_text)} chars, val {len(val_text)} chars "
        f"(from paragraph {cut})")

    # Tokenizer.
    t0 = time.time()
    merges = train_bpe(train_text, args.merges, log)
    tok = Tokenizer(merges)
    log(f"bpe: {len(merges)} merges, vocabulary {len(tok.vocab)} in {time.time() - t0:.1f}s")
    train_ids = np.array(tok.encode(train_text), dtype=np.int32)
    val_ids = np.array(tok.encode(val_text), dtype=np.int32)
    assert tok.decode(val_ids.tolist()) == val_text, "tokenizer does not round-trip the validation text"
    np.save(os.path.join(args.out, "val_ids.npy"), val_ids)
    log(f"tokens: train {len(train_ids)} ({len(train_text) / len(train_ids):.2f} chars/token), val {len(val_ids)}")
    # Paragraph starts: the token after each "\n\n" pre-token.
    nl = np.array([tok.vocab.get(BYTE_MAP[10] * 2, -1)], dtype=np.int32)
    para_starts = np.nonzero(train_ids[:-1] == nl[0])[0] + 1

    cfg = {
        "architectures": ["BitNetForCausalLM"],
        "model_type": "bitnet",
        "vocab_size": len(tok.vocab),
        "hidden_size": args.dim,
        "intermediate_size": args.ffn,
        "num_hidden_layers": args.layers,
        "num_attention_heads": args.heads,
        "num_key_value_heads": args.kv_heads,
        "hidden_act": "relu2",
        "max_position_embeddings": args.ctx,
        "rms_norm_eps": 1e-5,
        "rope_theta": args.rope_theta,
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "tie_word_embeddings": True,
        "bos_token_id": tok.bos,
        "eos_token_id": tok.eos,
        "torch_dtype": "bfloat16",
        "use_cache": True,
    }
    model = BitNet(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params} parameters, config {json.dumps(cfg)}")

    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))

    def progress(step):
        p = step / args.steps
        if args.minutes:
            p = max(p, (time.time() - t_train) / (args.minutes * 60))
        return min(1.0, p)

    def lr_at(step, p):
        # Linear warm-up, then a cosine from lr down to lr/10 over the training progress p.
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))

    T = args.ctx

    def batch():
        xs = np.empty((args.batch, T + 1), dtype=np.int64)
        for i in range(args.batch):
            if rng.random() < args.bos_fraction:
                s = para_starts[rng.integers(len(para_starts))]
                s = min(s, len(train_ids) - T)
                xs[i, 0] = tok.bos
                xs[i, 1:] = train_ids[s:s + T]
            else:
                s = rng.integers(len(train_ids) - T - 1)
                xs[i] = train_ids[s:s + T + 1]
        return torch.from_numpy(xs)

    model.train()
    t_train = time.time()
    steps_done = 0
    for step in range(args.steps):
        p = progress(step)
        if p >= 1:
            log(f"stopping after {steps_done} steps: the budget of {args.steps} steps or {args.minutes} minutes is spent")
            break
        lr = lr_at(step, p)
        for g in opt.param_groups:
            g["lr"] = lr
        x = batch()
        logits = model(x[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        steps_done = step + 1
        if step % 25 == 0 or step == args.steps - 1:
            el = time.time() - t_train
            log(f"step {step} loss {loss.item():.4f} lr {lr:.2e} "
                f"{(step + 1) * args.batch * T / el:.0f} tok/s")
        if args.eval_every and step > 0 and step % args.eval_every == 0:
            ppl, _ = perplexity(model, val_ids[:16 * T + 1], T)
            log(f"step {step} val ppl (first 16 windows) {ppl:.3f}")
    train_seconds = time.time() - t_train

    # What the checkpoint holds: latent weights rounded to bf16; K/V through f16 like bitgpu.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    model.set_f16_kv(True)
    ppl, windows = perplexity(model, val_ids, T)
    log(f"final val ppl {ppl:.4f} over {windows} windows of {T} predictions "
        f"(bf16 weights, f16 K/V, {train_seconds / 60:.1f} min of training)")

    # Greedy samples from BOS + prompt, for comparison with bitgpu's greedy output.
    samples = {}
    for prompt in ["The Python interpreter", "A list is", "To open a file"]:
        ids = [tok.bos] + tok.encode(prompt)
        with torch.no_grad():
            for _ in range(48):
                nxt = int(model(torch.tensor([ids[-T:]]))[0, -1].argmax())
                ids.append(nxt)
        samples[prompt] = tok.decode(ids[1:])
        log(f"sample: {samples[prompt]!r}")

    state = {k: v for k, v in model.state_dict().items()}
    save_safetensors(os.path.join(args.out, "model.safetensors"), state)
    write_json(os.path.join(args.out, "config.json"), cfg)
    write_json(os.path.join(args.out, "tokenizer.json"), tok.tokenizer_json())
    write_json(os.path.join(args.out, "tokenizer_config.json"), {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": BOS_TEXT,
        "eos_token": EOS_TEXT,
        "clean_up_tokenization_spaces": True,
        "model_max_length": args.ctx,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": CHAT_TEMPLATE,
    })
    write_json(os.path.join(args.out, "metrics.json"), {
        "corpus": "python3.11-doc (Debian), /usr/share/doc/python3.11/html/_sources, prose paragraphs",
        "corpus_license": "Python Software Foundation License Version 2",
        "paragraphs": len(paras),
        "train_chars": len(train_text),
        "val_chars": len(val_text),
        "train_tokens": int(len(train_ids)),
        "val_tokens": int(len(val_ids)),
        "vocab_size": len(tok.vocab),
        "parameters": n_params,
        "steps": steps_done,
        "batch": args.batch,
        "ctx": T,
        "tokens_seen": steps_done * args.batch * T,
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.time() - t_start, 1),
        "val_ppl": ppl,
        "val_ppl_windows": windows,
        "val_ppl_window_tokens": T,
        "samples_greedy": samples,
    })
    log(f"wrote {args.out}")


def load_safetensors(path):
    """Reads a safetensors file of BF16/F32 tensors into float32 torch tensors."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        a, b = h["data_offsets"]
        raw = np.frombuffer(data[a:b], dtype="<u2" if h["dtype"] == "BF16" else "<f4")
        if h["dtype"] == "BF16":
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        out[name] = torch.from_numpy(raw.copy()).view(*h["shape"])
    return out


def evaluate(args):
    """Perplexity of a text under a saved checkpoint, in bitgpu's window semantics."""
    with open(os.path.join(args.eval, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(args.eval, "tokenizer.json"), encoding="utf-8") as f:
        tok = Tokenizer.from_json(json.load(f))
    model = BitNet(cfg)
    model.load_state_dict(load_safetensors(os.path.join(args.eval, "model.safetensors")), strict=True)
    model.set_f16_kv(True)
    with open(args.eval_text, encoding="utf-8") as f:
        ids = np.array(tok.encode(f.read()), dtype=np.int32)
    n = args.eval_window or cfg["max_position_embeddings"]
    if args.eval_chunks:
        ids = ids[:args.eval_chunks * n + 1]
    t0 = time.time()
    ppl, windows = perplexity(model, ids, n)
    print(json.dumps({"text": args.eval_text, "tokens": int(len(ids)), "window": n, "windows": windows,
                      "ppl": ppl, "seconds": round(time.time() - t0, 1)}))


if __name__ == "__main__":
    main()
