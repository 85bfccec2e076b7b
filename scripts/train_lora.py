#!/usr/bin/env python3
"""Trains a LoRA adapter for bitgpu's built-in ternary model on a second text, frozen base.

The base is read straight from the GGUF file bitgpu runs (default assets/bitgpu-tiny.gguf): this
script has its own small GGUF reader (header, metadata, tensor infos, alignment) and decodes the
I2_S projections as bitgpu does (model/ternary.go, EncodeI2S / DecodeI2S: 128-element blocks of
32 bytes, byte j holding elements j, j+32, j+64, j+96 at bit shifts 6, 4, 2, 0, codes 0/1/2 =
-1/0/+1, then the f32 per-tensor scale; the "x86" layout, the one bitgpu writes). So the frozen
base is exactly the trits and scales bitgpu multiplies with, not a re-quantization of latent
weights, and its forward is bitgpu's (the README's Numerics section), in float32:

    a = RMSNorm(x) (x * rsqrt(mean x^2 + eps), then * weight)
    BitLinear(a) = (float(sum t*q) * w) * (1/s),  s = 127 * (1/max(max|a|, 1e-5)),
                   q = clamp(roundEven(a*s), -128, 127), t the trits, w the per-tensor scale
    q, k, v = BitLinear(attn_norm(x)); NEOX RoPE on q and k (angles in float64, rounded to f32);
    K and V rounded to f16 (bitgpu's KV cache); softmax(q.k / 8) v over the causal prefix (GQA);
    h = x + o_proj(attn_sub_norm(attention)); f = ffn_norm(h)
    out = h + down_proj(ffn_sub_norm(relu(gate_proj(f))^2 * up_proj(f)))
    logits = output_norm(x_L) . E^T with E the tied F16 embedding (bitgpu's --lm-head f16), or,
             with --lm-head q8_0 (bitgpu's default), E re-quantized to Q8_0 as bitgpu does and
             output_norm(x_L) quantized per token like a BitLinear input.

The sums of q*t are integers below 2^24, so float32 matrix products compute them exactly; what
differs from bitgpu is only float summation order (and bitgpu's rcp/rsqrt/exp, within an ulp) in
the norms, attention, LoRA products and head. An ulp can move an activation across an int8
rounding boundary, so single windows' NLLs differ by up to ~2e-4; perplexities over 8 or more
windows agreed to within 1e-4 relative in every check made (--bitgpu-check prints both).

LoRA (PEFT semantics, peft's LoraLayer around a Linear): every targeted projection becomes
    y = BitLinear(a) + (alpha / r) * B(A a)
with a the projection's float input (after its RMSNorm or sub-norm, before the int8
quantization), A [r, in] Kaiming-uniform initialised (a = sqrt(5), as torch's Linear does), B
[out, r] zeros, no dropout, no bias. Only A and B train (AdamW); gradients pass through the int8
activation rounding straight (straight-through estimator, as in the base's QAT), through the
frozen ternary weights as the matrix w*T. bitgpu rounds A and B to f16 when it loads an
adapter, so every perplexity this script reports uses f16-rounded A and B, and the adapter is
saved as F16 (--dtype f32 stores the same rounded values as F32).

The text: the SQLite documentation from Debian's sqlite3-doc package (/usr/share/doc/sqlite3/*.html,
the top-level pages, version 3.40.1 in Debian 12; the SQLite source and documentation are in the
public domain, per /usr/share/doc/sqlite3-doc/copyright, so an adapter derived from it can be
shipped under any license). The script takes the text of every <p> element (not <pre>, <script>,
<style>), keeps the ones that read as English prose (train_qat.py's test: at least 40 characters
and 7 words, ending in . : ? ! or ), at least 85% letters and spaces), drops exact duplicates and
two pages that repeat others (requirements.html restates requirements from the other pages;
fileformat.html is a copy of fileformat2.html), joins the paragraphs with blank lines in sorted
file order, and holds out the last 5% of the characters (at a paragraph boundary) as validation
text. It never saw the base's corpus (the Python 3.11 documentation).

Tokens come from the bitgpu binary itself (`bitgpu tokenize -m MODEL --no-parse-special TEXT`,
the GGUF's BPE tokenizer, as `bitgpu perplexity` tokenizes), called on pieces of at most 64 KiB
cut just after a paragraph's blank line (a piece boundary there splits no pre-token, so the ids
are those of the whole text).

Perplexity is `bitgpu perplexity`'s (README, Commands): the text tokenized without BOS; window w
holds tokens [w*N, w*N+N] and is evaluated from an empty cache; its NLL is the mean over its N
predictions; ppl = exp(mean of the window NLLs); N = 256, the model's context.

Outputs:
    OUT/adapter_config.json         PEFT LoraConfig (peft_type LORA, r, lora_alpha, target_modules, ...)
    OUT/adapter_model.safetensors   base_model.model.model.layers.N.self_attn.{q,k,v,o}_proj.lora_{A,B}.weight
                                    and ...layers.N.mlp.{gate,up,down}_proj.lora_{A,B}.weight, F16
    OUT/metrics.json                corpus, sizes, timing, the perplexities, greedy samples
    OUT/train_log.txt               one line per logged step
    DATA/train.txt, DATA/val.txt    the training and validation text (--data, default /tmp/bitgpu-lora-data)

Requirements (Debian 12): python3-torch, python3-numpy, libopenblas0-pthread (Debian's torch calls
the system BLAS), sqlite3-doc for the text, and a bitgpu binary (`go build -o /tmp/bitgpu
./cmd/bitgpu`). Run by hand, never in CI:

    apt-get install -y python3-torch python3-numpy libopenblas0-pthread sqlite3-doc
    go build -o /tmp/bitgpu ./cmd/bitgpu
    /usr/bin/python3 scripts/train_lora.py --bitgpu /tmp/bitgpu --out assets/lora/sqlite-r8 --minutes 0
    /usr/bin/python3 scripts/train_lora.py --bitgpu /tmp/bitgpu --eval-only assets/lora/sqlite-r8 \\
        --text /tmp/bitgpu-lora-data/val.txt --bitgpu-check

--eval-only DIR --text FILE trains nothing and prints, as one JSON line, the perplexity of FILE
under the base alone and under base + the adapter in DIR (--eval-only base: the base alone);
--bitgpu-check adds `bitgpu perplexity --device cpu --lm-head H` on the same file, with `--lora
DIR` for the adapter's figure, and each one's relative difference from PyTorch's. --data-only
writes DATA/train.txt and DATA/val.txt and stops (the validation text, 124,258 characters, sha256
289e6160...82e0 from sqlite3-doc 3.40.1-2+deb12u2).

Training runs AdamW (betas 0.9/0.999, no weight decay) for --steps optimizer steps (100) on
batches of 8 windows of 256 tokens (a quarter of them BOS + a paragraph start, the rest random
offsets), lr 3e-3 with a 10-step warm-up and a cosine to lr/10, gradients clipped to norm 1;
--minutes caps the training time (the schedule then follows whichever of the step and time
fractions is further along, so a busy machine ends on the same schedule with fewer steps;
--minutes 0: steps only, the committed adapter's setting). A step costs about 5 CPU-seconds
(about 2.5 s on two idle cores); the log gives wall and CPU time.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import argparse
import glob
import html.parser
import json
import math
import re
import shutil
import struct
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from train_qat import write_json  # the same atomic JSON writer (this directory is on sys.path)

CORPUS_DIR = "/usr/share/doc/sqlite3"
CORPUS_SKIP = ("requirements.html", "fileformat.html")

# PEFT module names in bitgpu's projection order, and the GGUF tensor each one adapts.
MODULES = [("q_proj", "self_attn", "attn_q"), ("k_proj", "self_attn", "attn_k"),
           ("v_proj", "self_attn", "attn_v"), ("o_proj", "self_attn", "attn_output"),
           ("gate_proj", "mlp", "ffn_gate"), ("up_proj", "mlp", "ffn_up"), ("down_proj", "mlp", "ffn_down")]


# ---------------------------------------------------------------------------------------------
# GGUF


GGUF_F32, GGUF_F16, GGUF_I2_S = 0, 1, 36


class GGUFReader:
    """A GGUF v2/v3 file: metadata dict, tensor infos (name -> (type, shape, offset)), raw bytes."""

    SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
              10: "<Q", 11: "<q", 12: "<d"}

    def __init__(self, path):
        with open(path, "rb") as f:
            self.buf = f.read()
        self.off = 0
        magic, version = struct.unpack_from("<4sI", self.buf, 0)
        if magic != b"GGUF" or version not in (2, 3):
            sys.exit(f"{path}: not a GGUF v2/v3 file")
        self.off = 8
        n_tensors, n_kv = self._u64(), self._u64()
        self.meta = {}
        for _ in range(n_kv):
            key = self._str()
            self.meta[key] = self._value(self._u32())
        self.infos = {}
        for _ in range(n_tensors):
            name = self._str()
            nd = self._u32()
            shape = [self._u64() for _ in range(nd)]
            typ = self._u32()
            self.infos[name] = (typ, shape, self._u64())
        align = int(self.meta.get("general.alignment", 32))
        self.data_start = (self.off + align - 1) // align * align

    def _u32(self):
        v = struct.unpack_from("<I", self.buf, self.off)[0]
        self.off += 4
        return v

    def _u64(self):
        v = struct.unpack_from("<Q", self.buf, self.off)[0]
        self.off += 8
        return v

    def _str(self):
        n = self._u64()
        s = self.buf[self.off:self.off + n].decode("utf-8", errors="replace")
        self.off += n
        return s

    def _value(self, typ):
        if typ == 8:
            return self._str()
        if typ == 9:
            et, n = self._u32(), self._u64()
            return [self._value(et) for _ in range(n)]
        fmt = self.SCALAR[typ]
        v = struct.unpack_from(fmt, self.buf, self.off)[0]
        self.off += struct.calcsize(fmt)
        return v

    def raw(self, name, nbytes):
        typ, shape, off = self.infos[name]
        a = self.data_start + off
        return self.buf[a:a + nbytes]

    def f32(self, name):
        typ, shape, _ = self.infos[name]
        assert typ == GGUF_F32, f"{name}: type {typ}, want F32"
        n = int(np.prod(shape))
        return torch.from_numpy(np.frombuffer(self.raw(name, 4 * n), dtype="<f4").astype(np.float32))

    def f16_matrix(self, name):
        """An F16 [cols, rows] (GGUF order) tensor as a float32 [rows, cols] torch tensor."""
        typ, shape, _ = self.infos[name]
        assert typ == GGUF_F16 and len(shape) == 2, f"{name}: type {typ} shape {shape}, want F16 2-D"
        cols, rows = shape
        a = np.frombuffer(self.raw(name, 2 * cols * rows), dtype="<f2").astype(np.float32)
        return torch.from_numpy(a.reshape(rows, cols))

    def i2s(self, name):
        """An I2_S [cols, rows] tensor as (trits [rows, cols] float32, scale): bitgpu's x86 layout,
        128-element blocks of 32 bytes, byte j holding elements j, j+32, j+64, j+96 at shifts
        6, 4, 2, 0 (codes 0/1/2/3 = -1/0/+1/0), then the f32 scale."""
        typ, shape, _ = self.infos[name]
        assert typ == GGUF_I2_S and len(shape) == 2, f"{name}: type {typ} shape {shape}, want I2_S 2-D"
        cols, rows = shape
        n = cols * rows
        assert n % 128 == 0, f"{name}: {n} elements, not a multiple of 128"
        raw = self.raw(name, n // 4 + 4)
        packed = np.frombuffer(raw[:n // 4], dtype=np.uint8).reshape(n // 128, 1, 32)
        shifts = np.array([6, 4, 2, 0], dtype=np.uint8).reshape(1, 4, 1)
        codes = (packed >> shifts) & 3  # [block, k, j] = element 32k + j of the block
        trits = np.array([-1, 0, 1, 0], dtype=np.float32)[codes].reshape(rows, cols)
        scale = struct.unpack_from("<f", raw, n // 4)[0]
        return torch.from_numpy(np.ascontiguousarray(trits)), scale


# ---------------------------------------------------------------------------------------------
# The frozen base and its exact forward


def round_f16(x):
    return x.half().float()


class BitLinearFn(torch.autograd.Function):
    """bitgpu's BitLinear on float input a [..., in] for one group of projections that share
    their input (q/k/v, gate/up), their trits stacked row-wise [out, in] with each row's
    per-tensor scale in w [out]: s = 127 * (1/max(max|a|, 1e-5)) per token, q = clamp(roundEven(a
    s), -128, 127), y = (float(q . t) * w) * (1/s). The integer sums are below 2^24, so the float32
    product is exact. Backward: straight through the quantization, grad_a = grad_y . (w T)."""

    @staticmethod
    def forward(ctx, a, trits, w, wt):
        s = (1.0 / a.abs().amax(dim=-1, keepdim=True).clamp_(min=1e-5)) * 127.0
        q = (a * s).round_().clamp_(-128, 127)  # torch.round: half to even
        ctx.save_for_backward(wt)
        return (q @ trits.t()).mul_(w).mul_(1.0 / s)

    @staticmethod
    def backward(ctx, g):
        (wt,) = ctx.saved_tensors
        return g @ wt, None, None, None


class RMSNormFn(torch.autograd.Function):
    """x * rsqrt(mean(x^2) + eps), then * w (w frozen)."""

    @staticmethod
    def forward(ctx, x, w, eps):
        r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True).add_(eps))
        ctx.save_for_backward(x, r, w)
        return (x * r).mul_(w)

    @staticmethod
    def backward(ctx, g):
        x, r, w = ctx.saved_tensors
        gw = g * w
        m = (gw * x).mean(-1, keepdim=True).mul_(r.pow(3))
        return gw.mul_(r).sub_(x * m), None, None


def rms_norm(x, w, eps):
    return RMSNormFn.apply(x, w, eps)


def rope_neox(x, cos, sin):
    h = x.shape[-1] // 2
    a, b = x[..., :h], x[..., h:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


# Projections that share an input run as one BitLinear group (one quantization, one product).
GROUPS = [("qkv", ("attn_q", "attn_k", "attn_v")), ("o", ("attn_output",)),
          ("gu", ("ffn_gate", "ffn_up")), ("down", ("ffn_down",))]


class Base:
    """The frozen model of a bitnet-b1.58 GGUF file and its forward, with optional LoRA."""

    def __init__(self, path):
        g = GGUFReader(path)
        m = g.meta
        arch = m["general.architecture"]
        if arch != "bitnet-b1.58":
            sys.exit(f"{path}: architecture {arch!r}, want bitnet-b1.58")
        self.name = m.get("general.name", os.path.basename(path))
        self.dim = m[f"{arch}.embedding_length"]
        self.layers = m[f"{arch}.block_count"]
        self.heads = m[f"{arch}.attention.head_count"]
        self.kv_heads = m.get(f"{arch}.attention.head_count_kv", self.heads)
        self.ffn = m[f"{arch}.feed_forward_length"]
        self.ctx = m[f"{arch}.context_length"]
        self.eps = float(np.float32(m[f"{arch}.attention.layer_norm_rms_epsilon"]))
        self.rope_base = float(np.float32(m.get(f"{arch}.rope.freq_base", 10000.0)))
        self.hd = self.dim // self.heads
        self.rope_dim = m.get(f"{arch}.rope.dimension_count", self.hd)
        if self.rope_dim != self.hd:
            sys.exit(f"{path}: partial RoPE is not implemented here")
        if m.get(f"{arch}.rope.scaling.type", "none") not in ("none",):
            sys.exit(f"{path}: RoPE scaling is not implemented here")
        if "output.weight" in g.infos:
            sys.exit(f"{path}: has an untied output.weight; this script handles the tied head only")
        self.embd = g.f16_matrix("token_embd.weight")  # [vocab, dim], also the LM head (tied)
        self.vocab = self.embd.shape[0]
        self.out_norm = g.f32("output_norm.weight")
        self.blk = []
        for i in range(self.layers):
            p = f"blk.{i}."
            L = {"attn_norm": g.f32(p + "attn_norm.weight"), "attn_sub_norm": g.f32(p + "attn_sub_norm.weight"),
                 "ffn_norm": g.f32(p + "ffn_norm.weight"), "ffn_sub_norm": g.f32(p + "ffn_sub_norm.weight")}
            for gname, members in GROUPS:
                ts, ws = [], []
                for t in members:
                    trits, scale = g.i2s(p + t + ".weight")
                    ts.append(trits)
                    ws.append(torch.full((trits.shape[0],), scale, dtype=torch.float32))
                trits, w = torch.cat(ts), torch.cat(ws)
                L[gname] = (trits, w, (trits * w[:, None]).contiguous())
            self.blk.append(L)
        # RoPE angles: theta_i = pos * base^(-2i/d) in float64, cos and sin rounded to f32.
        inv = torch.tensor([math.pow(self.rope_base, -2.0 * i / self.rope_dim) for i in range(self.rope_dim // 2)],
                           dtype=torch.float64)
        ang = torch.arange(self.ctx, dtype=torch.float64)[:, None] * inv[None, :]
        self.cos, self.sin = torch.cos(ang).float(), torch.sin(ang).float()
        self.mask = torch.full((self.ctx, self.ctx), float("-inf")).triu(1)
        self.q8 = None

    def shapes(self, t):
        """(in, out) of the projection behind GGUF suffix t."""
        qd, kvd = self.heads * self.hd, self.kv_heads * self.hd
        return {"attn_q": (self.dim, qd), "attn_k": (self.dim, kvd), "attn_v": (self.dim, kvd),
                "attn_output": (qd, self.dim), "ffn_gate": (self.dim, self.ffn), "ffn_up": (self.dim, self.ffn),
                "ffn_down": (self.ffn, self.dim)}[t]

    def group(self, L, gname, members, a, lora, i):
        """The projections of one group on input a, LoRA added: y = BitLinear(a) + s B(A a)."""
        trits, w, wt = L[gname]
        y = BitLinearFn.apply(a, trits, w, wt)
        if lora is None:
            return y
        pairs = [lora.pairs.get((i, t)) for t in members]
        if all(p is None for p in pairs):
            return y
        As, Bs = [], []
        for t, pr in zip(members, pairs):
            n_in, n_out = self.shapes(t)
            if pr is None:  # an untargeted member: a zero term
                pr = (torch.zeros(1, n_in), torch.zeros(n_out, 1))
            As.append(pr[0])
            Bs.append(pr[1])
        A = torch.cat(As) if len(As) > 1 else As[0]
        B = torch.block_diag(*Bs) if len(Bs) > 1 else Bs[0]
        return y + ((a @ A.t()) * lora.scaling) @ B.t()

    def forward(self, ids, lora=None, head="f16"):
        """Logits [B, T, vocab] of token ids [B, T] (T <= ctx), every window from position 0."""
        Bn, T = ids.shape
        qd, kvd = self.heads * self.hd, self.kv_heads * self.hd
        x = self.embd[ids]
        cos, sin = self.cos[:T], self.sin[:T]
        g = self.heads // self.kv_heads
        for i, L in enumerate(self.blk):
            a = rms_norm(x, L["attn_norm"], self.eps)
            qkv = self.group(L, "qkv", GROUPS[0][1], a, lora, i)
            q = qkv[..., :qd].reshape(Bn, T, self.heads, self.hd).transpose(1, 2)
            k = qkv[..., qd:qd + kvd].reshape(Bn, T, self.kv_heads, self.hd).transpose(1, 2)
            v = qkv[..., qd + kvd:].reshape(Bn, T, self.kv_heads, self.hd).transpose(1, 2)
            q, k = rope_neox(q, cos, sin), rope_neox(k, cos, sin)
            k, v = round_f16(k), round_f16(v)  # bitgpu's f16 KV cache
            qg = q.reshape(Bn, self.kv_heads, g * T, self.hd)  # query head h reads KV head h // g
            att = (qg @ k.transpose(-1, -2)) * (1.0 / math.sqrt(self.hd))
            att = att.view(Bn, self.kv_heads, g, T, T) + self.mask[:T, :T]
            y = torch.softmax(att, dim=-1).view(Bn, self.kv_heads, g * T, T) @ v
            y = y.view(Bn, self.heads, T, self.hd).transpose(1, 2).reshape(Bn, T, qd)
            x = x + self.group(L, "o", GROUPS[1][1], rms_norm(y, L["attn_sub_norm"], self.eps), lora, i)
            f = rms_norm(x, L["ffn_norm"], self.eps)
            gu = self.group(L, "gu", GROUPS[2][1], f, lora, i)
            r = torch.relu(gu[..., :self.ffn])
            h = (r * r) * gu[..., self.ffn:]
            x = x + self.group(L, "down", GROUPS[3][1], rms_norm(h, L["ffn_sub_norm"], self.eps), lora, i)
        xn = rms_norm(x, self.out_norm, self.eps)
        if head == "f16":
            return xn @ self.embd.t()
        return self.logits_q8(xn)

    def logits_q8(self, xn):
        """bitgpu's --lm-head q8_0: E re-quantized to Q8_0 (ggml's quantize_row_q8_0_ref: per 32
        columns d = amax/127 stored as f16, q = roundf(x * (1/d)) with 1/d from the f32 d), xn
        quantized per token like a BitLinear input; logit = (sum_b float(acc_b) * d_b) / s."""
        if self.q8 is None:
            e = self.embd.numpy().reshape(self.vocab, -1, 32)
            d = np.abs(e).max(axis=-1, keepdims=True) / np.float32(127)
            idv = np.where(d != 0, np.float32(1) / np.where(d != 0, d, 1), 0).astype(np.float32)
            v = (e * idv).astype(np.float32)
            qe = np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5), -127, 127)  # roundf: half away from 0
            self.q8 = (torch.from_numpy(qe.astype(np.float32)),  # [vocab, blocks, 32]
                       torch.from_numpy(d.astype(np.float16).astype(np.float32)[..., 0]))  # [vocab, blocks]
        qe, d = self.q8
        inv = 1.0 / xn.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
        s = inv * 127.0
        qa = (xn * s).round().clamp(-128, 127)
        nb = qe.shape[1]
        acc = torch.einsum("...bj,vbj->...vb", qa.view(*qa.shape[:-1], nb, 32), qe)  # exact integers
        return (acc * d).sum(-1) * (1.0 / s)


class LoRA:
    """A, B per adapted (layer, GGUF suffix); scaling = alpha / r."""

    def __init__(self, base, r, alpha, targets, seed=0):
        self.r, self.alpha, self.targets = r, alpha, list(targets)
        self.scaling = alpha / r
        gen = torch.Generator().manual_seed(seed)
        self.pairs = {}
        for i in range(base.layers):
            for hf, _, t in MODULES:
                if hf not in self.targets:
                    continue
                n_in, n_out = base.shapes(t)
                # torch.nn.init.kaiming_uniform_(a=sqrt(5)) on [r, in]: bound = 1/sqrt(in).
                bound = 1.0 / math.sqrt(n_in)
                A = (torch.rand(r, n_in, generator=gen) * 2 - 1) * bound
                B = torch.zeros(n_out, r)
                self.pairs[i, t] = (A.requires_grad_(), B.requires_grad_())

    def parameters(self):
        return [p for ab in self.pairs.values() for p in ab]

    def rounded(self):
        """A copy with A and B rounded to f16, what bitgpu loads."""
        c = LoRA.__new__(LoRA)
        c.r, c.alpha, c.targets, c.scaling = self.r, self.alpha, self.targets, self.scaling
        c.pairs = {k: (round_f16(A.detach()), round_f16(B.detach())) for k, (A, B) in self.pairs.items()}
        return c

    def tensors(self):
        """PEFT names -> tensors."""
        out = {}
        for (i, t), (A, B) in self.pairs.items():
            hf, parent = next((h, p) for h, p, g in MODULES if g == t)
            pre = f"base_model.model.model.layers.{i}.{parent}.{hf}."
            out[pre + "lora_A.weight"] = A.detach()
            out[pre + "lora_B.weight"] = B.detach()
        return out

    def save(self, out_dir, base_name, dtype):
        os.makedirs(out_dir, exist_ok=True)
        write_json(os.path.join(out_dir, "adapter_config.json"), {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_name,
            "r": self.r,
            "lora_alpha": self.alpha,
            "lora_dropout": 0.0,
            "target_modules": self.targets,
            "use_rslora": False,
            "use_dora": False,
            "bias": "none",
            "fan_in_fan_out": False,
            "init_lora_weights": True,
            "inference_mode": True,
            "modules_to_save": None,
            "layers_to_transform": None,
        })
        save_safetensors(os.path.join(out_dir, "adapter_model.safetensors"), self.tensors(), dtype)

    @staticmethod
    def load(base, path):
        with open(os.path.join(path, "adapter_config.json")) as f:
            cfg = json.load(f)
        if cfg.get("peft_type") != "LORA":
            sys.exit(f"{path}: peft_type {cfg.get('peft_type')!r}, want LORA")
        tensors = load_safetensors(os.path.join(path, "adapter_model.safetensors"))
        lo = LoRA.__new__(LoRA)
        lo.r, lo.alpha = int(cfg["r"]), float(cfg["lora_alpha"])
        lo.scaling = lo.alpha / (math.sqrt(lo.r) if cfg.get("use_rslora") else lo.r)
        lo.targets = cfg["target_modules"]
        lo.pairs = {}
        pat = re.compile(r"base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_A\.weight$")
        for name, A in tensors.items():
            m = pat.match(name)
            if not m:
                continue
            i, hf = int(m.group(1)), m.group(3)
            t = next(g for h, _, g in MODULES if h == hf)
            B = tensors[name.replace("lora_A", "lora_B")]
            n_in, n_out = base.shapes(t)
            if A.shape != (lo.r, n_in) or B.shape != (n_out, lo.r):
                sys.exit(f"{path}: {name}: shapes {tuple(A.shape)} / {tuple(B.shape)} do not fit the base")
            lo.pairs[i, t] = (A, B)
        return lo.rounded()


# ---------------------------------------------------------------------------------------------
# Files


SAFETENSORS_DTYPES = {"F16": "<f2", "F32": "<f4"}


def save_safetensors(path, tensors, dtype="F16"):
    """Writes name -> tensor as safetensors: 8-byte little-endian header length, a JSON header
    (dtype, shape, data_offsets per tensor, sorted names), padded with spaces to 8 bytes, the data."""
    header, blobs, off = {}, [], 0
    np_dtype = SAFETENSORS_DTYPES[dtype]
    for name in sorted(tensors):
        t = tensors[name].detach().float()
        if dtype == "F32":  # the values bitgpu uses: rounded to f16 and back
            t = round_f16(t)
        raw = t.numpy().astype(np_dtype).tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
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


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        a, b = h["data_offsets"]
        dt = h["dtype"]
        if dt == "BF16":
            raw = (np.frombuffer(data[a:b], dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif dt in ("F16", "F32"):
            raw = np.frombuffer(data[a:b], dtype=SAFETENSORS_DTYPES[dt]).astype(np.float32)
        else:
            sys.exit(f"{path}: {name}: dtype {dt} not handled")
        out[name] = torch.from_numpy(raw.copy()).view(*h["shape"])
    return out


# ---------------------------------------------------------------------------------------------
# Corpus and tokens


class Paragraphs(html.parser.HTMLParser):
    """Collects the text of <p> elements, without <pre>, <script> and <style> contents; a block
    element inside a <p> ends it."""

    BLOCK = {"div", "table", "h1", "h2", "h3", "h4", "h5", "ul", "ol", "li", "blockquote", "dl", "dt", "dd",
             "br", "tr", "td", "th", "hr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.paras, self.cur, self.skip = [], None, 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style", "pre"):
            self.skip += 1
        if tag == "p" or tag in self.BLOCK:
            self.flush()
            if tag == "p":
                self.cur = []

    def handle_endtag(self, tag):
        if tag in ("script", "style", "pre"):
            self.skip = max(0, self.skip - 1)
        if tag == "p" or tag in self.BLOCK:
            self.flush()

    def handle_data(self, data):
        if self.cur is not None and not self.skip:
            self.cur.append(data)

    def flush(self):
        if self.cur is not None:
            t = re.sub(r"\s+", " ", "".join(self.cur)).strip()
            if t:
                self.paras.append(t)
        self.cur = None


def is_prose(p):
    """train_qat.py's test: a paragraph that reads as English prose."""
    if len(p) < 40 or len(p.split()) < 7:
        return False
    if p[-1] not in ".:?!)":
        return False
    letters = sum(ch.isalpha() or ch == " " for ch in p)
    return letters >= 0.85 * len(p)


def load_corpus(root):
    files = [f for f in sorted(glob.glob(os.path.join(root, "*.html"))) if os.path.basename(f) not in CORPUS_SKIP]
    if not files:
        sys.exit(f"{root}: no .html files (apt-get install sqlite3-doc)")
    seen, paras = set(), []
    for path in files:
        p = Paragraphs()
        with open(path, encoding="utf-8", errors="replace") as f:
            p.feed(f.read())
        p.close()
        p.flush()
        for t in p.paras:
            if is_prose(t) and t not in seen:
                seen.add(t)
                paras.append(t)
    return files, paras


def tokenize(bitgpu, model, text, piece=65536):
    """Token ids of text (no BOS, special-token text plain) from `bitgpu tokenize`, called on
    pieces of at most `piece` bytes, each cut just after a blank line that a non-space follows.
    No pre-token of the LLaMA-3 pattern holds a newline followed by a non-space, so the pieces'
    ids are those of the whole text."""
    pieces, cur, size = [], [], 0
    for part in re.split(r"(?<=\n\n)(?=\S)", text):
        nb = len(part.encode())
        if cur and size + nb > piece:
            pieces.append("".join(cur))
            cur, size = [], 0
        cur.append(part)
        size += nb
    if cur:
        pieces.append("".join(cur))
    ids = []
    for chunk in pieces:
        if len(chunk.encode()) >= 131072:  # Linux's limit on one argument
            sys.exit(f"tokenize: a paragraph of {len(chunk.encode())} bytes is too long for one argument")
        r = subprocess.run([bitgpu, "tokenize", "-m", model, "--no-parse-special", chunk],
                           capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"bitgpu tokenize failed: {r.stderr.strip()}")
        ids.extend(int(x) for x in r.stdout.split())
    return np.array(ids, dtype=np.int64)


def byte_decoder(tokens):
    """The bytes of every vocabulary entry (GPT-2 byte map; special tokens as their text)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    inv = {chr(c): b for b, c in zip(bs, cs)}
    return [t.encode() if t.startswith("<|") and t.endswith("|>") else bytes(inv[c] for c in t) for t in tokens]


def detokenize(tok_bytes, ids):
    return b"".join(tok_bytes[i] for i in ids).decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------------------------
# Perplexity


@torch.no_grad()
def perplexity(base, tokens, n, lora=None, head="f16", batch=16):
    """bitgpu's perplexity: windows [w*n, w*n+n], each from an empty cache, mean of window NLLs."""
    k = (len(tokens) - 1) // n
    nlls = []
    for w0 in range(0, k, batch):
        ws = range(w0, min(k, w0 + batch))
        x = torch.from_numpy(np.stack([tokens[w * n:w * n + n + 1] for w in ws]).astype(np.int64))
        logits = base.forward(x[:, :-1], lora, head).double()
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="none")
        nlls.extend(nll.view(len(ws), n).mean(1).tolist())
    return math.exp(sum(nlls) / len(nlls)), k


def bitgpu_perplexity(args, n, adapter=None):
    """`bitgpu perplexity` on --text with the same window, windows and head, CPU backend."""
    cmd = [args.bitgpu, "perplexity", "-m", args.model, "-f", args.text, "--ctx", str(n),
           "--lm-head", args.lm_head, "--device", "cpu"]
    if args.chunks:
        cmd += ["--chunks", str(args.chunks)]
    if adapter:
        cmd += ["--lora", adapter]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        err = r.stderr.strip().splitlines()
        return {"error": err[-1] if err else f"exit {r.returncode}"}
    m = re.search(r"^ppl: ([0-9.eE+-]+)$", r.stdout, re.M)
    if not m:
        return {"error": "no ppl line"}
    return {"ppl": float(m.group(1)), "seconds": round(time.time() - t0, 1)}


@torch.no_grad()
def greedy(base, bos, prompt_ids, n, lora=None, head="f16"):
    ids = [bos] + list(prompt_ids)
    for _ in range(n):
        ids.append(int(base.forward(torch.tensor([ids[-base.ctx:]]), lora, head)[0, -1].argmax()))
    return ids[1 + len(prompt_ids):]


# ---------------------------------------------------------------------------------------------


def find_bitgpu(arg):
    b = arg or shutil.which("bitgpu")
    if not b or not os.path.exists(b):
        sys.exit("no bitgpu binary: go build -o /tmp/bitgpu ./cmd/bitgpu and pass --bitgpu /tmp/bitgpu")
    return b


def evaluate(args):
    """--eval-only: the perplexity of --text under the base and base + adapter, as one JSON line."""
    base = Base(args.model)
    with open(args.text, encoding="utf-8") as f:
        text = f.read()
    ids = tokenize(args.bitgpu, args.model, text)
    n = args.window or base.ctx
    if args.chunks:
        ids = ids[:args.chunks * n + 1]
    t0 = time.time()
    out = {"text": args.text, "tokens": int(len(ids)), "window": n, "lm_head": args.lm_head}
    out["ppl_base"], out["windows"] = perplexity(base, ids, n, None, args.lm_head)
    lora = None
    if args.eval_only != "base":
        lora = LoRA.load(base, args.eval_only)
        out["adapter"] = args.eval_only
        out["ppl_lora"], _ = perplexity(base, ids, n, lora, args.lm_head)
    out["seconds"] = round(time.time() - t0, 1)
    if args.bitgpu_check:
        checks = [("bitgpu_base", "ppl_base", None)]
        if lora is not None:
            checks.append(("bitgpu_lora", "ppl_lora", args.eval_only))
        for key, ours, adapter in checks:
            out[key] = bitgpu_perplexity(args, n, adapter)
            if "ppl" in out[key]:
                out[key]["rel_diff"] = out[key]["ppl"] / out[ours] - 1
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="assets/bitgpu-tiny.gguf", help="the base: a bitnet-b1.58 GGUF file")
    ap.add_argument("--bitgpu", help="the bitgpu binary (default: bitgpu on PATH)")
    ap.add_argument("--out", help="adapter directory to write (PEFT layout)")
    ap.add_argument("--data", default="/tmp/bitgpu-lora-data", help="where train.txt and val.txt go")
    ap.add_argument("--corpus", default=CORPUS_DIR)
    ap.add_argument("--data-only", action="store_true", help="only write DATA/train.txt and DATA/val.txt")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16)
    ap.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=0, help="training sequence length (default: the model's context)")
    ap.add_argument("--steps", type=int, default=100, help="optimizer steps")
    ap.add_argument("--minutes", type=float, default=12,
                    help="training time cap: the schedule runs on the larger of the step and time fractions, "
                         "and training ends when either reaches 1 (0: steps only)")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--bos-fraction", type=float, default=0.25,
                    help="share of training sequences that start with BOS at a paragraph start")
    ap.add_argument("--dtype", choices=["f16", "f32"], default="f16", help="adapter tensor type on disk")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--lm-head", choices=["f16", "q8_0"], default="f16",
                    help="logits head for the reported perplexities (bitgpu's --lm-head); training uses f16")
    ap.add_argument("--eval-only", metavar="ADAPTER_DIR", help="train nothing: print the perplexity of --text under "
                    "the base and base + ADAPTER_DIR ('base': the base alone)")
    ap.add_argument("--text", metavar="FILE")
    ap.add_argument("--window", type=int, default=0, help="perplexity window (default: the model's context)")
    ap.add_argument("--chunks", type=int, default=0, help="evaluate only the first K windows (0: all)")
    ap.add_argument("--bitgpu-check", action="store_true", help="also run bitgpu perplexity on the same text")
    ap.add_argument("--prompts", default="SQLite is a|The database file|A transaction",
                    help="'|'-separated prompts for the greedy samples in metrics.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.bitgpu = find_bitgpu(args.bitgpu)
    if args.eval_only:
        if not args.text:
            ap.error("--eval-only needs --text")
        evaluate(args)
        return
    if not args.out and not args.data_only:
        ap.error("--out is required to train")
    train(args)


def train(args):
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    os.makedirs(args.data, exist_ok=True)
    logf = None
    if not args.data_only:
        os.makedirs(args.out, exist_ok=True)
        logf = open(os.path.join(args.out, "train_log.txt"), "w", encoding="utf-8")
    t_start = time.time()

    def log(msg):
        line = f"[{time.time() - t_start:7.1f}s] {msg}"
        print(line, flush=True)
        if logf:
            logf.write(line + "\n")
            logf.flush()

    log(f"args: {vars(args)}")
    log(f"torch {torch.__version__}, numpy {np.__version__}, threads {torch.get_num_threads()}")

    files, paras = load_corpus(args.corpus)
    total = sum(len(p) + 2 for p in paras)
    cut, acc = len(paras), 0
    while acc < 0.05 * total:
        cut -= 1
        acc += len(paras[cut]) + 2
    train_text = "\n\n".join(paras[:cut]) + "\n\n"
    val_text = "\n\n".join(paras[cut:]) + "\n"
    for name, text in (("train.txt", train_text), ("val.txt", val_text)):
        with open(os.path.join(args.data, name), "w", encoding="utf-8") as f:
            f.write(text)
    log(f"corpus: {len(files)} files, {len(paras)} paragraphs, train {len(train_text)} chars, "
        f"val {len(val_text)} chars (from paragraph {cut}); written to {args.data}")
    if args.data_only:
        return

    base = Base(args.model)
    g = GGUFReader(args.model)
    tok_bytes = byte_decoder(g.meta["tokenizer.ggml.tokens"])
    bos = int(g.meta["tokenizer.ggml.bos_token_id"])
    del g
    log(f"base {base.name}: dim {base.dim}, {base.layers} layers, {base.heads}/{base.kv_heads} heads, "
        f"ffn {base.ffn}, vocab {base.vocab}, ctx {base.ctx}")

    t0 = time.time()
    train_ids = tokenize(args.bitgpu, args.model, train_text)
    val_ids = tokenize(args.bitgpu, args.model, val_text)
    log(f"tokens: train {len(train_ids)} ({len(train_text) / len(train_ids):.2f} chars/token), val {len(val_ids)} "
        f"({time.time() - t0:.1f}s with bitgpu tokenize)")
    for name, text, ids in (("train", train_text, train_ids), ("val", val_text, val_ids)):
        if detokenize(tok_bytes, ids) != text:
            sys.exit(f"the {name} tokens do not decode to the {name} text")
    # Paragraph starts: tokens that begin at a paragraph's first byte.
    lens = np.array([len(tok_bytes[i]) for i in train_ids])
    begins = np.cumsum(lens) - lens
    para_bytes, off = [], 0
    for p in paras[:cut]:
        para_bytes.append(off)
        off += len(p.encode()) + 2
    para_starts = np.nonzero(np.isin(begins, para_bytes))[0]
    para_starts = para_starts[para_starts < len(train_ids) - 1]
    log(f"{len(para_starts)} of {cut} paragraphs start on a token boundary")
    N = base.ctx
    T = args.seq or N
    t0 = time.time()
    ppl_base, windows = perplexity(base, val_ids, N, None, args.lm_head)
    log(f"base val ppl {ppl_base:.4f} over {windows} windows of {N} ({time.time() - t0:.1f}s)")

    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    for t in targets:
        if t not in [m[0] for m in MODULES]:
            sys.exit(f"--targets: {t!r} is not one of {[m[0] for m in MODULES]}")
    lora = LoRA(base, args.rank, args.alpha, targets, args.seed)
    params = lora.parameters()
    n_params = sum(p.numel() for p in params)
    log(f"lora: rank {args.rank}, alpha {args.alpha}, targets {targets}, {n_params} parameters")
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), weight_decay=args.weight_decay)

    def progress(step):
        p = step / args.steps
        if args.minutes:
            p = max(p, (time.time() - t_train) / (args.minutes * 60))
        return min(1.0, p)

    def lr_at(step, p):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))

    def batch():
        xs = np.empty((args.batch, T + 1), dtype=np.int64)
        for i in range(args.batch):
            if rng.random() < args.bos_fraction:
                s = min(para_starts[rng.integers(len(para_starts))], len(train_ids) - T)
                xs[i, 0] = bos
                xs[i, 1:] = train_ids[s:s + T]
            else:
                s = rng.integers(len(train_ids) - T - 1)
                xs[i] = train_ids[s:s + T + 1]
        return torch.from_numpy(xs)

    eval_ids = val_ids[:16 * N + 1]
    t_train = time.time()
    cpu_train = time.process_time()
    steps_done = 0
    for step in range(args.steps):
        p = progress(step)
        if p >= 1:
            log(f"stopping after {steps_done} steps: the budget of {args.steps} steps or {args.minutes} minutes is spent")
            break
        lr = lr_at(step, p)
        for grp in opt.param_groups:
            grp["lr"] = lr
        x = batch()
        logits = base.forward(x[:, :-1], lora)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        steps_done = step + 1
        if step % 10 == 0:
            el = time.time() - t_train
            cpu = time.process_time() - cpu_train
            log(f"step {step} loss {loss.item():.4f} lr {lr:.2e} {(step + 1) * args.batch * T / el:.0f} tok/s, "
                f"{cpu / (step + 1):.2f} CPU-s/step")
        if args.eval_every and step > 0 and step % args.eval_every == 0:
            ppl, _ = perplexity(base, eval_ids, N, lora.rounded(), args.lm_head)
            log(f"step {step} val ppl (first 16 windows) {ppl:.3f}")
    train_seconds = time.time() - t_train
    train_cpu_seconds = time.process_time() - cpu_train

    lora.save(args.out, base.name, args.dtype.upper())
    saved = LoRA.load(base, args.out)  # exactly what bitgpu reads
    t0 = time.time()
    ppl_lora, _ = perplexity(base, val_ids, N, saved, args.lm_head)
    log(f"val ppl: base {ppl_base:.4f}, base + adapter {ppl_lora:.4f} ({windows} windows of {N}; "
        f"A, B as saved ({args.dtype}); {train_seconds / 60:.1f} min of training, {train_cpu_seconds / 60:.1f} CPU-min, "
        f"{steps_done} steps)")

    samples = {}
    for prompt in [p for p in args.prompts.split("|") if p]:
        pids = tokenize(args.bitgpu, args.model, prompt).tolist()
        before = detokenize(tok_bytes, greedy(base, bos, pids, 40, None))
        after = detokenize(tok_bytes, greedy(base, bos, pids, 40, saved))
        samples[prompt] = {"base": before, "lora": after}
        log(f"sample {prompt!r}: base {before!r} | lora {after!r}")

    write_json(os.path.join(args.out, "metrics.json"), {
        "base_model": args.model,
        "corpus": "sqlite3-doc (Debian 12, SQLite 3.40.1), /usr/share/doc/sqlite3/*.html, prose <p> paragraphs",
        "corpus_license": "public domain (/usr/share/doc/sqlite3-doc/copyright)",
        "files": len(files),
        "paragraphs": len(paras),
        "train_chars": len(train_text),
        "val_chars": len(val_text),
        "train_tokens": int(len(train_ids)),
        "val_tokens": int(len(val_ids)),
        "rank": args.rank,
        "alpha": args.alpha,
        "targets": targets,
        "lora_parameters": n_params,
        "steps": steps_done,
        "batch": args.batch,
        "seq": T,
        "tokens_seen": steps_done * args.batch * T,
        "lr": args.lr,
        "train_seconds": round(train_seconds, 1),
        "train_cpu_seconds": round(train_cpu_seconds, 1),
        "threads": args.threads,
        "total_seconds": round(time.time() - t_start, 1),
        "lm_head": args.lm_head,
        "val_ppl_base": ppl_base,
        "val_ppl_lora": ppl_lora,
        "val_windows": windows,
        "val_window_tokens": N,
        "samples_greedy": samples,
    })
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
