// Package events is the event contract of OpenAgent: CloudEvents 1.0 on NATS
// JetStream.
//
// It owns the catalog of event types and their JSON Schemas (validated on
// publish and on receipt), the NATS binding (binary content mode out, binary
// or structured in), the provisioning of every stream and KV bucket the system
// uses, a publisher that makes retries safe (the event id is the Nats-Msg-Id)
// and a consumer loop whose handler's error class decides how a message is
// acknowledged.
//
// Subjects are hierarchical so that consumers filter cheaply:
//
//	openagent.requests.<type>                    requests from services
//	openagent.commands.<host>.<type>             commands for one host (work queue)
//	openagent.events.<entity>.<id>.<type>        state events: the audit log
//
// where <type> is the event type without its "io.openagent." prefix.
package events
