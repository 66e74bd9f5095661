package sessions

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/events"
)

// MaxFileBytes caps a file moved into or out of a session. Files cross in
// the files object store, in its chunks, never in events: memory stays
// bounded whatever the size.
const MaxFileBytes = 4 << 30

// fileTimeout bounds a file's crossing between the store and a sandbox.
const fileTimeout = events.MaxExecTimeout

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
func (s *Service) fileExec(ctx context.Context, sess *api.Session, script, rel string, x events.ExecRequestedData) (*api.ExecResult, error) {
	s.touch(sess.ID)
	x.ContainerID, x.Command, x.TimeoutMs = sess.ContainerID, []string{"sh", "-c", checkScript + script, "sh", rel}, fileTimeout.Milliseconds()
	res, _, err := s.exec(ctx, sess, x, nil)
	if err != nil {
		return nil, err
	}
	switch res.ExitCode {
	case 0:
		return res, nil
	case 3:
		return nil, &api.Error{Kind: api.KindPermission, Field: "path", Message: strings.TrimSpace(res.Stderr)}
	case 4:
		return nil, &api.Error{Kind: api.KindTooLarge, Field: "path", Message: fmt.Sprintf("%s is larger than the %d bytes a session gives at most", rel, s.maxFile)}
	case 5:
		return nil, &api.Error{Kind: api.KindNotFound, Field: "path", Message: fmt.Sprintf("no file %s in the workspace", rel)}
	}
	return nil, &api.Error{Kind: api.KindUnavailable, Message: fmt.Sprintf("%s: exit %d: %s", rel, res.ExitCode, strings.TrimSpace(res.Stderr))}
}

// transitName names a file's object in the store: unique, and telling
// whose it is.
func transitName(sessionID, dir string) string {
	return dir + "/" + sessionID + "/" + uuid.NewString()
}

// sha256Hex reads the store's digest ("SHA-256=" and base64url) as hex.
func sha256Hex(digest string) string {
	b, err := base64.URLEncoding.DecodeString(strings.TrimPrefix(digest, "SHA-256="))
	if err != nil {
		return ""
	}
	return hex.EncodeToString(b)
}

// firstField is the first word of what a command printed: sha256sum's hash.
func firstField(s string) string {
	if f := strings.Fields(s); len(f) > 0 {
		return f[0]
	}
	return ""
}

// WriteFileFrom puts what r holds at a path in a session's workspace. The
// contents go into the files store (which hashes them), the sandbox reads
// them from there and hashes what it wrote: both hashes must agree. The
// copy is an event with its path, size and hash.
func (s *Service) WriteFileFrom(ctx context.Context, id, p string, r io.Reader, who api.Principal) (*events.ObjectRef, error) {
	rel, err := workspacePath(p)
	if err != nil {
		return nil, err
	}
	sess, err := s.live(id, who)
	if err != nil {
		return nil, err
	}
	name := transitName(sess.ID, "in")
	info, err := s.files.Put(ctx, jetstream.ObjectMeta{Name: name}, io.LimitReader(r, s.maxFile+1))
	if err != nil {
		var ae *api.Error
		if errors.As(err, &ae) {
			return nil, ae
		}
		return nil, unavailable(fmt.Errorf("store the file: %w", err))
	}
	defer s.forget(name)
	if int64(info.Size) > s.maxFile {
		return nil, &api.Error{Kind: api.KindTooLarge, Field: "body", Message: fmt.Sprintf("the file is larger than the %d bytes a session takes at most", s.maxFile)}
	}
	sum := sha256Hex(info.Digest)
	res, err := s.fileExec(ctx, sess, `mkdir -p -- "$(dirname -- "$p")" && cat > "$p" && sha256sum -- "$p"`, rel, events.ExecRequestedData{StdinObject: name})
	if err != nil {
		return nil, err
	}
	if got := firstField(res.Stdout); got != sum {
		return nil, &api.Error{Kind: api.KindUnavailable, Field: "body", Message: fmt.Sprintf("%s was written with SHA-256 %s, not the %s sent", rel, got, sum)}
	}
	ref := &events.ObjectRef{Name: rel, Size: info.Size, SHA256: sum}
	s.recordCopy(ctx, sess, ref, "in", who)
	return ref, nil
}

// ReadFile gets the file at a path in a session's workspace: the sandbox
// hashes it and writes it into the files store, which hashes what it got;
// both hashes must agree before anything is handed out. The returned
// reader streams the file (checked by the store once more) and must be
// closed, which lets go of its object.
func (s *Service) ReadFile(ctx context.Context, id, p string, who api.Principal) (*events.ObjectRef, io.ReadCloser, error) {
	rel, err := workspacePath(p)
	if err != nil {
		return nil, nil, err
	}
	sess, err := s.live(id, who)
	if err != nil {
		return nil, nil, err
	}
	name := transitName(sess.ID, "out")
	res, err := s.fileExec(ctx, sess, fmt.Sprintf(`[ -f "$p" ] || exit 5; [ "$(wc -c < "$p")" -le %d ] || exit 4; sha256sum -- "$p" >&2; exec cat -- "$p"`, s.maxFile),
		rel, events.ExecRequestedData{StdoutObject: name})
	if err != nil {
		s.forget(name)
		return nil, nil, err
	}
	stored := res.StdoutObject
	if stored == nil || stored.SHA256 != firstField(res.Stderr) {
		s.forget(name)
		return nil, nil, &api.Error{Kind: api.KindUnavailable, Field: "path", Message: fmt.Sprintf("%s changed, or was damaged, on its way out: hashed %s inside, %v stored", rel, firstField(res.Stderr), stored)}
	}
	obj, err := s.files.Get(ctx, name)
	if err != nil {
		s.forget(name)
		return nil, nil, unavailable(err)
	}
	ref := &events.ObjectRef{Name: rel, Size: stored.Size, SHA256: stored.SHA256}
	s.recordCopy(ctx, sess, ref, "out", who)
	return ref, &transit{ReadCloser: obj, done: func() { s.forget(name) }}, nil
}

// transit is a file on its way out; closing it lets go of its object.
type transit struct {
	io.ReadCloser
	done func()
}

func (t *transit) Close() error {
	err := t.ReadCloser.Close()
	t.done()
	return err
}

// MaxFile is the most a file copied into or out of a session may hold.
func (s *Service) MaxFile() int64 { return s.maxFile }

// forget deletes a transfer's object; one left behind expires anyway.
func (s *Service) forget(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.files.Delete(ctx, name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		s.log.Warn("sessions: delete a file in transit", "object", name, "err", err)
	}
}

// recordCopy puts a file's crossing on record.
func (s *Service) recordCopy(ctx context.Context, sess *api.Session, file *events.ObjectRef, direction string, who api.Principal) {
	data := events.FileCopiedData{SessionRef: ref(sess), Path: file.Name, Direction: direction, Size: file.Size, SHA256: file.SHA256, By: who.Name}
	if _, err := s.event(ctx, events.SessionFileCopied, uuid.NewString(), data, sess); err != nil {
		s.log.Warn("sessions: record a file's copy", "session_id", sess.ID, "err", err)
	}
}
