package model_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/model"
)

// progressLog records the reports of an operation and checks the ProgressFunc contract as they
// come: within a stage Done never decreases and never exceeds Total.
type progressLog struct {
	t       *testing.T
	reports []model.Progress
	stages  []string // in order of first report
}

func (l *progressLog) fn(p model.Progress) {
	if n := len(l.reports); n == 0 || l.reports[n-1].Stage != p.Stage {
		l.stages = append(l.stages, p.Stage)
	} else {
		require.GreaterOrEqual(l.t, p.Done, l.reports[n-1].Done, "%s: Done went back", p.Stage)
	}
	require.LessOrEqual(l.t, p.Done, p.Total, p.Stage)
	l.reports = append(l.reports, p)
}

// last is the last report of stage.
func (l *progressLog) last(stage string) model.Progress {
	for i := len(l.reports) - 1; i >= 0; i-- {
		if l.reports[i].Stage == stage {
			return l.reports[i]
		}
	}
	l.t.Fatalf("no %q report in %v", stage, l.stages)
	return model.Progress{}
}

// TestWriteSyntheticProgress: with a Progress function WriteSynthetic reports the bytes written,
// ending at the file's size, in more than one step, and writes the same bytes as without one.
func TestWriteSyntheticProgress(t *testing.T) {
	dir := t.TempDir()
	opt := model.SynthOptions{Seed: 3, Vocab: 4096} // a 2 MiB embedding: more than one 1 MiB buffer
	plain := filepath.Join(dir, "plain.gguf")
	require.NoError(t, model.WriteSynthetic(plain, opt))
	log := &progressLog{t: t}
	opt.Progress = log.fn
	withBar := filepath.Join(dir, "progress.gguf")
	require.NoError(t, model.WriteSynthetic(withBar, opt))

	a, err := os.ReadFile(plain)
	require.NoError(t, err)
	b, err := os.ReadFile(withBar)
	require.NoError(t, err)
	require.Equal(t, a, b, "a progress function must not change the file")
	require.Equal(t, []string{"writing"}, log.stages)
	last := log.last("writing")
	require.Equal(t, model.Progress{Stage: "writing", Done: int64(len(a)), Total: int64(len(a)), Bytes: true}, last)
	require.Greater(t, len(log.reports), 1)
	require.Less(t, log.reports[0].Done, last.Total)
}

// TestConvertHFProgress: ConvertHFProgress reports every tensor converted, for TQ types every
// projection re-encoded, then the bytes written up to the file's size, and writes the file
// ConvertHF writes.
func TestConvertHFProgress(t *testing.T) {
	dir := writeConvertTestDir(t)
	tmp := t.TempDir()
	cfg, err := convertTestOptions.Config()
	require.NoError(t, err)
	tensors, weights := int64(len(cfg.TensorSpecs())), int64(0)
	for _, s := range cfg.TensorSpecs() {
		if s.Kind == model.KindWeight {
			weights++
		}
	}
	for _, typ := range []model.TensorType{model.TypeI2_S, model.TypeTQ2_0} {
		t.Run(typ.String(), func(t *testing.T) {
			plain := filepath.Join(tmp, typ.String()+"-plain.gguf")
			require.NoError(t, model.ConvertHF(dir, plain, typ))
			log := &progressLog{t: t}
			out := filepath.Join(tmp, typ.String()+".gguf")
			require.NoError(t, model.ConvertHFProgress(dir, out, typ, log.fn))
			a, err := os.ReadFile(plain)
			require.NoError(t, err)
			b, err := os.ReadFile(out)
			require.NoError(t, err)
			require.Equal(t, a, b)

			want := []string{"converting", "writing"}
			if typ != model.TypeI2_S {
				want = []string{"converting", "encoding", "writing"}
				require.Equal(t, model.Progress{Stage: "encoding", Done: weights, Total: weights}, log.last("encoding"))
			}
			require.Equal(t, want, log.stages)
			require.Equal(t, model.Progress{Stage: "converting", Done: tensors, Total: tensors}, log.last("converting"))
			require.Equal(t, model.Progress{Stage: "writing", Done: int64(len(b)), Total: int64(len(b)), Bytes: true}, log.last("writing"))
		})
	}
}
