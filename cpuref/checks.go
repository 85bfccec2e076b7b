package cpuref

import "github.com/bitgpu/bitgpu/model"

// CheckConfig validates the hyper-parameters New relies on for a KV cache of ctx tokens and fills
// the defaults New fills (RMSEps 1e-5, RoPEDim = HeadDim when 0); another backend (package cpu)
// uses it to accept exactly the models New accepts. The error names the field.
func CheckConfig(c *model.Config, ctx int) error { return checkConfig(c, ctx) }

// CheckKVCache is New's memory plan for a KV cache of ctx tokens (KVCacheBytes against the
// system's available memory, /proc/meminfo MemAvailable); the error names both sizes and the
// largest --ctx that fits.
func CheckKVCache(cfg model.Config, ctx int) error { return checkKVCache(cfg, ctx, memAvailable()) }
