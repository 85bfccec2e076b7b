// Package model reads and writes the files bitgpu runs: GGUF (v2/v3), Hugging Face safetensors
// checkpoints with config.json, the ternary weight encodings I2_S, TQ1_0 and TQ2_0, and the
// tokenizers and chat templates stored with them. It knows files and text, not devices.
package model

// TensorType is a GGUF tensor element type; the numeric values are the ggml type ids written in
// GGUF tensor infos (ggml.h `enum ggml_type`; I2_S = 36 from microsoft/BitNet's llama.cpp fork).
type TensorType uint32

// GGUF tensor types bitgpu reads and writes.
const (
	TypeF32   TensorType = 0
	TypeF16   TensorType = 1
	TypeQ8_0  TensorType = 8
	TypeQ4_K  TensorType = 12 // embedding / output only (llama-quantize's default for TQ files)
	TypeQ6_K  TensorType = 14 // embedding / output only
	TypeTQ1_0 TensorType = 34
	TypeTQ2_0 TensorType = 35
	TypeI2_S  TensorType = 36
	TypeBF16  TensorType = 30
)

// Arch names the model architecture as GGUF `general.architecture` spells it.
type Arch string

// Architectures bitgpu runs (the README's formats section).
const (
	// ArchBitNetB158 is the official BitNet b1.58 2B4T GGUF: sub-norms, ReLU² gate, NEOX RoPE.
	ArchBitNetB158 Arch = "bitnet-b1.58"
	// ArchBitNet is upstream llama.cpp's name for the 1bitLLM b1.58 models: SiLU gate, unless
	// `bitnet.hidden_activation` says "relu2" (newer upstream converters).
	ArchBitNet Arch = "bitnet"
	// ArchBitNet25 is the label microsoft/BitNet's own converter writes for the BitNet b1.58
	// 2B4T layout; it is read as ArchBitNetB158 (Config.Arch is never ArchBitNet25).
	ArchBitNet25 Arch = "bitnet-25"
)

// Activation is the gate activation of the feed-forward block.
type Activation string

// Gate activations.
const (
	// ActReLU2 is relu(x)^2 (BitNet b1.58 2B4T, HF hidden_act "relu2").
	ActReLU2 Activation = "relu2"
	// ActSiLU is x*sigmoid(x) (HF hidden_act "silu").
	ActSiLU Activation = "silu"
)

// RoPEMode selects which element pairs RoPE rotates (the README's Numerics section).
type RoPEMode int

// RoPE modes.
const (
	// RoPENeox rotates (x[i], x[i+d/2]) — Hugging Face "rotate_half"; BitNet GGUFs.
	RoPENeox RoPEMode = iota
	// RoPENorm rotates adjacent pairs (x[2i], x[2i+1]) — ggml's normal mode; llama-arch GGUFs.
	RoPENorm
)

// Config holds a model's hyper-parameters. Widths count elements; lengths count tokens.
type Config struct {
	Arch          Arch
	VocabSize     int     // rows of token_embd
	Dim           int     // hidden width (n_embd)
	Layers        int     // transformer blocks (n_layer)
	Heads         int     // query heads (n_head)
	KVHeads       int     // key/value heads (n_head_kv); Heads % KVHeads == 0
	HeadDim       int     // Dim / Heads
	FFNDim        int     // feed-forward width (n_ff)
	RoPEBase      float32 // rope.freq_base
	RoPEDim       int     // rotated dimensions per head (rope.dimension_count, default HeadDim)
	RoPEMode      RoPEMode
	RMSEps        float32 // attention.layer_norm_rms_epsilon (1e-5 if absent)
	ContextLength int     // context_length
	Act           Activation
	TiedEmbedding bool // logits use token_embd (no output.weight)
	SubNorms      bool // blocks have attn_sub_norm and ffn_sub_norm (always for the BitNet archs)
	BOS, EOS, EOT int  // special token ids; -1 when the file has none
	AddBOS        bool
	ChatTemplate  string
}

// Tensor is one named tensor in its on-disk encoding. Shape is in GGUF order: Shape[0] is the
// innermost (contiguous) dimension, so a weight matrix with `rows` outputs and `cols` inputs has
// Shape = [cols, rows]. Data aliases the memory-mapped file where possible; do not modify it.
type Tensor struct {
	Name  string
	Type  TensorType
	Shape []uint64
	Data  []byte
}

// Model is an opened model: its hyper-parameters, its tensors by GGUF name (`token_embd.weight`,
// `blk.0.attn_q.weight`, ...), and its tokenizer. Close releases the file mappings.
type Model struct {
	Path      string
	Config    Config
	Tensors   map[string]*Tensor
	Tokenizer Tokenizer
	// PackedScaleRule says, for a Hugging Face checkpoint with packed projections, how their
	// weight_scale was applied (HFConfig.PackedScale); empty otherwise. `bitgpu inspect` prints it.
	PackedScaleRule string
	closer          func() error
}

// Close releases the memory mappings behind the tensors; the Tensor data must not be used after.
func (m *Model) Close() error {
	if m == nil || m.closer == nil {
		return nil
	}
	c := m.closer
	m.closer = nil
	return c()
}

// Tokenizer turns text into token ids and back. Implementations: byte-level BPE
// (`tokenizer.ggml.model = gpt2`) and SentencePiece (`llama`).
type Tokenizer interface {
	// Encode splits text into token ids. Special tokens written in the text (e.g. "<|eot_id|>")
	// are matched whole only when parseSpecial is true. No BOS is added.
	Encode(text string, parseSpecial bool) []int
	// EncodeTemplate splits text into token ids with special tokens parsed, except where an
	// occurrence overlaps one of the literal byte spans: there the text is plain text, as Encode
	// with parseSpecial false would treat it. Chat templates use it so a message's content can
	// never forge the template's markers (typing "<|eot_id|>System: ..." stays text), while the
	// tokenization around the markers is the same as Encode(text, true). No BOS is added.
	EncodeTemplate(text string, literal []Span) []int
	// Decode concatenates the pieces of ids into text (special tokens rendered as their text).
	Decode(ids []int) string
	// TokenBytes returns the raw bytes token id stands for (for streaming decode).
	TokenBytes(id int) []byte
	// VocabSize is the number of token ids.
	VocabSize() int
	// BOS, EOS and EOT are special ids, -1 when absent.
	BOS() int
	EOS() int
	EOT() int
	// AddBOS reports whether prompts should start with BOS.
	AddBOS() bool
	// IsControl reports whether id is a control/special token (not rendered in generated text).
	IsControl(id int) bool
}
