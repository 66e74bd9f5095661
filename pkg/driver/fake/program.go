package fake

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/openagent/orchestrator/pkg/driver"
)

// A program is what a fake process does. Commands of the form
//
//	fake [--stdout LINE]... [--stderr LINE]... [--cat] [--ignore-term]
//	     [--sleep DURATION] [--later LINE]... [--forever] [--exit CODE]
//	     [--use-cpu CORES] [--use-memory MB]
//
// are run step by step in that order; any other command runs until it is
// stopped, like a long-lived agent. --use-cpu and --use-memory are what
// Stats reports while the process runs (by default no cpu and 1 MiB).
type program struct {
	stdout, stderr, later []string
	cat, ignoreTerm       bool
	sleep                 time.Duration
	forever               bool
	exit                  int
	cpu                   float64 // cores
	memoryMB              int64
}

func parseProgram(cmd []string) (program, error) {
	if len(cmd) == 0 || cmd[0] != "fake" {
		return program{forever: true}, nil
	}
	var p program
	args := cmd[1:]
	need := func(i int) (string, error) {
		if i+1 >= len(args) {
			return "", fmt.Errorf("%s needs a value", args[i])
		}
		return args[i+1], nil
	}
	for i := 0; i < len(args); i++ {
		var v string
		var err error
		switch args[i] {
		case "--cat":
			p.cat = true
			continue
		case "--ignore-term":
			p.ignoreTerm = true
			continue
		case "--forever":
			p.forever = true
			continue
		case "--stdout", "--stderr", "--later", "--sleep", "--exit", "--use-cpu", "--use-memory":
			if v, err = need(i); err != nil {
				return p, err
			}
		default:
			return p, fmt.Errorf("unknown fake program argument %q", args[i])
		}
		switch args[i] {
		case "--stdout":
			p.stdout = append(p.stdout, v)
		case "--stderr":
			p.stderr = append(p.stderr, v)
		case "--later":
			p.later = append(p.later, v)
		case "--sleep":
			if p.sleep, err = time.ParseDuration(v); err != nil {
				return p, fmt.Errorf("--sleep: %w", err)
			}
		case "--exit":
			if p.exit, err = strconv.Atoi(v); err != nil {
				return p, fmt.Errorf("--exit: %w", err)
			}
		case "--use-cpu":
			if p.cpu, err = strconv.ParseFloat(v, 64); err != nil || p.cpu < 0 {
				return p, fmt.Errorf("--use-cpu: want cores, got %q", v)
			}
		case "--use-memory":
			if p.memoryMB, err = strconv.ParseInt(v, 10, 64); err != nil || p.memoryMB < 0 {
				return p, fmt.Errorf("--use-memory: want MB, got %q", v)
			}
		}
		i++
	}
	return p, nil
}

// Signals a fake process can receive.
type signal int

const (
	sigTerm signal = iota + 1
	sigKill
)

// Exit codes of a process ended by a signal, as a shell reports them.
const (
	exitTerm = 128 + 15
	exitKill = 128 + 9
)

// run plays the program, writing lines through emit, until it ends or a
// signal ends it; it returns the exit code.
func (p program) run(ctx context.Context, stdin io.Reader, sig <-chan signal, emit func(driver.Stream, string)) int {
	for _, l := range p.stdout {
		emit(driver.Stdout, l)
	}
	for _, l := range p.stderr {
		emit(driver.Stderr, l)
	}
	if p.cat && stdin != nil {
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			emit(driver.Stdout, sc.Text())
		}
	}
	// pause waits for d (forever when d < 0) or a signal that ends the
	// process; it reports the exit code when one did.
	pause := func(d time.Duration) (int, bool) {
		var timer <-chan time.Time
		if d >= 0 {
			t := time.NewTimer(d)
			defer t.Stop()
			timer = t.C
		}
		for {
			select {
			case <-timer:
				return 0, false
			case <-ctx.Done():
				return exitKill, true
			case s := <-sig:
				if s == sigKill {
					return exitKill, true
				}
				if !p.ignoreTerm {
					return exitTerm, true
				}
			}
		}
	}
	if p.sleep > 0 {
		if code, ended := pause(p.sleep); ended {
			return code
		}
	}
	for _, l := range p.later {
		emit(driver.Stdout, l)
	}
	if p.forever {
		code, _ := pause(-1)
		return code
	}
	return p.exit
}
