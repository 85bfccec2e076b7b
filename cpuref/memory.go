package cpuref

import (
	"bufio"
	"fmt"
	"math"
	"math/bits"
	"os"
	"strconv"
	"strings"

	"github.com/bitgpu/bitgpu/model"
)

// KVCacheBytes is the memory, in bytes, of the f16 KV cache New allocates for cfg with ctx
// tokens: Layers × ctx × KVHeads·HeadDim values for the keys and as many for the values, 2 bytes
// each. It saturates at 2^64-1 instead of wrapping, so an untrusted ctx cannot make it small.
func KVCacheBytes(cfg model.Config, ctx int) uint64 {
	n := uint64(4) // 2 bytes, keys and values
	for _, f := range []int{cfg.Layers, ctx, cfg.KVHeads, cfg.HeadDim} {
		hi, lo := bits.Mul64(n, uint64(max(f, 0)))
		if hi != 0 {
			return math.MaxUint64
		}
		n = lo
	}
	return n
}

// memAvailable returns the memory the system can give a new allocation without swapping, in
// bytes: MemAvailable from /proc/meminfo, or 0 where that is unknown (then only the address
// space bounds the cache). A variable so tests can pretend a size.
var memAvailable = func() uint64 { return MemInfo("MemAvailable") }

// MemInfo returns the /proc/meminfo entry key ("MemAvailable", "MemTotal", ...) in bytes, or 0
// where the file or the entry is missing or not in kB.
func MemInfo(key string) uint64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), key+":"); ok {
			fields := strings.Fields(rest)
			if len(fields) == 2 && fields[1] == "kB" {
				if kb, err := strconv.ParseUint(fields[0], 10, 64); err == nil && kb < 1<<50 {
					return kb << 10
				}
			}
		}
	}
	return 0
}

// checkKVCache is the CPU backend's memory plan: the KV cache of ctx tokens (KVCacheBytes) must
// be addressable and fit in avail bytes (0: unknown, not checked). The mapped weights are not
// counted — the page cache holds them and can drop them. The error names both sizes and the
// --ctx that would fit.
func checkKVCache(cfg model.Config, ctx int, avail uint64) error {
	need := KVCacheBytes(cfg, ctx)
	perToken := KVCacheBytes(cfg, 1)
	if need > math.MaxInt64/2 { // not addressable (or saturated)
		return fmt.Errorf("cpuref: a KV cache of %d tokens (%d bytes a token) is beyond any memory; try a smaller --ctx", ctx, perToken)
	}
	if avail > 0 && need > avail {
		return fmt.Errorf("cpuref: a KV cache of %d tokens needs %d bytes (%s: %d layers × %d KV values × 2 bytes × keys and values a token) but the system has %s available; try --ctx %d or less",
			ctx, need, sizeString(need), cfg.Layers, cfg.KVHeads*cfg.HeadDim, sizeString(avail), avail/perToken)
	}
	return nil
}

// sizeString spells a byte count in MiB below 1 GiB and in GiB above.
func sizeString(b uint64) string {
	if b < 1<<30 {
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	}
	return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30))
}
