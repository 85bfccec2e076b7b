package runtime

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bitgpu/bitgpu/assets"
	"github.com/bitgpu/bitgpu/cpu"
	"github.com/bitgpu/bitgpu/cpuref"
)

// TestAsBatchDecoder: the fast CPU backend has a batched step that takes its NewSequence
// sequences (and gives each its own Decode's logits, bit for bit) but not another model load's
// backend nor a cpuref one; cpuref has none.
func TestAsBatchDecoder(t *testing.T) {
	m, err := assets.Open()
	require.NoError(t, err)
	defer m.Close()
	p, err := cpu.New(m, 32)
	require.NoError(t, err)
	defer p.Close()
	s, err := p.NewSequence()
	require.NoError(t, err)
	defer s.Close()
	other, err := cpu.New(m, 32)
	require.NoError(t, err)
	defer other.Close()
	ref, err := cpuref.New(m, 32)
	require.NoError(t, err)
	defer ref.Close()

	_, ok := AsBatchDecoder(ref)
	require.False(t, ok, "cpuref steps one sequence at a time")
	d, ok := AsBatchDecoder(s)
	require.True(t, ok)
	require.True(t, d.CanBatch(p) && d.CanBatch(s))
	require.False(t, d.CanBatch(other) || d.CanBatch(ref))
	_, err = d.DecodeBatch([]Backend{p, ref}, []int{1, 2})
	require.ErrorContains(t, err, "sequence 1 is a *cpuref.Backend, not the CPU backend's")

	_, err = p.Prefill([]int{1, 5, 9}, false)
	require.NoError(t, err)
	_, err = other.Prefill([]int{1, 5, 9}, false)
	require.NoError(t, err)
	rows, err := d.DecodeBatch([]Backend{s, p}, []int{7, 11})
	require.NoError(t, err)
	alone, err := other.Decode(11) // p's sequence, replayed on another load of the model
	require.NoError(t, err)
	require.Len(t, rows, 2)
	for i := range alone {
		require.Equal(t, math.Float32bits(alone[i]), math.Float32bits(rows[1][i]), "logit %d", i)
	}
	require.Equal(t, []int{1, 4}, []int{s.Pos(), p.Pos()})
}
