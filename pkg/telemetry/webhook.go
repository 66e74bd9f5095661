package telemetry

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/failsafe-go/failsafe-go/retrypolicy"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/worker"
)

// Headers of a webhook delivery. The body is the alert's CloudEvent in
// structured mode (application/cloudevents+json).
const (
	HeaderDelivery  = "X-OpenAgent-Delivery"  // the delivery's id: the same on every attempt
	HeaderTimestamp = "X-OpenAgent-Timestamp" // Unix seconds of the attempt
	HeaderSignature = "X-OpenAgent-Signature" // "sha256=" + hex HMAC-SHA256(secret, timestamp + "." + body)
)

// Sign is the signature of a delivery's body at a timestamp: what a
// receiver computes with the webhook's secret and compares, in constant
// time, with the X-OpenAgent-Signature header. The timestamp is signed so
// that a captured delivery cannot be replayed later.
func Sign(secret string, timestamp int64, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(m, "%d.", timestamp)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// VerifyDelivery checks a delivery a receiver got: its signature, and
// that its timestamp is within maxAge of now.
func VerifyDelivery(secret string, h http.Header, body []byte, maxAge time.Duration, now time.Time) error {
	ts, err := strconv.ParseInt(h.Get(HeaderTimestamp), 10, 64)
	if err != nil {
		return fmt.Errorf("webhook: %s %q is not Unix seconds", HeaderTimestamp, h.Get(HeaderTimestamp))
	}
	if age := now.Sub(time.Unix(ts, 0)); age > maxAge || age < -maxAge {
		return fmt.Errorf("webhook: the delivery is %v old, more than %v: a replay?", age.Round(time.Second), maxAge)
	}
	if !hmac.Equal([]byte(h.Get(HeaderSignature)), []byte(Sign(secret, ts, body))) {
		return errors.New("webhook: the signature does not match the body and the secret")
	}
	return nil
}

// WebhookResilience is a webhook's retries and circuit breaker, with the
// knobs of the original spec (worker.Resilience's defaults: 3 retries
// from 1s doubling to 10s; 5 failures in a row open the breaker for 60s).
type WebhookResilience struct {
	MaxRetries       int      `json:"maxRetries,omitempty"`
	BaseDelay        Duration `json:"baseDelay,omitempty"`
	MaxDelay         Duration `json:"maxDelay,omitempty"`
	FailureThreshold int      `json:"failureThreshold,omitempty"`
	ResetTimeout     Duration `json:"resetTimeout,omitempty"`
}

func (r WebhookResilience) knobs() worker.Resilience {
	return worker.Resilience{MaxRetries: r.MaxRetries, BaseDelay: time.Duration(r.BaseDelay), MaxDelay: time.Duration(r.MaxDelay),
		FailureThreshold: r.FailureThreshold, ResetTimeout: time.Duration(r.ResetTimeout)}.WithDefaults()
}

// Attempt is one try of a delivery.
type Attempt = api.DeliveryAttempt

// ErrRefused is a delivery the receiver refused for good (a 4xx other
// than 408 and 429): trying again would not help.
var ErrRefused = errors.New("webhook: refused by the receiver")

// BreakerOpen is a delivery not tried because the webhook's circuit
// breaker is open; Wait is until its trial.
type BreakerOpen struct{ Wait time.Duration }

func (b *BreakerOpen) Error() string {
	return fmt.Sprintf("webhook: circuit breaker open after failures in a row; it tries again in %v", b.Wait.Round(time.Millisecond))
}

// Deliverer POSTs deliveries to webhooks, each under its retries and its
// circuit breaker. It is safe for concurrent use.
type Deliverer struct {
	client   *http.Client
	mu       sync.Mutex
	breakers map[string]circuitbreaker.CircuitBreaker[*http.Response]
}

// NewDeliverer returns a deliverer whose attempts time out after 10s.
func NewDeliverer() *Deliverer {
	return &Deliverer{client: &http.Client{Timeout: 10 * time.Second}, breakers: map[string]circuitbreaker.CircuitBreaker[*http.Response]{}}
}

func (d *Deliverer) breaker(w Webhook) circuitbreaker.CircuitBreaker[*http.Response] {
	d.mu.Lock()
	defer d.mu.Unlock()
	b, ok := d.breakers[w.Name]
	if !ok {
		k := w.Resilience.knobs()
		b = circuitbreaker.NewBuilder[*http.Response]().
			HandleIf(func(_ *http.Response, err error) bool { return err != nil && !errors.Is(err, ErrRefused) }).
			WithFailureThreshold(uint(k.FailureThreshold)).
			WithDelay(k.ResetTimeout).
			Build()
		d.breakers[w.Name] = b
	}
	return b
}

// BreakerState is a webhook's breaker: closed, open or half-open.
func (d *Deliverer) BreakerState(w Webhook) string { return d.breaker(w).State().String() }

// Deliver POSTs body to w, signed, retrying what may pass (no answer, a
// 5xx, 408, 429) with backoff; it returns every attempt made. The error
// is nil once the receiver answered 2xx; ErrRefused when it refused for
// good; a *BreakerOpen when nothing was tried.
func (d *Deliverer) Deliver(ctx context.Context, w Webhook, id string, body []byte) ([]Attempt, error) {
	k := w.Resilience.knobs()
	var mu sync.Mutex
	var attempts []Attempt
	retry := retrypolicy.NewBuilder[*http.Response]().
		HandleIf(func(_ *http.Response, err error) bool {
			return err != nil && !errors.Is(err, ErrRefused) && !errors.Is(err, circuitbreaker.ErrOpen)
		}).
		WithMaxRetries(k.MaxRetries).
		WithBackoff(k.BaseDelay, k.MaxDelay).
		ReturnLastFailure().
		Build()
	br := d.breaker(w)
	_, err := failsafe.With[*http.Response](retry, br).WithContext(ctx).Get(func() (*http.Response, error) {
		a, err := d.post(ctx, w, id, body)
		mu.Lock()
		attempts = append(attempts, a)
		mu.Unlock()
		return nil, err
	})
	if errors.Is(err, circuitbreaker.ErrOpen) {
		return attempts, &BreakerOpen{Wait: br.RemainingDelay()}
	}
	return attempts, err
}

// post is one attempt.
func (d *Deliverer) post(ctx context.Context, w Webhook, id string, body []byte) (Attempt, error) {
	begin := time.Now()
	a := Attempt{At: begin.UTC()}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		a.Error = err.Error()
		return a, fmt.Errorf("%w: %v", ErrRefused, err)
	}
	ts := begin.Unix()
	req.Header.Set("Content-Type", "application/cloudevents+json")
	req.Header.Set("User-Agent", "openagent-webhook")
	req.Header.Set(HeaderDelivery, id)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(HeaderSignature, Sign(w.Secret, ts, body))
	res, err := d.client.Do(req)
	if err != nil {
		a.Error = err.Error()
		a.DurationMs = time.Since(begin).Milliseconds()
		return a, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	res.Body.Close()
	a.Status, a.DurationMs = res.StatusCode, time.Since(begin).Milliseconds()
	switch {
	case res.StatusCode >= 200 && res.StatusCode < 300:
		return a, nil
	case res.StatusCode >= 500, res.StatusCode == http.StatusRequestTimeout, res.StatusCode == http.StatusTooManyRequests:
		a.Error = res.Status
		return a, fmt.Errorf("webhook %s: %s", w.Name, res.Status)
	}
	a.Error = res.Status
	return a, fmt.Errorf("%w: webhook %s answered %s", ErrRefused, w.Name, res.Status)
}
