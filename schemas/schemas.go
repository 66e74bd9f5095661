// Package schemas embeds the JSON Schemas (draft 2020-12) of every event's
// data. Each file is named after the event type without the io.openagent.
// prefix, and its $id is the URI that events carry as their dataschema.
// defs.json holds the definitions the others share.
package schemas

import "embed"

// FS holds every schema file of this directory.
//
//go:embed *.json
var FS embed.FS

// BaseURI prefixes every schema's $id: the dataschema of an event of type
// io.openagent.X is BaseURI + "X.json".
const BaseURI = "https://openagent.dev/schemas/v1/"
