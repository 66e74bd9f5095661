package worker

import (
	"context"
	"errors"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/failsafe-go/failsafe-go/retrypolicy"

	"github.com/openagent/orchestrator/pkg/driver"
)

// Resilience configures what surrounds each driver's lifecycle
// operations, with the knobs of the original spec: a transient failure
// (the runtime unavailable, or timing out) is retried with a doubling
// backoff, and failures in a row open the driver's circuit breaker, which
// fails what comes next at once until ResetTimeout has passed and a trial
// operation succeeds. Other failures (a refused config, a missing image)
// are neither retried nor counted: the runtime answered.
type Resilience struct {
	MaxRetries          int           // retries of a transient failure; 3
	BaseDelay, MaxDelay time.Duration // the backoff: 1s, doubling up to 10s
	FailureThreshold    int           // transient failures in a row that open the breaker; 5
	ResetTimeout        time.Duration // how long it stays open before a trial; 60s
}

// WithDefaults fills in the knobs left zero with the defaults above.
func (r Resilience) WithDefaults() Resilience {
	if r.MaxRetries == 0 {
		r.MaxRetries = 3
	}
	if r.BaseDelay <= 0 {
		r.BaseDelay = time.Second
	}
	if r.MaxDelay < r.BaseDelay {
		r.MaxDelay = max(10*time.Second, r.BaseDelay)
	}
	if r.FailureThreshold <= 0 {
		r.FailureThreshold = 5
	}
	if r.ResetTimeout <= 0 {
		r.ResetTimeout = time.Minute
	}
	return r
}

// guard is one driver's retries and circuit breaker.
type guard struct {
	retry   retrypolicy.RetryPolicy[any]
	breaker circuitbreaker.CircuitBreaker[any]
	name    string
	r       Resilience
}

// transient reports whether a driver's failure may pass by itself.
func transient(err error) bool {
	return errors.Is(err, driver.ErrUnavailable) || errors.Is(err, driver.ErrTimeout)
}

func newGuard(name string, r Resilience) *guard {
	r = r.WithDefaults()
	g := &guard{name: name, r: r}
	g.breaker = circuitbreaker.NewBuilder[any]().
		HandleIf(func(_ any, err error) bool { return transient(err) }).
		WithFailureThreshold(uint(r.FailureThreshold)).
		WithDelay(r.ResetTimeout).
		Build()
	g.retry = retrypolicy.NewBuilder[any]().
		HandleIf(func(_ any, err error) bool { return transient(err) && !errors.Is(err, circuitbreaker.ErrOpen) }).
		WithMaxRetries(r.MaxRetries).
		WithBackoff(r.BaseDelay, r.MaxDelay).
		ReturnLastFailure().
		Build()
	return g
}

// do runs op under the retries and the breaker. An open breaker fails it
// at once, as the runtime unavailable, saying when to try again.
func (g *guard) do(ctx context.Context, op func() error) error {
	_, err := failsafe.With[any](g.retry, g.breaker).WithContext(ctx).Get(func() (any, error) { return nil, op() })
	if errors.Is(err, circuitbreaker.ErrOpen) {
		wait := g.breaker.RemainingDelay()
		return &breakerOpen{wait: wait, err: driver.Errorf("", "", driver.ErrUnavailable,
			"the %s driver's circuit breaker is open after %d failures in a row; it tries again in %v", g.name, g.r.FailureThreshold, wait.Round(time.Millisecond))}
	}
	return err
}

// breakerOpen is a command refused by an open breaker: delivered again
// once the breaker lets a trial through, not sooner, so that an outage
// does not use up its deliveries.
type breakerOpen struct {
	wait time.Duration
	err  error
}

func (b *breakerOpen) Error() string { return b.err.Error() }
func (b *breakerOpen) Unwrap() error { return b.err }

// state is the breaker's: closed, open or half-open.
func (g *guard) state() string { return g.breaker.State().String() }
