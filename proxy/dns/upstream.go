package dns

import (
	"context"
	"errors"
	"fmt"
	"strings"

	mdns "github.com/miekg/dns"
)

// forward sends q to each upstream in turn and returns the first usable
// answer. A truncated UDP answer is retried over TCP at the same upstream.
// SERVFAIL and REFUSED from one upstream move on to the next.
func (r *Resolver) forward(ctx context.Context, q *mdns.Msg) (*mdns.Msg, error) {
	var errs []error
	for _, up := range r.upstreams {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		resp, err := r.exchangeOne(ctx, q, up)
		if err != nil {
			errs = append(errs, fmt.Errorf("upstream %s: %w", up, err))
			continue
		}
		return resp, nil
	}
	return nil, errors.Join(errs...)
}

func (r *Resolver) exchangeOne(ctx context.Context, q *mdns.Msg, upstream string) (*mdns.Msg, error) {
	resp, err := r.try(ctx, q, upstream, "udp")
	if err == nil && resp.Truncated {
		resp, err = r.try(ctx, q, upstream, "tcp")
	}
	if err != nil {
		return nil, err
	}
	if resp.Rcode == mdns.RcodeServerFailure || resp.Rcode == mdns.RcodeRefused {
		return nil, fmt.Errorf("answered %s", mdns.RcodeToString[resp.Rcode])
	}
	return resp, nil
}

// try is one bounded exchange over one transport. The client library checks
// the answer's ID; try also checks it answers the question asked, so a stray
// or spoofed datagram is not taken as the answer.
func (r *Resolver) try(ctx context.Context, q *mdns.Msg, upstream, network string) (*mdns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	c := &mdns.Client{Net: network, Timeout: r.timeout, UDPSize: mdns.MaxMsgSize}
	resp, _, err := c.ExchangeContext(ctx, q, upstream)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", network, err)
	}
	if !resp.Response || len(resp.Question) != 1 || !sameQuestion(resp.Question[0], q.Question[0]) {
		return nil, fmt.Errorf("%s: answer does not match the question", network)
	}
	return resp, nil
}

func sameQuestion(a, b mdns.Question) bool {
	return a.Qtype == b.Qtype && a.Qclass == b.Qclass && strings.EqualFold(a.Name, b.Name)
}
