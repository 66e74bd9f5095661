// Package version is the version of the OpenAgent binaries and API, set at
// build time with -ldflags "-X .../internal/version.Version=...".
package version

// Version of this build.
var Version = "0.1.0"
