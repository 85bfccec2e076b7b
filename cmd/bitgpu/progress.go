package main

import (
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/bitgpu/bitgpu/model"
)

// progressOut is w when it is a terminal (an *os.File that isTerminal), where progress bars go,
// and nil otherwise: a pipe, file or buffer gets no bar.
func progressOut(w io.Writer) io.Writer {
	if f, ok := w.(*os.File); ok && isTerminal(f) {
		return f
	}
	return nil
}

// modelProgress returns a model.ProgressFunc that draws one progress bar per stage (bytes for
// "writing", tensors otherwise) on w when w is a terminal, and a function that completes the last
// bar; both are no-ops (the func nil) when w is not a terminal.
func modelProgress(w io.Writer) (model.ProgressFunc, func()) {
	out := progressOut(w)
	if out == nil {
		return nil, func() {}
	}
	var bar *progressbar.ProgressBar
	stage := ""
	finish := func() {
		if bar != nil {
			_ = bar.Finish()
			bar = nil
		}
	}
	return func(p model.Progress) {
		if bar == nil || p.Stage != stage {
			finish()
			stage = p.Stage
			opts := []progressbar.Option{progressbar.OptionSetWriter(out), progressbar.OptionSetDescription(p.Stage),
				progressbar.OptionClearOnFinish(), progressbar.OptionThrottle(100 * time.Millisecond),
				progressbar.OptionSetPredictTime(true), progressbar.OptionShowCount()}
			if p.Bytes {
				opts = append(opts, progressbar.OptionShowBytes(true))
			} else {
				opts = append(opts, progressbar.OptionSetItsString("tensors"))
			}
			bar = progressbar.NewOptions64(p.Total, opts...)
		}
		_ = bar.Set64(p.Done)
	}, finish
}
