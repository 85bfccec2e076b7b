//go:build cgo

package gpu

import (
	"fmt"

	vk "github.com/goki/vulkan"
)

// Timer measures GPU time with timestamp queries. Mark records a timestamp in a sequence; after
// the sequence is submitted, Spans gives the time between each mark and the previous one.
type Timer struct {
	d      *Device
	pool   vk.QueryPool
	cap    uint32
	labels []string
}

// Span is the GPU time, in nanoseconds, between a mark and the one before it; Label is the later
// mark's label.
type Span struct {
	Label string
	NS    float64
}

// NewTimer creates a timer holding up to marks timestamps. It returns an error when the compute
// queue has no timestamp support (timestampValidBits = 0).
func (d *Device) NewTimer(marks int) (*Timer, error) {
	if d.info.TimestampValidBits == 0 {
		return nil, fmt.Errorf("device %s: the compute queue has no timestamp queries", d.info.Name)
	}
	if marks < 2 {
		return nil, fmt.Errorf("timer with %d marks: need at least 2", marks)
	}
	t := &Timer{d: d, cap: uint32(marks)}
	var pool vk.QueryPool
	if err := check(vk.CreateQueryPool(d.dev, &vk.QueryPoolCreateInfo{
		SType:      vk.StructureTypeQueryPoolCreateInfo,
		QueryType:  vk.QueryTypeTimestamp,
		QueryCount: t.cap,
	}, nil, &pool), "vkCreateQueryPool"); err != nil {
		return nil, err
	}
	t.pool = pool
	d.track(t, t.Release)
	return t, nil
}

// Mark records a timestamp taken when every command recorded before it has completed.
func (s *Sequence) Mark(t *Timer, label string) error {
	if s.recorded {
		return fmt.Errorf("mark %q: sequence already submitted", label)
	}
	if !s.timers[t] {
		vk.CmdResetQueryPool(s.cb, t.pool, 0, t.cap)
		t.labels = t.labels[:0]
		s.timers[t] = true
	}
	if uint32(len(t.labels)) >= t.cap {
		return fmt.Errorf("mark %q: timer holds %d marks", label, t.cap)
	}
	vk.CmdWriteTimestamp(s.cb, vk.PipelineStageBottomOfPipeBit, t.pool, uint32(len(t.labels)))
	t.labels = append(t.labels, label)
	return nil
}

// Spans returns, for marks 1..n-1, the nanoseconds since the previous mark, from the last
// submission of the sequence the marks were recorded in.
func (t *Timer) Spans() ([]Span, error) {
	n := uint32(len(t.labels))
	if n < 2 {
		return nil, fmt.Errorf("timer has %d marks; need 2", n)
	}
	ticks := make([]uint64, n)
	if err := check(vk.GetQueryPoolResults(t.d.dev, t.pool, 0, n, uint64(8*n), unsafePtr(ticks), 8,
		vk.QueryResultFlags(vk.QueryResult64Bit|vk.QueryResultWaitBit)), "vkGetQueryPoolResults"); err != nil {
		return nil, err
	}
	mask := ^uint64(0)
	if b := t.d.info.TimestampValidBits; b < 64 {
		mask = 1<<b - 1
	}
	spans := make([]Span, n-1)
	for i := uint32(1); i < n; i++ {
		dt := (ticks[i] - ticks[i-1]) & mask
		spans[i-1] = Span{Label: t.labels[i], NS: float64(dt) * float64(t.d.info.TimestampPeriod)}
	}
	return spans, nil
}

// Release destroys the query pool. Releasing twice is harmless.
func (t *Timer) Release() {
	if t.pool != nil && t.d.dev != nil {
		vk.DestroyQueryPool(t.d.dev, t.pool, nil)
		t.pool = nil
	}
	t.d.untrack(t)
}
