package sessions

import (
	"context"
	"encoding/base64"
	"fmt"
	"path"
	"strings"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/events"
)

// MaxFileBytes caps a file moved into or out of a session: files travel
// base64-encoded inside events, whose output is capped at 256 KiB.
const MaxFileBytes = 190 << 10

// The largest file's base64, without line breaks, fits the output cap
// (this fails to compile when it does not).
const _ = uint(events.MaxExecOutput - (MaxFileBytes+2)/3*4)

// checkScript refuses a path any existing component of which is a
// symbolic link, so that nothing reaches out of the workspace through one;
// "..", absolute paths and empty ones are refused before.
const checkScript = `p="$1"; cur=.; IFS=/; for c in $p; do cur="$cur/$c"; if [ -L "$cur" ]; then echo "path $p: $cur is a symbolic link" >&2; exit 3; fi; done; unset IFS; `

// workspacePath checks a path relative to the session's workspace.
func workspacePath(p string) (string, error) {
	bad := func(why string) (string, error) {
		return "", &api.Error{Kind: api.KindInvalid, Field: "path", Message: fmt.Sprintf("path %q %s", p, why)}
	}
	switch {
	case p == "":
		return bad("is empty")
	case strings.HasPrefix(p, "/"):
		return bad("is absolute; give a path inside the session's workspace")
	case strings.ContainsRune(p, 0):
		return bad("holds a NUL byte")
	}
	clean := path.Clean(p)
	if clean == "." || clean == ".." || strings.HasPrefix(clean, "../") {
		return bad("leaves the workspace")
	}
	for _, c := range strings.Split(p, "/") {
		if c == ".." {
			return bad("leaves the workspace")
		}
	}
	return clean, nil
}

// fileExec runs a shell script in a session's sandbox, with the path as
// its first argument.
func (s *Service) fileExec(ctx context.Context, sess *api.Session, script, rel, stdin string) (*api.ExecResult, error) {
	s.touch(sess.ID)
	res, _, err := s.exec(ctx, sess, events.ExecRequestedData{ContainerID: sess.ContainerID,
		Command: []string{"sh", "-c", checkScript + script, "sh", rel}, TimeoutMs: 30000, Stdin: stdin}, nil)
	if err != nil {
		return nil, err
	}
	switch res.ExitCode {
	case 0:
		return res, nil
	case 3:
		return nil, &api.Error{Kind: api.KindPermission, Field: "path", Message: strings.TrimSpace(res.Stderr)}
	case 4:
		return nil, &api.Error{Kind: api.KindTooLarge, Field: "path", Message: fmt.Sprintf("%s is larger than %d bytes", rel, MaxFileBytes)}
	case 5:
		return nil, &api.Error{Kind: api.KindNotFound, Field: "path", Message: fmt.Sprintf("no file %s in the workspace", rel)}
	}
	return nil, &api.Error{Kind: api.KindUnavailable, Message: fmt.Sprintf("%s: exit %d: %s", rel, res.ExitCode, strings.TrimSpace(res.Stderr))}
}

// WriteFile puts data at a path in a session's workspace.
func (s *Service) WriteFile(ctx context.Context, id, p string, data []byte, who api.Principal) error {
	if len(data) > MaxFileBytes {
		return &api.Error{Kind: api.KindTooLarge, Field: "body", Message: fmt.Sprintf("file is %d bytes; at most %d", len(data), MaxFileBytes)}
	}
	rel, err := workspacePath(p)
	if err != nil {
		return err
	}
	sess, err := s.live(id, who)
	if err != nil {
		return err
	}
	_, err = s.fileExec(ctx, sess, `mkdir -p -- "$(dirname -- "$p")" && base64 -d > "$p"`, rel, base64.StdEncoding.EncodeToString(data))
	return err
}

// ReadFile gets the file at a path in a session's workspace.
func (s *Service) ReadFile(ctx context.Context, id, p string, who api.Principal) ([]byte, error) {
	rel, err := workspacePath(p)
	if err != nil {
		return nil, err
	}
	sess, err := s.live(id, who)
	if err != nil {
		return nil, err
	}
	// Without line breaks, the largest file's base64 fits the exec's
	// output cap; and output that was cut anyway is an error, never a
	// shorter file.
	res, err := s.fileExec(ctx, sess, fmt.Sprintf(`[ -f "$p" ] || exit 5; [ "$(wc -c < "$p")" -le %d ] || exit 4; base64 < "$p" | tr -d '\n'`, MaxFileBytes), rel, "")
	if err != nil {
		return nil, err
	}
	if res.Truncated {
		return nil, &api.Error{Kind: api.KindTooLarge, Field: "path", Message: fmt.Sprintf("%s did not fit the exec output's cap on its way out; nothing was returned", rel)}
	}
	b, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(res.Stdout), ""))
	if err != nil {
		return nil, &api.Error{Kind: api.KindUnavailable, Message: "file came back garbled: " + err.Error()}
	}
	return b, nil
}
