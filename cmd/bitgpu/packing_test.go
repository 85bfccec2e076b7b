package main

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestTernaryPackingFlag: generate's --ternary-packing reaches the Vulkan backend — with 2bit and
// base3 the greedy and seeded texts equal the CPU backend's (the bit-exact contract), and -v names
// the layout in effect (auto, the default: the device's choice) — and an unknown
// value is one error line naming the flag, for generate and bench e2e alike (bench e2e refuses
// the flag on a CPU device).
func TestTernaryPackingFlag(t *testing.T) {
	path := synthFile(t)
	out, errOut, code := runCLI(t, nil, "generate", "-m", path, "-p", "x", "--device", "cpu", "--ternary-packing", "tq1_0")
	requireOneErrorLine(t, out, errOut, code, `--ternary-packing "tq1_0"`)
	out, errOut, code = runCLI(t, nil, "bench", "e2e", "--preset", "tiny", "--ternary-packing", "4bit")
	requireOneErrorLine(t, out, errOut, code, `--ternary-packing "4bit"`)
	out, errOut, code = runCLI(t, nil, "bench", "e2e", "--device", "cpu", "--ternary-packing", "base3")
	requireOneErrorLine(t, out, errOut, code, `--ternary-packing: only with --device gpu`)

	if os.Getenv("BITGPU_REQUIRE_GPU") != "1" {
		if _, _, code := runCLI(t, nil, "devices"); code != 0 {
			t.Skip("no Vulkan device")
		}
	}
	for _, sampling := range [][]string{{"--temp", "0"}, {"--temp", "0.9", "--seed", "7"}} {
		args := append([]string{"generate", "-m", path, "-p", "hello world", "-n", "8", "-v"}, sampling...)
		ref, _, code := runCLI(t, nil, append(args, "--device", "cpu")...)
		require.Equal(t, 0, code)
		// auto: the device's choice (runtime's packingTable; TestResolvePacking holds it to the
		// table), one of the two.
		for packing, want := range map[string]string{"2bit": "2bit", "base3": "base3", "auto": "(2bit|base3)"} {
			out, errOut, code := runCLI(t, nil, append(args, "--device", "gpu", "--ternary-packing", packing)...)
			require.Equal(t, 0, code, errOut)
			require.Regexp(t, "ternary packing "+want+";", errOut, "--ternary-packing %s", packing)
			require.Equal(t, ref, out, "%v --ternary-packing %s: GPU tokens equal the CPU's", sampling, packing)
		}
	}
}
