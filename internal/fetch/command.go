package fetch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/carpfs/carpfs/internal/metalogger"
)

// Errors of Fence and Status, matched with errors.Is.
var (
	// ErrRefused: the metalogger holds a higher term, or the same term
	// for another holder. Fence returns its state with it.
	ErrRefused = errors.New("fence refused")
	// ErrNoCommand: the remote shell found no mfsmetalogger to run.
	ErrNoCommand = errors.New("mfsmetalogger not found on the host")
	// ErrBadAnswer: the command printed something other than one line
	// of a metalogger's JSON status.
	ErrBadAnswer = errors.New("not a metalogger status")
)

// maxOutput bounds what is kept of a command's stdout and of its stderr:
// a status is a few hundred bytes.
const maxOutput = 64 << 10

// Fence raises the metalogger's accepted term to term for holder (the
// name the new master will grant with) and returns its state after. A
// refusal returns the state the metalogger keeps and an error matching
// ErrRefused that says which term it holds.
func (c *Conn) Fence(ctx context.Context, term uint64, holder string) (metalogger.Status, error) {
	if term == 0 {
		return metalogger.Status{}, fmt.Errorf("fence metalogger %s: term 0: the lowest term is 1", c.h.Name)
	}
	args := []string{c.h.Command, "fence", "-d=" + c.h.DataPath, "--term=" + strconv.FormatUint(term, 10)}
	if holder != "" {
		args = append(args, "--holder="+holder)
	}
	what := fmt.Sprintf("fence metalogger %s with term %d for %q", c.h.Name, term, holder)
	st, code, stderr, err := c.runStatus(ctx, what, args)
	switch {
	case err != nil:
		return st, err
	case code == 0 && (st.Term != term || st.Holder != holder):
		return st, fmt.Errorf("%s: it says yes but holds term %d for %q: %w", what, st.Term, st.Holder, ErrBadAnswer)
	case code == 0:
		c.log.Info("fenced", "term", term, "holder", holder, "version", st.Version, "last_term", st.LastTerm, "running", st.Running)
		return st, nil
	case st.Term > term || st.Term == term && st.Holder != holder:
		return st, fmt.Errorf("%s: %w: it holds term %d for %q (%s)", what, ErrRefused, st.Term, st.Holder, stderr)
	}
	return st, fmt.Errorf("%s: exit status %d: %s", what, code, stderr)
}

// Status returns the metalogger's state. A daemon in trouble still
// answers; its state comes back with an error saying what the command
// reported.
func (c *Conn) Status(ctx context.Context) (metalogger.Status, error) {
	what := "status of metalogger " + c.h.Name
	st, code, stderr, err := c.runStatus(ctx, what, []string{c.h.Command, "status", "-d=" + c.h.DataPath})
	switch {
	case err != nil:
		return st, err
	case code != 0:
		return st, fmt.Errorf("%s: exit status %d: %s", what, code, stderr)
	}
	return st, nil
}

// runStatus runs args on the host and parses the status it prints. err
// is set when there is no status to read; otherwise code and stderr say
// how the command ended.
func (c *Conn) runStatus(ctx context.Context, what string, args []string) (st metalogger.Status, code int, stderr string, err error) {
	out, errOut, code, err := c.run(ctx, what, args)
	if err != nil {
		return st, code, "", err
	}
	stderr = oneLine(errOut)
	st, perr := parseStatus(out)
	switch {
	case perr == nil:
		return st, code, stderr, nil
	case code == 126 || code == 127:
		return st, code, stderr, fmt.Errorf("%s: %w: %s is missing or not executable (exit status %d: %s)", what, ErrNoCommand, args[0], code, stderr)
	case code != 0:
		return st, code, stderr, fmt.Errorf("%s: exit status %d: %s", what, code, stderr)
	}
	return st, code, stderr, fmt.Errorf("%s: %w", what, perr)
}

// run runs args, quoted for a POSIX shell, in a new session, bounded by
// ctx and the connection's timeout. It returns the command's exit status;
// err is set only when the command's end was not seen.
func (c *Conn) run(ctx context.Context, what string, args []string) (stdout, stderr []byte, code int, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	s, err := c.client.NewSession()
	if err != nil {
		return nil, nil, 0, fmt.Errorf("%s: SSH session: %w", what, err)
	}
	defer s.Close()
	var out, errOut capped
	s.Stdout, s.Stderr = &out, &errOut
	cmd := shellJoin(args)
	c.log.Debug("running", "cmd", cmd)
	done := make(chan error, 1)
	go func() { done <- s.Run(cmd) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		// The command may still finish on the host; nothing here waits
		// for it. Closing the session ends the wait for the answer.
		_ = s.Signal(ssh.SIGKILL)
		_ = s.Close()
		return nil, nil, 0, fmt.Errorf("%s: no answer (timeout %s): %w", what, c.timeout, context.Cause(ctx))
	}
	var ee *ssh.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitStatus()
	case err != nil:
		return nil, nil, 0, fmt.Errorf("%s: %w", what, err)
	}
	return out.b.Bytes(), errOut.b.Bytes(), code, nil
}

// parseStatus reads the one line of JSON the command prints.
func parseStatus(out []byte) (metalogger.Status, error) {
	line, ok := bytes.CutSuffix(out, []byte("\n"))
	var st metalogger.Status
	switch {
	case len(out) == 0:
		return st, fmt.Errorf("%w: it printed nothing", ErrBadAnswer)
	case !ok || bytes.IndexByte(line, '\n') >= 0:
		return st, fmt.Errorf("%w: want one line of JSON, got %q", ErrBadAnswer, clip(out))
	}
	if err := json.Unmarshal(line, &st); err != nil {
		return metalogger.Status{}, fmt.Errorf("%w: %v in %q", ErrBadAnswer, err, clip(line))
	}
	if st.ID == "" {
		return metalogger.Status{}, fmt.Errorf("%w: no metalogger id in %q", ErrBadAnswer, clip(line))
	}
	return st, nil
}

// shellJoin quotes every argument in single quotes, so the remote shell
// passes each one as is: nothing in a path or holder name is expanded.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// capped keeps the first maxOutput bytes written to it and drops the
// rest, so a runaway command cannot fill memory.
type capped struct{ b bytes.Buffer }

func (c *capped) Write(p []byte) (int, error) {
	if room := maxOutput - c.b.Len(); room > 0 {
		c.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// oneLine makes a command's stderr fit in an error message.
func oneLine(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if s == "" {
		return "no message"
	}
	return clip([]byte(s))
}

func clip(b []byte) string {
	const limit = 300
	if len(b) > limit {
		return string(b[:limit]) + "..."
	}
	return string(b)
}
