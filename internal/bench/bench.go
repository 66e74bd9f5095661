// Package bench measures the system the way its users load it: latency of
// requests through the bus, with baselines of the bare bus taken in the
// same run on the same server, so that results read as ratios.
package bench

import (
	"math"
	"slices"
	"time"
)

// Percentiles summarises latencies in milliseconds.
type Percentiles struct {
	P50, P90, P99, Max float64
}

func percentiles(d []time.Duration) Percentiles {
	if len(d) == 0 {
		return Percentiles{}
	}
	s := slices.Clone(d)
	slices.Sort(s)
	at := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return ms(s[max(0, min(i, len(s)-1))])
	}
	return Percentiles{P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: ms(s[len(s)-1])}
}

func ms(d time.Duration) float64 { return math.Round(float64(d.Microseconds())) / 1000 }
