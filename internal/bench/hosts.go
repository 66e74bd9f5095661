package bench

import "encoding/json"

func countHosts(b []byte) int {
	var hosts []struct {
		Live bool `json:"live"`
	}
	_ = json.Unmarshal(b, &hosts)
	n := 0
	for _, h := range hosts {
		if h.Live {
			n++
		}
	}
	return n
}
