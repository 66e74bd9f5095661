// Package drivertest is the conformance suite every driver passes. A
// driver's tests call Run with a Harness that makes the driver and tells the
// suite how to express a Program (what a process does) as a command.
package drivertest

import (
	"fmt"
	"strings"
	"time"
)

// Program describes what a process does, so that the suite can ask every
// driver for the same behaviour.
type Program struct {
	Stdout     []string      // lines printed to stdout, in order, before anything else
	Stderr     []string      // then lines printed to stderr
	Cat        bool          // then copy stdin to stdout
	IgnoreTERM bool          // SIGTERM does nothing
	Sleep      time.Duration // then sleep this long
	Forever    bool          // then run until killed
	Later      []string      // lines printed to stdout after Sleep
	ExitCode   int           // then exit with this code
}

// ShellCommand expresses p as a POSIX sh command, for drivers whose
// containers have a shell.
func ShellCommand(p Program) []string {
	var b strings.Builder
	if p.IgnoreTERM {
		b.WriteString("trap '' TERM; ")
	}
	for _, l := range p.Stdout {
		fmt.Fprintf(&b, "echo %s; ", shellQuote(l))
	}
	for _, l := range p.Stderr {
		fmt.Fprintf(&b, "echo %s >&2; ", shellQuote(l))
	}
	if p.Cat {
		b.WriteString("cat; ")
	}
	if p.Sleep > 0 {
		fmt.Fprintf(&b, "sleep %.3f; ", p.Sleep.Seconds())
	}
	for _, l := range p.Later {
		fmt.Fprintf(&b, "echo %s; ", shellQuote(l))
	}
	if p.Forever {
		if p.IgnoreTERM {
			// A loop, so that the ignoring shell itself stays the waiter.
			b.WriteString("while :; do sleep 1; done; ")
		} else {
			b.WriteString("exec sleep 1000000; ")
		}
	}
	fmt.Fprintf(&b, "exit %d", p.ExitCode)
	return []string{"/bin/sh", "-c", b.String()}
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
