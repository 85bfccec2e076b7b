package runtime

// E2EPoint is one context length of an end-to-end run: prefill and decode speed (tokens per
// second, wall clock), the device memory a cache of that many tokens needs (PlanMemory: weights,
// KV cache, scratch), the bytes one decode step must read
// (every weight once plus the KV cache so far) and what fraction of the copy kernel's bandwidth
// that makes. BenchE2E (GPU) and BenchE2ECPU (the CPU backends) fill the same fields; on the CPU
// the "device" memory is the model bytes a step reads plus the KV cache (BenchE2ECPU) and the
// copy is a memcpy measured at the run's thread count.
type E2EPoint struct {
	Context             int     `json:"context"`
	PrefillTokS         float64 `json:"prefill_tok_per_s"`
	PrefillMSPerToken   float64 `json:"prefill_ms_per_token"`
	DecodeTokS          float64 `json:"decode_tok_per_s"`
	DecodeMSPerToken    float64 `json:"decode_ms_per_token"`
	DeviceBytes         uint64  `json:"device_bytes"`
	DecodeBytesPerToken uint64  `json:"decode_bytes_per_token"`
	BandwidthEfficiency float64 `json:"decode_bandwidth_efficiency"`
	// The spread behind PrefillMSPerToken (the median of PrefillRuns timed prefills) and
	// DecodeMSPerToken (the mean of the decode steps): the fastest and slowest prefill run and
	// decode step, in ms per token.
	PrefillRuns          int     `json:"prefill_runs"`
	PrefillMSPerTokenMin float64 `json:"prefill_ms_per_token_min"`
	PrefillMSPerTokenMax float64 `json:"prefill_ms_per_token_max"`
	DecodeMSPerTokenMin  float64 `json:"decode_ms_per_token_min"`
	DecodeMSPerTokenMax  float64 `json:"decode_ms_per_token_max"`
	// DecodeBytesPerToken split: the projection and norm weights, the LM head (the logits matrix)
	// and the KV cache read at this context length (all layers' K and V up to it, f16); and the
	// decode rate those bytes allow at the copy bandwidth measured in the same run.
	WeightBytesPerToken uint64  `json:"weight_bytes_per_token"`
	HeadBytesPerToken   uint64  `json:"lm_head_bytes_per_token"`
	KVBytesPerToken     uint64  `json:"kv_bytes_per_token"`
	RooflineTokS        float64 `json:"roofline_tok_per_s"`
}
