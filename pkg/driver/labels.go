package driver

// Runtime labels: the names of every label the system puts on the objects
// a driver makes, defined once. A runtime object says by them which
// container, command and session made it, so that a restarted worker, the
// reaper and an operator with the runtime's own tools can tell.
const (
	LabelContainerID = "io.openagent.container-id" // the container's id
	LabelCommandID   = "io.openagent.command-id"   // the create command that made it
	LabelSessionID   = "io.openagent.session-id"   // the session it belongs to
	LabelSession     = "io.openagent.session"      // set on a session's sandbox
	LabelPool        = "io.openagent.pool"         // a warm pool's profile, on its sandboxes
	LabelScope       = "io.openagent.driver-scope" // which of the drivers sharing a runtime made it
	LabelImage       = "io.openagent.image"        // on the sandbox images built here
	LabelName        = "io.openagent.name"         // the container's name, if it has one: docker ps --filter label=io.openagent.name=web
	LabelRestart     = "io.openagent.restart"      // its restart policy, carried out by the worker, not the runtime
)
