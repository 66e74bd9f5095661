package policy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"

	"github.com/openagent/orchestrator/pkg/driver"
)

// Resolver looks host names up; *net.Resolver is one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// hostName is a DNS name: labels of letters, digits and '-', dot-separated.
var hostName = regexp.MustCompile(`^(?i)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?$`)

// ResolveEgress turns the host names among egress rules into the
// addresses they have now, one rule per address with the name kept in
// Host: drivers enforce addresses, and the sandbox finds the name in its
// /etc/hosts. Rules already given as addresses or prefixes are kept as
// they are. Names resolve to IPv4 addresses, what every driver's networks
// carry. An error names the rule.
func ResolveEgress(ctx context.Context, rules []driver.EgressRule, r Resolver) ([]driver.EgressRule, error) {
	if r == nil {
		r = net.DefaultResolver
	}
	var out []driver.EgressRule
	for i, rule := range rules {
		if _, err := rule.Prefix(); err == nil {
			out = append(out, rule)
			continue
		}
		name := strings.TrimSuffix(rule.To, ".")
		if len(name) > 253 || !hostName.MatchString(rule.To) {
			return nil, &driver.ConfigError{Field: fmt.Sprintf("egress[%d].to", i), Message: fmt.Sprintf("%q is not an address, a CIDR prefix or a host name", rule.To)}
		}
		addrs, err := r.LookupNetIP(ctx, "ip4", name)
		if err != nil || len(addrs) == 0 {
			return nil, &driver.ConfigError{Field: fmt.Sprintf("egress[%d].to", i), Message: fmt.Sprintf("host name %q resolves to no IPv4 address: %v", name, err)}
		}
		for _, a := range addrs {
			out = append(out, driver.EgressRule{To: a.Unmap().String(), Ports: rule.Ports, Host: name})
		}
	}
	return out, nil
}
