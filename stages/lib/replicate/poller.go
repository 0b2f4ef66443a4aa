package replicate

import "time"

// Poller yields polling intervals that start at Initial and grow by half each time up to Max
// (defaults 5s and 60s). Retry-After pauses are honoured by the Client itself, for every request.
type Poller struct {
	Initial, Max time.Duration
	cur          time.Duration
}

// Next returns the interval to wait before the next poll.
func (p *Poller) Next() time.Duration {
	initial, max := p.Initial, p.Max
	if initial <= 0 {
		initial = 5 * time.Second
	}
	if max <= 0 {
		max = 60 * time.Second
	}
	if max < initial {
		max = initial
	}
	if p.cur == 0 {
		p.cur = initial
	} else {
		p.cur += p.cur / 2
		if p.cur > max {
			p.cur = max
		}
	}
	return p.cur
}

// Reset starts again at Initial (e.g. after the training made progress).
func (p *Poller) Reset() { p.cur = 0 }
