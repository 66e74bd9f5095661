package events

import "fmt"

// Role is what a connection to the bus may do. Each credential is issued
// for one role (and, for a worker or an agent, one host or session); the
// server enforces the role's permissions.
type Role string

// Roles.
const (
	// RoleAdmin may do anything, including deleting the audit log.
	RoleAdmin Role = "admin"
	// RoleOrchestrator runs the control plane: it provisions the streams
	// and buckets, consumes the requests, publishes commands and events,
	// and serves the request/reply doors. It cannot delete, purge or
	// reconfigure the events stream.
	RoleOrchestrator Role = "orchestrator"
	// RoleWorker runs one host: it consumes its own commands, publishes
	// events in its host's subtree of the ingest stream, writes its host's
	// record, and serves its logs. It creates, changes and deletes no
	// stream, and cannot write the events stream.
	RoleWorker Role = "worker"
	// RoleService publishes requests, uses the request/reply doors and
	// reads the events stream (outcomes among them).
	RoleService Role = "service"
	// RoleAuditor reads the events stream, nothing else.
	RoleAuditor Role = "auditor"
	// RoleAgent is one session's agent: its session's subjects only.
	RoleAgent Role = "agent"
)

// Roles lists every role.
var Roles = []Role{RoleAdmin, RoleOrchestrator, RoleWorker, RoleService, RoleAuditor, RoleAgent}

// AgentsRoot is where sessions' agents talk to each other, one subtree per
// session.
const AgentsRoot = "openagent.agents"

// Permissions are the subjects a role may publish to and subscribe to;
// Deny overrides Allow.
type Permissions struct {
	PublishAllow, PublishDeny     []string
	SubscribeAllow, SubscribeDeny []string
}

// inboxes is every reply subject: those who answer publish to it.
const inboxes = "_INBOX.>"

// InboxPrefix is a credential's own inbox prefix: its replies, consumer
// deliveries and watches come back under it, and no other credential
// (admin aside) may subscribe there. user is the credential's public key;
// clients set it with nats.CustomInboxPrefix (creds.NATSOptions does).
func InboxPrefix(user string) string { return "_INBOX." + user }

// readStream is what reading a stream through consumers (ordered or
// durable, created by name) and direct gets takes.
func readStream(stream string) []string {
	return []string{
		"$JS.API.INFO",
		"$JS.API.STREAM.INFO." + stream,
		"$JS.API.CONSUMER.CREATE." + stream,
		"$JS.API.CONSUMER.CREATE." + stream + ".>",
		"$JS.API.CONSUMER.INFO." + stream + ".>",
		"$JS.API.CONSUMER.DELETE." + stream + ".>",
		"$JS.API.CONSUMER.MSG.NEXT." + stream + ".>",
		"$JS.API.DIRECT.GET." + stream,
		"$JS.API.DIRECT.GET." + stream + ".>",
		"$JS.API.STREAM.MSG.GET." + stream,
		"$JS.FC." + stream + ".>",
	}
}

// bucketStream is the stream that holds a key-value bucket.
func bucketStream(bucket string) string { return "KV_" + bucket }

// PermissionsFor returns a role's permissions; id is the host of a worker
// and the session of an agent, and must be a subject token; user is the
// credential's public key, whose inbox (InboxPrefix) it may subscribe to.
func PermissionsFor(role Role, id, user string) (Permissions, error) {
	if !ValidToken(user) {
		return Permissions{}, fmt.Errorf("events: a credential's inbox needs a user key usable in a subject, got %q", user)
	}
	inbox := InboxPrefix(user) + ".>"
	needsID := role == RoleWorker || role == RoleAgent
	if needsID && !ValidToken(id) {
		return Permissions{}, fmt.Errorf("events: a %s credential needs an id usable in a subject, got %q", role, id)
	}
	if !needsID && id != "" {
		return Permissions{}, fmt.Errorf("events: a %s credential is not for one host or session; got id %q", role, id)
	}
	switch role {
	case RoleAdmin:
		return Permissions{PublishAllow: []string{">"}, SubscribeAllow: []string{">"}}, nil
	case RoleOrchestrator:
		return Permissions{
			PublishAllow: []string{"openagent.>", "$JS.API.>", "$JS.ACK.>", "$JS.FC.>", "$KV.>", "$O.>", inboxes}, // it answers everyone
			// The audit log is the admin's to delete, purge or reconfigure.
			PublishDeny: []string{
				"$JS.API.STREAM.DELETE." + StreamEvents,
				"$JS.API.STREAM.PURGE." + StreamEvents,
				"$JS.API.STREAM.UPDATE." + StreamEvents,
				"$JS.API.STREAM.MSG.DELETE." + StreamEvents,
			},
			SubscribeAllow: []string{RPCRoot + ".>", SamplesRoot + ".>", inbox},
		}, nil
	case RoleWorker:
		durable := "worker-" + id
		pub := []string{
			// Its events go to its own subtree of the ingest stream; the
			// orchestrator checks that each is about this host and its
			// containers before the audit log holds it.
			IngestRoot + "." + id + ".>",
			SamplesSubject(id), // its containers' resource samples
			"$KV." + BucketHosts + "." + id,
			"$JS.API.STREAM.INFO." + bucketStream(BucketHosts),
			"$JS.API.DIRECT.GET." + bucketStream(BucketHosts) + ".$KV." + BucketHosts + "." + id,
			"$JS.API.STREAM.INFO." + StreamCommands,
			"$JS.API.CONSUMER.CREATE." + StreamCommands + "." + durable,
			"$JS.API.CONSUMER.CREATE." + StreamCommands + "." + durable + ".>",
			"$JS.API.CONSUMER.DURABLE.CREATE." + StreamCommands + "." + durable,
			"$JS.API.CONSUMER.INFO." + StreamCommands + "." + durable,
			"$JS.API.CONSUMER.MSG.NEXT." + StreamCommands + "." + durable,
			"$JS.ACK." + StreamCommands + "." + durable + ".>",
			inboxes, // answers to log requests, and exec output streamed to the asker
		}
		// Files cross in the files store: a host reads what goes into its
		// sandboxes and writes what comes out. Object names are random and
		// short-lived; the store's subjects cannot be split by host.
		files := "OBJ_" + BucketFiles
		pub = append(pub, "$O."+BucketFiles+".>", "$JS.API.STREAM.INFO."+files, "$JS.API.STREAM.MSG.GET."+files, "$JS.API.STREAM.PURGE."+files)
		return Permissions{
			PublishAllow:   append(append(pub, readStream(StreamEvents)...), readStream(files)...),
			SubscribeAllow: []string{LogsSubject(id), inbox},
		}, nil
	case RoleService:
		pub := []string{RequestsRoot + ".>", SubjectRequest, SubjectSessions, RPCRoot + ".containers.>", SubjectHosts}
		// What is asked of hosts (draining them) is the operator's.
		return Permissions{PublishAllow: append(pub, readStream(StreamEvents)...), PublishDeny: []string{RequestsRoot + ".host.>"},
			SubscribeAllow: []string{inbox}}, nil
	case RoleAuditor:
		return Permissions{PublishAllow: readStream(StreamEvents), SubscribeAllow: []string{inbox}}, nil
	case RoleAgent:
		own := AgentsRoot + "." + id + ".>"
		return Permissions{PublishAllow: []string{own}, SubscribeAllow: []string{own, inbox}}, nil
	}
	return Permissions{}, fmt.Errorf("events: unknown role %q: one of admin, orchestrator, worker, service, auditor, agent", role)
}
