package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/model"
)

// TestI2SLayoutFlag: inspect says which I2_S layout it assumes and that the file cannot tell;
// --i2s-layout changes it, and an unknown name is refused naming the flag.
func TestI2SLayoutFlag(t *testing.T) {
	out, errOut, code := runCLI(t, nil, "inspect")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "i2s layout:  x86 assumed (--i2s-layout); ambiguous")
	out, errOut, code = runCLI(t, nil, "inspect", "--i2s-layout", "arm")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "i2s layout:  arm assumed")

	defer func(s string) { i2sLayout = s }(i2sLayout)
	i2sLayout = "tl2"
	require.ErrorContains(t, applyI2SLayout(&model.Model{}), `--i2s-layout: I2_S layout "tl2"`)
}
