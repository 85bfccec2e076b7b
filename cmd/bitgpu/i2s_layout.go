package main

import (
	"fmt"
	"io"

	"github.com/bitgpu/bitgpu/model"
)

// i2sLayout is the persistent --i2s-layout flag: the byte order of a GGUF file's I2_S tensors
// (model.I2SLayout), which nothing in the file records.
var i2sLayout string

func init() {
	rootCmd.PersistentFlags().StringVar(&i2sLayout, "i2s-layout", string(model.I2SLayoutX86),
		"byte order of I2_S tensors, which GGUF files do not record: x86 (microsoft/BitNet on x86, the official 2B4T file), arm (its ARM builds since 2025-11), 1x4 (x86 without ACT_PARALLEL)")
}

// applyI2SLayout rewrites m's I2_S tensors from the --i2s-layout order to the one bitgpu reads.
func applyI2SLayout(m *model.Model) error {
	l, err := model.ParseI2SLayout(i2sLayout)
	if err != nil {
		return fmt.Errorf("--i2s-layout: %v", err)
	}
	return model.ApplyI2SLayout(m, l)
}

// printI2SLayoutNote tells, for a file with I2_S tensors, which layout is assumed and that the
// file cannot say.
func printI2SLayoutNote(w io.Writer, ts []*model.Tensor) {
	for _, t := range ts {
		if t.Type == model.TypeI2_S {
			fmt.Fprintf(w, "i2s layout:  %s assumed (--i2s-layout); ambiguous: GGUF records no I2_S layout, and microsoft/BitNet writes x86, arm or 1x4 depending on the machine that quantized it\n", i2sLayout)
			return
		}
	}
}
